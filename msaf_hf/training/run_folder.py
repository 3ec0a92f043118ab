"""The life of an output folder, in one place: its lock, its run id, what an earlier run left there and when it may
be reused, and which checkpoint a run resumes.

* :class:`RunLock`: an exclusive OS lock (``filelock``: ``flock`` on POSIX, ``LockFileEx`` on Windows) on
  ``output_dir/.run.lock.os``, held by the main process for the whole run. The OS drops it when its process dies
  (``kill -9`` included), so a lock left behind by a killed run is never mistaken for a live one, whatever pid the
  next process gets. ``output_dir/.run.lock`` records who holds it (pid, host, start time, run id) so that a second
  run can name the holder; a clean release empties it, so metadata found there by a new holder names a run that died.
* Run ids: ``output_dir/run.json`` names the run that owns the folder; every checkpoint records it too
  (``trainer_state.json``), so a run never rotates, replaces or resumes another run's checkpoints.
* Reuse rules (:func:`prepare_output_dir`): a new run needs a folder without earlier results (:func:`earlier_results`)
  or ``--overwrite_output_dir`` (:func:`clear_earlier_results` deletes only what a run writes); a resumed run
  continues its checkpoint's run id.
* Resume resolution (:func:`resolve_resume`): ``latest`` or a checkpoint folder; :func:`claim_output_dir` runs all
  of it on the main process and hands every process the verdict.

Standard library and ``filelock`` only (no torch, no training code), so that the lock loads on its own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

if TYPE_CHECKING:  # (not imported at run time: the lock loads on its own)
    from .arguments import DSNetTrainingArguments

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_PREFIX",
    "LOCK_FILE",
    "OS_LOCK_FILE",
    "RUN_FILE",
    "TRAINER_STATE_FILE",
    "LockHolder",
    "OutputDirLockedError",
    "RunLock",
    "checkpoint_run_id",
    "checkpoint_step",
    "claim_output_dir",
    "clean_stale_staging",
    "clear_earlier_results",
    "describe_folder",
    "earlier_results",
    "find_latest_checkpoint",
    "list_checkpoints",
    "new_run_id",
    "prepare_output_dir",
    "read_run_id",
    "resolve_resume",
    "write_run_file",
]

LOCK_FILE = ".run.lock"  # who holds the folder (JSON); empty once released cleanly
OS_LOCK_FILE = ".run.lock.os"  # the file the OS lock is taken on (kept apart: Windows' lock forbids writing it)
RUN_FILE = "run.json"
CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE_FILE = "trainer_state.json"
# What a training run writes into its output folder (everything else there is the user's and is left alone).
_RESULT_FILES = ("all_results.json", TRAINER_STATE_FILE, "training_args.json", RUN_FILE)
_RESULT_DIRS = ("final", "best", "last-model", "runs")
_RESULT_PREFIXES = (CHECKPOINT_PREFIX,)  # checkpoint-N, checkpoint-N.tmp
_STAGING_SUFFIXES = (".tmp",)  # final.tmp, best.tmp, ... of a save that was interrupted


# ------------------------------------------------------------------------------------------------ checkpoints


def checkpoint_step(checkpoint: str | os.PathLike) -> int | None:
    """The step of a ``checkpoint-<step>`` folder (by its name), else None."""
    name = Path(checkpoint).name
    digits = name[len(CHECKPOINT_PREFIX):]
    return int(digits) if name.startswith(CHECKPOINT_PREFIX) and digits.isascii() and digits.isdigit() else None


def checkpoint_run_id(checkpoint: str | os.PathLike) -> str | None:
    """The run id a checkpoint records (``trainer_state.json``), or None (unreadable, or written before run ids)."""
    try:
        return json.loads((Path(checkpoint) / TRAINER_STATE_FILE).read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def list_checkpoints(output_dir: str | os.PathLike, run_id: str | None = None) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first. Unfinished ``*.tmp`` folders are not listed.

    With ``run_id``, only that run's checkpoints (and those written before runs had ids).
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        step = checkpoint_step(path)
        if step is not None and path.is_dir() and (path / TRAINER_STATE_FILE).is_file():
            if run_id is not None and checkpoint_run_id(path) not in (None, run_id):
                continue
            found.append((step, path))
    return [path for _, path in sorted(found)]


def find_latest_checkpoint(output_dir: str | os.PathLike, run_id: str | None = None) -> Path | None:
    """The newest complete checkpoint in ``output_dir`` (of run ``run_id`` when given), or None."""
    checkpoints = list_checkpoints(output_dir, run_id)
    return checkpoints[-1] if checkpoints else None


def clean_stale_staging(output_dir: str | os.PathLike) -> None:
    """Remove the ``checkpoint-<step>.tmp`` folders of an interrupted save (call with the folder locked)."""
    for path in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*.tmp"):
        logger.warning("Removing %s: an unfinished checkpoint of an interrupted run.", path)
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ run ids, results


class OutputDirLockedError(RuntimeError):
    """Another live run holds the output folder."""


def new_run_id() -> str:
    """A fresh run id: the start time (sortable, readable) and a random part (unique)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def read_run_id(output_dir: str | os.PathLike) -> str | None:
    """The id of the run that owns ``output_dir`` (from ``run.json``), or None."""
    path = Path(output_dir) / RUN_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def write_run_file(output_dir: str | os.PathLike, run_id: str, **extra: Any) -> None:
    """Record ``run_id`` as the owner of ``output_dir`` (atomically)."""
    folder = Path(output_dir)
    content = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
               "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
    staging = folder / f"{RUN_FILE}.tmp-{os.getpid()}"
    staging.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    os.replace(staging, folder / RUN_FILE)


def _is_result(path: Path) -> bool:
    name = path.name
    if name in _RESULT_FILES or name in _RESULT_DIRS or name.startswith(_RESULT_PREFIXES):
        return True
    return any(name == d + s for d in _RESULT_DIRS for s in _STAGING_SUFFIXES) or ".old-" in name and (
        name.split(".old-")[0] in _RESULT_DIRS or name.startswith(_RESULT_PREFIXES))


def earlier_results(output_dir: str | os.PathLike) -> list[str]:
    """Names of what an earlier run left in ``output_dir`` (checkpoints, ``final/``, ``best/``, results), sorted."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    # The tracker folder alone (runs/) is not a result worth protecting, but it is cleared with the rest.
    return sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()
                  if _is_result(p) and p.name != "runs")


def describe_folder(output_dir: str | os.PathLike, limit: int = 20) -> str:
    """A one-line listing of ``output_dir`` for error messages."""
    folder = Path(output_dir)
    if not folder.exists():
        return f"{folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()
                   if p.name not in (LOCK_FILE, OS_LOCK_FILE))
    if not names:
        return f"{folder} is empty"
    shown = ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
    return f"{folder} holds: {shown}"


def clear_earlier_results(output_dir: str | os.PathLike) -> list[str]:
    """Delete what an earlier run wrote into ``output_dir`` (never other files); returns the names removed."""
    folder = Path(output_dir)
    removed = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.iterdir()):
        if not _is_result(path):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path.name)
    return removed


@dataclass
class LockHolder:
    """Who holds (or last held) a :class:`RunLock`."""

    pid: int | None = None
    host: str | None = None
    started: str | None = None
    run_id: str | None = None

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started}" + (
            f", run {self.run_id}" if self.run_id else "")


# ------------------------------------------------------------------------------------------------ the lock


class RunLock:
    """An exclusive lock on an output folder, for the whole run (see the module docstring).

    ``acquire()`` returns at once: it raises :class:`OutputDirLockedError` naming the holder when another live process
    (or another ``RunLock`` of this process) holds the folder, and takes over (with a warning) a lock whose holder
    died. ``release()`` (or leaving the ``with`` block) lets go; so does the process ending, however it ends.
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_FILE
        # timeout=0: never wait for a live holder; thread_local=False: any thread of the run may release it.
        self._os_lock = FileLock(self.output_dir / OS_LOCK_FILE, timeout=0, thread_local=False)
        self._held = False
        self.took_over: LockHolder | None = None  # the dead holder whose lock this one replaced, if any

    @property
    def held(self) -> bool:
        return self._held

    def read_holder(self) -> LockHolder:
        try:
            values = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return LockHolder()
        return LockHolder(**{k: values.get(k) for k in ("pid", "host", "started", "run_id")})

    def _write_holder(self, metadata: dict[str, Any] | None) -> None:
        """Replace the holder record atomically (empty for a clean release), so a reader never sees half of it."""
        staging = self.path.with_name(f"{LOCK_FILE}.tmp-{os.getpid()}")
        with open(staging, "w", encoding="utf-8") as handle:
            handle.write("" if metadata is None else json.dumps(metadata) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, self.path)

    def acquire(self, run_id: str | None = None) -> RunLock:
        if self._held:
            return self
        self.output_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._os_lock.acquire()
        except Timeout:
            holder = self.read_holder()
            raise OutputDirLockedError(
                f"output_dir {str(self.output_dir)!r} is in use by another training run ({holder.describe()}). "
                "Wait for it to finish, stop it, or choose another --output_dir. (Two runs writing one folder would "
                "delete or overwrite each other's checkpoints and models.)"
            ) from None
        try:
            # The lock is ours. A holder record left behind means its run died without releasing (a clean release
            # empties it): the OS already dropped that process's lock, so taking it over is safe.
            previous = self.read_holder()
            if previous.pid is not None:
                self.took_over = previous
                logger.warning("Taking over the lock of %s: that run ended without releasing it (killed or crashed).",
                               previous.describe())
            self._write_holder({"pid": os.getpid(), "host": socket.gethostname(),
                                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "run_id": run_id})
        except BaseException:
            self._os_lock.release()
            raise
        self._held = True
        return self

    def set_run_id(self, run_id: str) -> None:
        """Record the run id in the lock file (once it is known)."""
        if self._held:
            self._write_holder({**vars(self.read_holder()), "run_id": run_id})

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        try:
            self._write_holder(None)  # an empty record: released cleanly
        finally:
            self._os_lock.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# ------------------------------------------------------------------------------------------------ reuse and resume


def resolve_resume(args: DSNetTrainingArguments, owner: str | None) -> Path | None:
    """The checkpoint to resume from: ``latest`` of the run owning output_dir, or the given folder; None without
    ``--resume_from_checkpoint``."""
    value = args.resume_from_checkpoint
    if value is None:
        return None
    if value == "latest":
        latest = find_latest_checkpoint(args.output_dir, owner)
        if latest is None:
            raise FileNotFoundError(
                f"--resume_from_checkpoint latest: there is no complete checkpoint to resume in output_dir "
                f"{args.output_dir!r} ({describe_folder(args.output_dir)}). Check --output_dir, pass a "
                f"{CHECKPOINT_PREFIX}<step> folder, or drop --resume_from_checkpoint to start a new run."
            )
        return latest
    path = Path(value)
    if not (path / TRAINER_STATE_FILE).is_file():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {value!r} is not a complete checkpoint (no {TRAINER_STATE_FILE}); pass a "
            f"{CHECKPOINT_PREFIX}<step> folder written by this trainer, or 'latest'."
        )
    return path


def prepare_output_dir(args: DSNetTrainingArguments) -> tuple[Path | None, str]:
    """Decide who owns ``output_dir`` for this run (main process, lock held): (checkpoint to resume, run id).

    A new run needs a folder without earlier results, or ``--overwrite_output_dir`` (which deletes them first); a
    resumed run continues the checkpoint's run id; nothing of another run is ever reused by accident.
    """
    output_dir = Path(args.output_dir)
    owner = read_run_id(output_dir)
    results = earlier_results(output_dir)
    resume_dir = resolve_resume(args, owner)
    if resume_dir is not None:
        if args.overwrite_output_dir:
            logger.warning("--overwrite_output_dir is ignored: resuming %s.", resume_dir)
        run_id = checkpoint_run_id(resume_dir) or owner or new_run_id()
        inside = resume_dir.resolve().parent == output_dir.resolve()
        if not inside and results and owner != run_id:
            raise FileExistsError(
                f"output_dir {str(output_dir)!r} holds the results of another run ({', '.join(results[:8])}); "
                f"continuing {resume_dir} there would mix the two. Choose an empty --output_dir (or delete them)."
            )
        foreign = [p.name for p in list_checkpoints(output_dir) if checkpoint_run_id(p) not in (None, run_id)]
        if foreign:
            raise FileExistsError(
                f"output_dir {str(output_dir)!r} also holds checkpoints of another run ({', '.join(foreign)}); "
                f"continuing run {run_id} there could replace them. Move them away or resume into another --output_dir."
            )
    else:
        if results and not args.overwrite_output_dir:
            hint = ("--resume_from_checkpoint latest to continue it, " if list_checkpoints(output_dir) else "")
            raise FileExistsError(
                f"output_dir {str(output_dir)!r} holds the results of an earlier run ({', '.join(results[:8])}"
                f"{', ...' if len(results) > 8 else ''}). Pass {hint}--overwrite_output_dir to delete them and start "
                "again, or choose another --output_dir."
            )
        if args.overwrite_output_dir:
            removed = clear_earlier_results(output_dir)
            if removed:
                logger.warning("--overwrite_output_dir: deleted the earlier run's %s from %s.", ", ".join(removed),
                               output_dir)
        run_id = new_run_id()
    write_run_file(output_dir, run_id)
    return resume_dir, run_id


def claim_output_dir(
    args: DSNetTrainingArguments, accelerator: Any
) -> tuple[RunLock | None, Path | None, str]:
    """Lock ``output_dir`` on the main process and settle its ownership; every process gets the verdict.

    Returns (the lock on the main process, else None; checkpoint to resume; run id). A refusal is raised on every
    process (the others learn it through a broadcast instead of waiting for a main process that has stopped).
    """
    lock, error, verdict = None, None, [None]
    if accelerator.is_main_process:
        try:
            lock = RunLock(args.output_dir).acquire()
            resume_dir, run_id = prepare_output_dir(args)
            lock.set_run_id(run_id)
            clean_stale_staging(args.output_dir)
            verdict = [("ok", None if resume_dir is None else str(resume_dir), run_id)]
        except Exception as err:  # noqa: BLE001 - passed on to every process, then raised
            if lock is not None:
                lock.release()
            error, verdict = err, [("error", type(err).__name__, str(err))]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        verdict = broadcast_object_list(verdict, from_process=0)
    if error is not None:
        raise error
    kind, first, second = verdict[0]
    if kind == "error":
        types = {t.__name__: t for t in (OutputDirLockedError, FileExistsError, FileNotFoundError, ValueError)}
        raise types.get(first, RuntimeError)(second)
    return lock, (None if first is None else Path(first)), second
