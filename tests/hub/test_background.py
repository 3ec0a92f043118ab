"""Tests of msaf_hf.hub.background: BackgroundPusher against LocalHub (slow, failing and absent servers)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from hub_server import LocalHub
from hub_testing import SHAREABLE, make_model_folder, tree_digest
from huggingface_hub import HfApi

from msaf_hf.hub import BackgroundPusher


def test_background_pusher_recovers_after_server_errors(
    local_hub: LocalHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = local_hub.add_token("me")
    folder = make_model_folder(tmp_path / "out")
    before = tree_digest(folder)
    caplog.set_level(logging.INFO, logger="msaf_hf.hub")
    local_hub.fail_next(1, status=500)  # the first push's first request fails
    with BackgroundPusher("me/dsnet", token=token, endpoint=local_hub.url, staging_dir=tmp_path / "staging") as pusher:
        assert pusher.submit(folder, "step 1") == 1
        deadline = time.monotonic() + 30
        while pusher.last_result is None and time.monotonic() < deadline:
            time.sleep(0.05)
        first = pusher.last_result
        assert first is not None and not first.ok and "500" in first.error
        assert "Hub push #1 (step 1) failed" in caplog.text

        assert pusher.submit(folder, "step 2") == 2
        url = pusher.wait(timeout=60)
        commits = HfApi(endpoint=local_hub.url, token=token).list_repo_commits("me/dsnet")
        assert url == f"{local_hub.url}/me/dsnet/commit/{commits[0].commit_id}"
        assert commits[0].title == "step 2"
        assert [r.ok for r in pusher.results] == [False, True]
    assert tree_digest(folder) == before
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").iterdir())
    assert token not in caplog.text


def test_submit_returns_quickly_while_server_is_slow_and_newer_saves_supersede(
    local_hub: LocalHub, tmp_path: Path
) -> None:
    token = local_hub.add_token("me")
    folders = [make_model_folder(tmp_path / f"save{i}", seed=i, training_state=False) for i in range(3)]
    local_hub.delay_next(1, 2.0)  # the first request of the first push hangs for 2 s
    pusher = BackgroundPusher("me/dsnet", token=token, endpoint=local_hub.url)
    try:
        durations = []
        for i, folder in enumerate(folders):
            start = time.monotonic()
            pusher.submit(folder, f"save {i}")
            durations.append(time.monotonic() - start)
            if i == 0:  # let the worker pick up the first snapshot (its first request hangs)
                deadline = time.monotonic() + 30
                while pusher.running_submission != 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
        assert max(durations) < 1.0, durations  # only the snapshot copy runs on the caller's thread
        assert pusher.busy
        url = pusher.wait(timeout=60)
    finally:
        pusher.close()
    assert url is not None
    titles = [c.title for c in HfApi(endpoint=local_hub.url, token=token).list_repo_commits("me/dsnet")]
    assert titles[:2] == ["save 2", "save 0"]  # "save 1" was superseded while waiting
    assert [r.commit_message for r in pusher.results] == ["save 0", "save 2"]
    final = local_hub.repo_files("me/dsnet")["model.safetensors"]
    assert final == (folders[2] / "model.safetensors").read_bytes()


def test_background_pusher_with_server_down_never_raises(local_hub: LocalHub, tmp_path: Path) -> None:
    token = local_hub.add_token("me")
    folder = make_model_folder(tmp_path / "out")
    before = tree_digest(folder)
    local_hub.stop()
    pusher = BackgroundPusher("me/dsnet", token=token, endpoint=local_hub.url, strategy="checkpoint")
    try:
        pusher.on_save(folder, folder / "checkpoint-10", step=10)
        assert pusher.wait(timeout=60) is None  # failed, retried once by wait(), failed again
        assert [r.ok for r in pusher.results] == [False, False]
        assert pusher.submit(tmp_path / "does-not-exist") is None  # bad folder: logged, not raised
        assert tree_digest(folder) == before

        local_hub.start()  # the Hub is back: the final push goes through
        pusher.on_train_end(folder)
        url = pusher.wait(timeout=60)
        assert url is not None and url.startswith(f"{local_hub.url}/me/dsnet/commit/")
    finally:
        pusher.close()
    assert set(local_hub.repo_files("me/dsnet")) == SHAREABLE | {"README.md", ".gitattributes"}
    assert tree_digest(folder) == before


def test_background_pusher_checkpoint_strategy_and_retry_in_wait(local_hub: LocalHub, tmp_path: Path) -> None:
    token = local_hub.add_token("me")
    folder = make_model_folder(tmp_path / "out")
    with BackgroundPusher("me/dsnet", token=token, endpoint=local_hub.url, strategy="end") as pusher:
        assert pusher.on_save(folder, folder / "checkpoint-10", step=10) is None  # "end": nothing on save
        assert pusher.results == []
    local_hub.fail_next(1, status=503, path_contains="/commit/")
    with BackgroundPusher("me/dsnet", token=token, endpoint=local_hub.url, strategy="checkpoint") as pusher:
        pusher.on_save(folder, folder / "checkpoint-10", step=10)
        url = pusher.wait(timeout=60)  # first attempt hits the 503, wait() retries it
        assert url is not None
        assert [r.ok for r in pusher.results] == [False, True]
    files = local_hub.repo_files("me/dsnet")
    assert files["last-checkpoint/optimizer.bin"] == b"ckpt optimizer"
    assert "optimizer.bin" not in files  # training state only inside last-checkpoint/
    assert [c.title for c in HfApi(endpoint=local_hub.url).list_repo_commits("me/dsnet")][0] == (
        "Training in progress, step 10"
    )


def test_background_pusher_times_out_hung_push(local_hub: LocalHub, tmp_path: Path) -> None:
    token = local_hub.add_token("me")
    folder = make_model_folder(tmp_path / "out", training_state=False)
    local_hub.delay_next(1, 3.0)
    pusher = BackgroundPusher("me/dsnet", token=token, endpoint=local_hub.url, push_timeout=0.5)
    try:
        pusher.submit(folder, "hung")
        start = time.monotonic()
        assert pusher.wait(timeout=30, retry_failed=False) is None
        assert time.monotonic() - start < 2.5
        assert "timed out" in pusher.results[0].error
        pusher.submit(folder, "after timeout")
        pusher.push_timeout = 30
        assert pusher.wait(timeout=60) is not None
    finally:
        pusher.close()


def test_slow_older_commit_never_lands_after_a_newer_one(local_hub: LocalHub, tmp_path: Path) -> None:
    """Regression test of a race: a push that outlived ``push_timeout`` kept running while the next one started,
    so the older commit could land last and leave the repo at an older state. Pushes now run one after the other
    on the HfApi executor: the newer push starts only once the slow one has finished."""
    token = local_hub.add_token("me")
    older, newer = (make_model_folder(tmp_path / f"save{i}", seed=i, training_state=False) for i in range(2))
    local_hub.delay_next(1, 2.0, method="POST", path_contains="/commit/")  # the older push's commit hangs for 2 s
    pusher = BackgroundPusher("me/dsnet", token=token, endpoint=local_hub.url, push_timeout=0.2)
    try:
        pusher.submit(older, "older")
        deadline = time.monotonic() + 30
        while local_hub.pending_faults and time.monotonic() < deadline:  # until the commit request is held
            time.sleep(0.01)
        assert local_hub.pending_faults == 0
        assert pusher.wait(timeout=30, retry_failed=False) is None  # reported as timed out, still running
        assert "timed out" in pusher.results[0].error
        pusher.submit(newer, "newer")
        pusher.push_timeout = 60
        url = pusher.wait(timeout=60)
    finally:
        pusher.close()
    deadline = time.monotonic() + 30  # let the held commit be answered (a racing pusher may not wait for it)
    while not any(r.fault == "delay 2.0s" for r in local_hub.requests) and time.monotonic() < deadline:
        time.sleep(0.05)
    held = [r for r in local_hub.requests if r.fault == "delay 2.0s"]
    assert len(held) == 1 and held[0].status == 200
    # While the older commit was held, no request of the newer push reached the server.
    assert not [r for r in local_hub.requests if held[0].received_at < r.received_at < held[0].finished_at]
    commits = HfApi(endpoint=local_hub.url, token=token).list_repo_commits("me/dsnet")
    assert [c.title for c in commits[:2]] == ["newer", "older"]
    assert url == f"{local_hub.url}/me/dsnet/commit/{commits[0].commit_id}"
    assert local_hub.repo_files("me/dsnet")["model.safetensors"] == (newer / "model.safetensors").read_bytes()
    # The late outcome of the timed-out push is recorded too.
    assert [(r.commit_message, r.ok) for r in pusher.results] == [("older", False), ("older", True), ("newer", True)]


def test_close_without_waiting_cancels_queued_push_and_keeps_running_one_intact(
    local_hub: LocalHub, tmp_path: Path
) -> None:
    token = local_hub.add_token("me")
    first, second = (make_model_folder(tmp_path / f"save{i}", seed=i, training_state=False) for i in range(2))
    local_hub.delay_next(1, 1.0, method="POST", path_contains="/commit/")
    staging = tmp_path / "staging"
    pusher = BackgroundPusher("me/dsnet", token=token, endpoint=local_hub.url, staging_dir=staging)
    pusher.submit(first, "first")
    deadline = time.monotonic() + 30
    while local_hub.pending_faults and time.monotonic() < deadline:  # the first push is inside its commit
        time.sleep(0.01)
    pusher.submit(second, "second")  # queued behind it
    pusher.close(wait=False)
    assert pusher.submit(second, "after close") is None
    assert pusher.wait(timeout=30) == pusher.results[-1].commit_url  # the running push still completes
    assert [(r.commit_message, r.ok) for r in pusher.results] == [("first", True)]
    titles = [c.title for c in HfApi(endpoint=local_hub.url, token=token).list_repo_commits("me/dsnet")]
    assert titles[0] == "first" and "second" not in titles
    assert not any(staging.iterdir())  # both snapshots removed
