"""msaf_hf.training.run_folder: the output-folder lock (with real processes), run ids and earlier results."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msaf_hf.training.run_folder import (
    LOCK_FILE,
    OutputDirLockedError,
    RunLock,
    clear_earlier_results,
    describe_folder,
    earlier_results,
    read_run_id,
    write_run_file,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# The subprocesses load run_folder.py on its own (it imports only the standard library): no torch start-up.
_LOAD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("run_folder", sys.argv[2])
run_folder = sys.modules["run_folder"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_folder)
RunLock, OutputDirLockedError = run_folder.RunLock, run_folder.OutputDirLockedError
"""
_HOLD_LOCK = _LOAD + """
import time
lock = RunLock(sys.argv[1]).acquire(run_id="holder-run")
print("locked", flush=True)
time.sleep(600)
"""
_TRY_LOCK = _LOAD + """
try:
    lock = RunLock(sys.argv[1]).acquire()
except OutputDirLockedError as err:
    print(err, flush=True)
    sys.exit(3)
print("took over" if lock.took_over else "acquired", lock.took_over.pid if lock.took_over else "", flush=True)
lock.release()
"""


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args, str(REPO_ROOT / "msaf_hf" / "training" / "run_folder.py")], env=env, stdout=subprocess.PIPE,  # noqa: E501
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _start_holder(folder: Path) -> subprocess.Popen:
    holder = _python(_HOLD_LOCK, str(folder))
    assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
    return holder


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    holder = _start_holder(tmp_path)
    try:
        started = time.monotonic()
        second = _python(_TRY_LOCK, str(tmp_path))
        out, err = second.communicate(timeout=60)
        assert second.returncode == 3, out + err
        assert f"pid {holder.pid} on host {socket.gethostname()}" in out and "started 20" in out
        assert "holder-run" in out and "choose another --output_dir" in out
        assert time.monotonic() - started < 30  # at once, not after a timeout
        with pytest.raises(OutputDirLockedError, match=f"pid {holder.pid}"):  # in this process too
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = _start_holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)  # no chance to clean up: its metadata stays in the lock file
    holder.wait()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == holder.pid
    second = _python(_TRY_LOCK, str(tmp_path))
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, out + err
    assert out.split() == ["took", "over", str(holder.pid)]


def test_metadata_naming_a_live_pid_does_not_block(tmp_path):
    """Pid reuse: a lock file left by a killed run may name a pid that now belongs to another, live process. Only the
    kernel lock counts, so the folder is still free."""
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                  "started": "2020-01-01T00:00:00Z"}))
    lock = RunLock(tmp_path).acquire(run_id="mine")
    try:
        assert lock.took_over is not None and lock.took_over.pid == os.getpid()
        assert json.loads((tmp_path / LOCK_FILE).read_text())["run_id"] == "mine"
    finally:
        lock.release()
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released cleanly: nothing to take over next time
    again = RunLock(tmp_path).acquire()
    assert again.took_over is None
    again.release()


def test_earlier_results_and_clearing_them_leaves_other_files(tmp_path):
    for name in ("checkpoint-4", "checkpoint-6.tmp", "final", "best", "runs"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text("x")
    for name in ("all_results.json", "trainer_state.json", "notes.txt"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "my_data").mkdir()
    write_run_file(tmp_path, "run-1")
    assert read_run_id(tmp_path) == "run-1"
    assert earlier_results(tmp_path) == ["all_results.json", "best/", "checkpoint-4/", "checkpoint-6.tmp/", "final/",
                                         "run.json", "trainer_state.json"]
    assert "notes.txt" in describe_folder(tmp_path) and "final/" in describe_folder(tmp_path)
    clear_earlier_results(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_data", "notes.txt"]
    assert earlier_results(tmp_path) == [] and earlier_results(tmp_path / "missing") == []
