"""Pushing training outputs to the Hub in the background, without disturbing (or ever breaking) training.

The pushes run on huggingface_hub's own background executor (`huggingface_hub.HfApi.run_as_future`: one worker
thread per client, jobs run one after the other in submission order). What this module adds on top:

* a snapshot copy of the folder(s) on the caller's thread, so that training can keep writing while a push runs,
  and a pushed checkpoint is exactly the one saved at that step (model files and ``last-checkpoint/`` agree, and
  resuming from it reproduces the run);
* coalescing: a submission still waiting behind a running push is cancelled when a newer one arrives, so at most
  one push waits and only the newest state is pushed;
* retries: a failed snapshot is kept and retried by `BackgroundPusher.wait` unless something newer was submitted;
* a bounded wait for the final push, whose result (commit URL, or the error) is returned / kept.

Because the executor runs one job at a time and a running upload cannot be interrupted, a push that outlives
``push_timeout`` is *reported* as timed out but keeps running, and later pushes wait for it: commits always land in
the order they were submitted, so an older state can never overwrite a newer one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from .push import HUB_STRATEGIES, collect_upload_files, plan_hub_push, push_folder_to_hub
from .redaction import redact

__all__ = ["BackgroundPusher", "PushResult"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PushResult:
    """Outcome of one background push."""

    ok: bool
    commit_message: str
    commit_url: str | None = None
    error: str | None = None
    submission: int = 0
    duration_s: float = 0.0


@dataclasses.dataclass(eq=False)
class _Snapshot:
    submission: int
    root: Path
    model_dir: Path
    commit_message: str
    checkpoint_dir: Path | None = None
    checkpoint_path_in_repo: str = "last-checkpoint"
    future: Future[PushResult] | None = None
    started_at: float | None = None  # monotonic time its push started on the executor
    timed_out: bool = False  # reported as timed out by `wait`; still running
    result: PushResult | None = None  # set when its (latest) push finished


class BackgroundPusher:
    """Push training outputs to the Hub in the background, without disturbing training.

    `submit` copies the shareable files of a folder (and an optional checkpoint folder) to a staging directory --
    the only work done on the caller's thread -- and queues a push of the copy on the `huggingface_hub.HfApi`'s
    background executor. Pushes run one at a time, in submission order; a newer submission cancels one still
    waiting. A failed push (HTTP error, connection error) is logged, never raised; the next submission pushes the
    newer state, and `wait` retries the last one if it failed. The caller's folders are never modified.

    Example (in a training loop)::

        pusher = BackgroundPusher("me/dsnet-cityscapes", strategy="checkpoint")
        ...
        pusher.on_save(output_dir, checkpoint_dir=ckpt_dir, step=step)  # returns at once
        ...
        pusher.on_train_end(output_dir)
        url = pusher.wait()
        pusher.close()

    Args:
        repo_id: Target repo (created if missing).
        token: Hub token (default: huggingface_hub's resolution). Never logged.
        private: Visibility if the repo has to be created.
        revision: Branch to push to (created if missing).
        strategy: ``hub_strategy`` for `on_save` / `on_train_end` (see `plan_hub_push`).
        endpoint: Hub URL.
        card_kwargs: Keyword arguments for `render_model_card`.
        push_timeout: Seconds after its start at which `wait` stops waiting for a push and reports it as timed out.
            An upload in flight cannot be interrupted: it keeps running, and later pushes start after it (so that
            commits land in order). ``None``: no limit.
        staging_dir: Parent directory of the snapshots (default: a temporary directory).
        push_kwargs: Extra keyword arguments for `push_folder_to_hub`.
    """

    def __init__(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool = False,
        revision: str | None = None,
        strategy: str = "every_save",
        endpoint: str | None = None,
        card_kwargs: Mapping[str, Any] | None = None,
        push_timeout: float | None = 900.0,
        staging_dir: str | os.PathLike[str] | None = None,
        push_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if strategy not in HUB_STRATEGIES:
            raise ValueError(f"Unknown hub strategy {strategy!r}; expected one of {HUB_STRATEGIES}")
        self.repo_id = repo_id
        self.strategy = strategy
        self.push_timeout = push_timeout
        self._token = token
        # One client per pusher: its executor is the queue of this pusher's pushes (and only of these).
        self._api = HfApi(endpoint=endpoint, token=token, library_name="msaf_hf")
        self._push_kwargs: dict[str, Any] = dict(
            private=private,
            revision=revision,
            card_kwargs=dict(card_kwargs or {}),
            **dict(push_kwargs or {}),
        )
        self._owns_staging = staging_dir is None
        self._staging = Path(staging_dir) if staging_dir else Path(tempfile.mkdtemp(prefix="msaf-hub-staging-"))
        self._staging.mkdir(parents=True, exist_ok=True)
        self._cond = threading.Condition()
        self._queued: _Snapshot | None = None  # submitted, waiting behind the running push
        self._running: _Snapshot | None = None
        self._failed: _Snapshot | None = None  # last push failed and nothing newer was submitted: kept for a retry
        self._latest: _Snapshot | None = None  # the newest snapshot handed to the executor
        self._counter = 0
        self._closed = False
        self.results: list[PushResult] = []

    # -- public API ---------------------------------------------------------------------------------
    @property
    def last_result(self) -> PushResult | None:
        """The most recent finished push, if any."""
        with self._cond:
            return self.results[-1] if self.results else None

    @property
    def running_submission(self) -> int | None:
        """Submission number of the push in progress, if any."""
        with self._cond:
            return self._running.submission if self._running is not None else None

    @property
    def busy(self) -> bool:
        """Whether a push is running or waiting."""
        with self._cond:
            return self._queued is not None or self._running is not None

    def submit(
        self,
        folder: str | os.PathLike[str],
        commit_message: str = "Training in progress",
        *,
        checkpoint_folder: str | os.PathLike[str] | None = None,
        checkpoint_path_in_repo: str = "last-checkpoint",
    ) -> int | None:
        """Snapshot ``folder`` (and ``checkpoint_folder``) and queue a push; returns at once.

        Returns the submission number, or None if the snapshot could not be taken or the pusher
        is closed (the reason is logged; nothing is raised).
        """
        with self._cond:
            if self._closed:
                logger.warning("BackgroundPusher is closed; ignoring push of %s", folder)
                return None
            self._counter += 1
            number = self._counter
        try:
            snap = self._snapshot(number, Path(folder), commit_message, checkpoint_folder, checkpoint_path_in_repo)
        except Exception as exc:  # never break the training loop
            logger.error("Could not snapshot %s for the Hub push: %s", folder, self._clean(exc))
            return None
        with self._cond:
            if self._closed:
                self._discard(snap)
                return None
            if self._queued is not None and self._queued.future is not None and self._queued.future.cancel():
                logger.info(
                    "Hub push #%d (%s) superseded by #%d before it started",
                    self._queued.submission,
                    self._queued.commit_message,
                    number,
                )
                self._discard(self._queued)
            if self._failed is not None:
                self._discard(self._failed)  # the newer snapshot is pushed instead
                self._failed = None
            self._enqueue(snap)
        return number

    def on_save(
        self,
        model_dir: str | os.PathLike[str],
        checkpoint_dir: str | os.PathLike[str] | None = None,
        *,
        step: int | None = None,
    ) -> int | None:
        """Apply the strategy to a save: ``model_dir`` holds the model files just saved (it may be
        the checkpoint folder itself), ``checkpoint_dir`` the full checkpoint."""
        plan = plan_hub_push(self.strategy, "save", checkpoint_dir=checkpoint_dir, step=step)
        if not plan.push:
            return None
        return self.submit(
            model_dir,
            plan.commit_message,
            checkpoint_folder=plan.checkpoint_folder,
            checkpoint_path_in_repo=plan.checkpoint_path_in_repo or "last-checkpoint",
        )

    def on_train_end(self, model_dir: str | os.PathLike[str], commit_message: str = "End of training") -> int | None:
        """Queue the final push (all strategies)."""
        plan = plan_hub_push(self.strategy, "end")
        return self.submit(model_dir, commit_message or plan.commit_message)

    def wait(self, timeout: float | None = None, *, retry_failed: bool = True) -> str | None:
        """Wait for the queued/running pushes; return the commit URL of the final push.

        If the last push failed and nothing newer was submitted, it is retried once (when ``retry_failed``).
        Returns None if the final push failed (its error is in `last_result`), if a push ran past
        ``push_timeout`` (it is recorded as timed out and keeps running), or if ``timeout`` expired (logged).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        retried = False
        with self._cond:
            while True:
                snap = self._latest
                if snap is None:
                    return None
                while snap.result is None and self._latest is snap:
                    overdue = self._overdue_push()
                    if overdue is not None:
                        return self._report_timeout(overdue)
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        logger.warning("Timed out waiting for the Hub push to finish")
                        return None
                    self._cond.wait(self._next_wakeup(remaining))
                if self._latest is not snap:  # a newer submission arrived meanwhile: wait for that one
                    continue
                result = snap.result
                if not result.ok and retry_failed and not retried and self._failed is snap and not self._closed:
                    logger.info("Retrying failed Hub push #%d", snap.submission)
                    self._failed = None
                    snap.result = None
                    retried = True
                    self._enqueue(snap)
                    continue
                break
        if result.ok:
            logger.info("Final Hub push: %s", result.commit_url)
            return result.commit_url
        logger.warning("Final Hub push failed: %s", result.error)
        return None

    def close(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop accepting submissions; optionally `wait` for the queue; remove the staging data.

        A push that is still running cannot be stopped: it finishes in the background and removes its own
        snapshot (and the staging directory, if this pusher created it) when done.
        """
        if wait:
            self.wait(timeout)
        with self._cond:
            self._closed = True
            if self._queued is not None and self._queued.future is not None and self._queued.future.cancel():
                self._discard(self._queued)
                if self._latest is self._queued:
                    self._latest = self._running  # what `wait` may still wait for
                self._queued = None
            if self._failed is not None:
                self._discard(self._failed)
                self._failed = None
            in_flight = self._running is not None or self._queued is not None
            self._cond.notify_all()
        if self._owns_staging and not in_flight:
            shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> BackgroundPusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals (the caller holds self._cond unless said otherwise) -------------------------------------
    def _clean(self, exc: BaseException | str) -> str:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        return redact(text, self._token)

    def _enqueue(self, snap: _Snapshot) -> None:
        self._queued = self._latest = snap
        snap.started_at = None
        snap.timed_out = False
        snap.future = self._api.run_as_future(self._push, snap)
        self._cond.notify_all()

    def _overdue_push(self) -> _Snapshot | None:
        """The running push, if it has run past ``push_timeout``."""
        running = self._running
        if running is None or self.push_timeout is None or running.started_at is None:
            return None
        return running if time.monotonic() - running.started_at >= self.push_timeout else None

    def _next_wakeup(self, remaining: float | None) -> float | None:
        """How long `wait` may sleep: until the deadline, or until the running push becomes overdue."""
        running = self._running
        if running is None or self.push_timeout is None or running.started_at is None:
            return remaining
        until_overdue = max(0.0, running.started_at + self.push_timeout - time.monotonic())
        return until_overdue if remaining is None else min(remaining, until_overdue)

    def _report_timeout(self, snap: _Snapshot) -> None:
        """Record (once) that a running push outlived ``push_timeout``; `wait` then gives up on it."""
        if not snap.timed_out:
            snap.timed_out = True
            elapsed = time.monotonic() - (snap.started_at or time.monotonic())
            self.results.append(
                PushResult(
                    False,
                    snap.commit_message,
                    None,
                    f"timed out after {self.push_timeout:.0f}s (the upload continues in the background; "
                    "later pushes start after it)",
                    snap.submission,
                    elapsed,
                )
            )
        logger.warning(
            "Hub push #%d (%s) still running after %.0fs; not waiting for it any longer",
            snap.submission,
            snap.commit_message,
            self.push_timeout,
        )
        return None

    def _snapshot(
        self,
        number: int,
        folder: Path,
        commit_message: str,
        checkpoint_folder: str | os.PathLike[str] | None,
        checkpoint_path_in_repo: str,
    ) -> _Snapshot:
        # Runs on the caller's thread, without the lock: only this call touches the new root.
        root = self._staging / f"push-{number:05d}"
        model_dir = root / "model"
        model_dir.mkdir(parents=True)
        try:
            write_card = self._push_kwargs.get("write_card", True)
            extra = self._push_kwargs.get("allow_patterns") or ()
            names = collect_upload_files(folder, allow_patterns=extra, include_readme=not write_card)
            if not any(n.endswith(".safetensors") for n in names):
                logger.warning("No *.safetensors weights in %s", folder)
            for name in names:
                shutil.copy2(folder / name, model_dir / name)
            ckpt_copy = None
            if checkpoint_folder is not None:
                ckpt_copy = root / "checkpoint"
                shutil.copytree(checkpoint_folder, ckpt_copy)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return _Snapshot(number, root, model_dir, commit_message, ckpt_copy, checkpoint_path_in_repo)

    @staticmethod
    def _discard(snap: _Snapshot) -> None:
        shutil.rmtree(snap.root, ignore_errors=True)

    def _push(self, snap: _Snapshot) -> PushResult:
        """One push, on the HfApi executor's thread (without the lock). Never raises."""
        with self._cond:
            if self._queued is snap:
                self._queued = None
            self._running = snap
            snap.started_at = time.monotonic()
            self._cond.notify_all()
        start = snap.started_at
        try:
            info = push_folder_to_hub(
                snap.model_dir,
                self.repo_id,
                token=self._token,
                commit_message=snap.commit_message,
                checkpoint_folder=snap.checkpoint_dir,
                checkpoint_path_in_repo=snap.checkpoint_path_in_repo,
                api=self._api,
                **self._push_kwargs,
            )
            url = info.pr_url or info.commit_url
            result = PushResult(True, snap.commit_message, str(url), None, snap.submission, time.monotonic() - start)
        except BaseException as exc:  # noqa: BLE001 - reported as a failed push
            error = self._clean(exc)
            result = PushResult(False, snap.commit_message, None, error, snap.submission, time.monotonic() - start)
        if result.ok:
            logger.info("Hub push #%d done: %s", snap.submission, result.commit_url)
        else:
            logger.warning(
                "Hub push #%d (%s) failed, will retry with the next save: %s",
                snap.submission,
                snap.commit_message,
                result.error,
            )
        with self._cond:
            self.results.append(result)
            snap.result = result
            self._running = None
            superseded = self._latest is not snap
            if result.ok or superseded or self._closed:
                self._discard(snap)
            else:
                if self._failed is not None:
                    self._discard(self._failed)
                self._failed = snap
            if self._closed and self._owns_staging and self._queued is None:
                shutil.rmtree(self._staging, ignore_errors=True)
            self._cond.notify_all()
        return result
