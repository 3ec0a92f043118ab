"""An output folder belongs to one training run: its run id, its lock, and what counts as an earlier result.

Three small pieces used by :mod:`msaf_hf.training.resume`, kept free of training code (standard library only):

* :class:`RunLock`: an exclusive ``flock`` on ``output_dir/.run.lock``, held by the main process for the whole run.
  The kernel drops a ``flock`` when its process dies (``kill -9`` included), so a lock left behind by a killed run
  is never mistaken for a live one, whatever pid the next process gets; the file also records who holds it
  (pid, host, start time, run id) so that a second run can name the holder.
* Run ids: ``output_dir/run.json`` names the run that owns the folder; every checkpoint records it too
  (``trainer_state.json``), so a run never rotates, replaces or resumes another run's checkpoints.
* :func:`earlier_results` / :func:`clear_earlier_results`: what an earlier run left in a folder, and removing it
  (only the files a run writes; anything else in the folder is left alone).
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
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "LOCK_FILE",
    "RUN_FILE",
    "OutputDirLockedError",
    "RunLock",
    "clear_earlier_results",
    "describe_folder",
    "earlier_results",
    "new_run_id",
    "read_run_id",
    "write_run_file",
]

LOCK_FILE = ".run.lock"
RUN_FILE = "run.json"
# What a training run writes into its output folder (everything else there is the user's and is left alone).
_RESULT_FILES = ("all_results.json", "trainer_state.json", "training_args.json", RUN_FILE)
_RESULT_DIRS = ("final", "best", "last-model", "runs")
_RESULT_PREFIXES = ("checkpoint-",)  # checkpoint-N, checkpoint-N.tmp
_STAGING_SUFFIXES = (".tmp",)  # final.tmp, best.tmp, ... of a save that was interrupted


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
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if p.name != LOCK_FILE)
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


class RunLock:
    """An exclusive lock on an output folder, for the whole run (see the module docstring).

    ``acquire()`` returns at once: it raises :class:`OutputDirLockedError` naming the holder when another live process
    holds the folder, and takes over (with a warning) a lock whose holder died. ``release()`` (or leaving the
    ``with`` block) lets go; so does the process ending, however it ends.
    """

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_FILE
        self._fd: int | None = None
        self.took_over: LockHolder | None = None  # the dead holder whose lock this one replaced, if any

    @property
    def held(self) -> bool:
        return self._fd is not None

    def read_holder(self) -> LockHolder:
        try:
            values = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return LockHolder()
        return LockHolder(**{k: values.get(k) for k in ("pid", "host", "started", "run_id")})

    def acquire(self, run_id: str | None = None) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX (Windows): no kernel lock to rely on
            logger.warning("No file locking on this platform: nothing stops a second run from using %s at the same "
                           "time.", self.output_dir)
            return self
        if self._fd is not None:
            return self
        self.output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.read_holder()
            raise OutputDirLockedError(
                f"output_dir {str(self.output_dir)!r} is in use by another training run ({holder.describe()}). "
                "Wait for it to finish, stop it, or choose another --output_dir. (Two runs writing one folder would "
                "delete or overwrite each other's checkpoints and models.)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The lock is ours. Metadata left in the file means its holder died without releasing it (a clean exit
        # empties the file): the kernel already released that process's lock, so taking it over is safe.
        previous = self.read_holder()
        if previous.pid is not None:
            self.took_over = previous
            logger.warning("Taking over the lock of %s: that run ended without releasing it (killed or crashed).",
                           previous.describe())
        metadata = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "run_id": run_id}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(metadata) + "\n").encode("utf-8"), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def set_run_id(self, run_id: str) -> None:
        """Record the run id in the lock file (once it is known)."""
        if self._fd is None:
            return
        metadata = {**vars(self.read_holder()), "run_id": run_id}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(metadata) + "\n").encode("utf-8"), 0)

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # an empty lock file: released cleanly
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
