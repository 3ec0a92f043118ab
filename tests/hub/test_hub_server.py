"""Tests of the local Hub-protocol server, driven by huggingface_hub's (and transformers') real client."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

try:
    from .hub_fixtures import local_hub, local_hub_client  # noqa: F401
    from .hub_server import LocalHub
except ImportError:
    from hub_fixtures import local_hub, local_hub_client  # noqa: F401
    from hub_server import LocalHub


def _files(root: str | Path) -> dict[str, bytes]:
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _make_folder(path: Path, marker: str = "v1") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "dsnet", "marker": marker}))
    (path / "weights.bin").write_bytes(hashlib.sha256(marker.encode()).digest() * 64)
    (path / "nested" / "deeper").mkdir(parents=True, exist_ok=True)
    (path / "nested" / "deeper" / "notes.txt").write_text(f"notes {marker}\n")
    return path


def _run_client(code: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=timeout
    )


# ------------------------------------------------------------------------------------------------


def test_create_upload_list_and_download(local_hub: LocalHub, tmp_path: Path) -> None:
    token = local_hub.add_token("alice")
    api = HfApi(endpoint=local_hub.url, token=token)
    url = api.create_repo("alice/tiny")
    assert url.repo_id == "alice/tiny"
    assert url == f"{local_hub.url}/alice/tiny"
    with pytest.raises(HfHubHTTPError) as exc_info:
        api.create_repo("alice/tiny")
    assert exc_info.value.response.status_code == 409
    api.create_repo("alice/tiny", exist_ok=True)

    folder = _make_folder(tmp_path / "src")
    info = api.upload_folder(folder_path=folder, repo_id="alice/tiny", commit_message="first upload")
    assert len(info.oid) == 40 and info.commit_url.endswith(f"/alice/tiny/commit/{info.oid}")

    expected = {".gitattributes", "config.json", "weights.bin", "nested/deeper/notes.txt"}
    assert set(api.list_repo_files("alice/tiny")) == expected
    tree = {e.path: e for e in api.list_repo_tree("alice/tiny", recursive=True)}
    assert set(tree) == expected | {"nested", "nested/deeper"}
    assert tree["weights.bin"].size == 2048 and tree["weights.bin"].lfs is None
    top = {e.path for e in api.list_repo_tree("alice/tiny")}
    assert top == {".gitattributes", "config.json", "weights.bin", "nested"}
    model = api.model_info("alice/tiny", files_metadata=True)
    assert model.sha == info.oid and model.private is False
    assert {s.rfilename for s in model.siblings} == expected
    assert api.file_exists("alice/tiny", "nested/deeper/notes.txt")
    assert not api.file_exists("alice/tiny", "missing.txt")

    cache = tmp_path / "cache"
    path = hf_hub_download("alice/tiny", "nested/deeper/notes.txt", endpoint=local_hub.url, cache_dir=cache)
    assert Path(path).read_text() == "notes v1\n"
    assert f"snapshots/{info.oid}/" in Path(path).as_posix()
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("alice/tiny", "nope.txt", endpoint=local_hub.url, cache_dir=cache)

    snap = snapshot_download("alice/tiny", endpoint=local_hub.url, cache_dir=cache)
    files = _files(snap)
    assert set(files) == expected
    assert files["weights.bin"] == (folder / "weights.bin").read_bytes()
    assert local_hub.unhandled == []


def test_pinned_revision_commits_and_noop_upload(local_hub: LocalHub, tmp_path: Path) -> None:
    token = local_hub.add_token("alice")
    api = HfApi(endpoint=local_hub.url, token=token)
    api.create_repo("alice/history")
    first = api.upload_folder(folder_path=_make_folder(tmp_path / "v1", "v1"), repo_id="alice/history", commit_message="v1")  # noqa: E501
    second = api.upload_folder(folder_path=_make_folder(tmp_path / "v2", "v2"), repo_id="alice/history", commit_message="v2")  # noqa: E501
    assert first.oid != second.oid

    cache = tmp_path / "cache"
    old = hf_hub_download("alice/history", "config.json", revision=first.oid, endpoint=local_hub.url, cache_dir=cache)
    new = hf_hub_download("alice/history", "config.json", endpoint=local_hub.url, cache_dir=cache)
    assert json.loads(Path(old).read_text())["marker"] == "v1"
    assert json.loads(Path(new).read_text())["marker"] == "v2"
    old_snap = _files(snapshot_download("alice/history", revision=first.oid, endpoint=local_hub.url, cache_dir=cache))
    assert old_snap["nested/deeper/notes.txt"] == b"notes v1\n"

    commits = api.list_repo_commits("alice/history")
    assert [c.commit_id for c in commits[:2]] == [second.oid, first.oid]
    assert [c.title for c in commits] == ["v2", "v1", "initial commit"]
    assert commits[0].authors == ["alice"]

    # Re-uploading identical content: the client skips it (preupload reports the remote oids).
    again = api.upload_folder(folder_path=tmp_path / "v2", repo_id="alice/history", commit_message="same")
    assert again.oid == second.oid
    # Deleting a file creates a commit without it; the older commit still has it.
    api.delete_file("nested/deeper/notes.txt", repo_id="alice/history")
    assert "nested/deeper/notes.txt" not in api.list_repo_files("alice/history")
    assert "nested/deeper/notes.txt" in api.list_repo_files("alice/history", revision=second.oid)
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files("alice/history", revision="0" * 40)


def test_branches_tags_and_pull_requests(local_hub: LocalHub, tmp_path: Path) -> None:
    token = local_hub.add_token("alice")
    api = HfApi(endpoint=local_hub.url, token=token)
    api.create_repo("alice/branchy")
    main = api.upload_file(path_or_fileobj=b"main", path_in_repo="file.txt", repo_id="alice/branchy")

    with pytest.raises(RevisionNotFoundError):  # like the Hub: the branch must exist first
        api.upload_file(path_or_fileobj=b"x", path_in_repo="file.txt", repo_id="alice/branchy", revision="dev")
    api.create_branch("alice/branchy", branch="dev")
    with pytest.raises(HfHubHTTPError) as exc_info:
        api.create_branch("alice/branchy", branch="dev")
    assert exc_info.value.response.status_code == 409
    api.create_branch("alice/branchy", branch="dev", exist_ok=True)
    dev = api.upload_file(path_or_fileobj=b"dev", path_in_repo="file.txt", repo_id="alice/branchy", revision="dev")

    refs = api.list_repo_refs("alice/branchy")
    assert {b.name: b.target_commit for b in refs.branches} == {"main": main.oid, "dev": dev.oid}
    cache = tmp_path / "cache"
    assert Path(hf_hub_download("alice/branchy", "file.txt", endpoint=local_hub.url, cache_dir=cache)).read_bytes() == b"main"  # noqa: E501
    dev_file = hf_hub_download("alice/branchy", "file.txt", revision="dev", endpoint=local_hub.url, cache_dir=cache)
    assert Path(dev_file).read_bytes() == b"dev"

    api.create_tag("alice/branchy", tag="v1.0", revision="dev")
    assert [t.target_commit for t in api.list_repo_refs("alice/branchy").tags] == [dev.oid]
    tagged = hf_hub_download("alice/branchy", "file.txt", revision="v1.0", endpoint=local_hub.url, cache_dir=cache)
    assert Path(tagged).read_bytes() == b"dev"

    pr = api.create_commit(
        "alice/branchy",
        [CommitOperationAdd("file.txt", b"proposal")],
        commit_message="proposal",
        create_pr=True,
    )
    assert pr.pr_url == f"{local_hub.url}/alice/branchy/discussions/1"
    assert api.list_repo_refs("alice/branchy").branches[1].target_commit == main.oid  # main untouched
    pr_file = hf_hub_download("alice/branchy", "file.txt", revision="refs/pr/1", endpoint=local_hub.url, cache_dir=cache)  # noqa: E501
    assert Path(pr_file).read_bytes() == b"proposal"
    assert [p.name for p in api.list_repo_refs("alice/branchy", include_pull_requests=True).pull_requests] == ["1"]


def test_private_repos_and_write_access_need_tokens(local_hub: LocalHub, tmp_path: Path) -> None:
    alice = local_hub.add_token("alice")
    bob = local_hub.add_token("bob")
    reader = local_hub.add_token("alice", write=False)
    org_member = local_hub.add_token("carol", orgs=["team"])
    owner = HfApi(endpoint=local_hub.url, token=alice)
    owner.create_repo("alice/secret", private=True)
    owner.upload_file(path_or_fileobj=b"s3cr3t", path_in_repo="data.txt", repo_id="alice/secret")

    anonymous = HfApi(endpoint=local_hub.url, token=False)
    with pytest.raises(RepositoryNotFoundError) as exc_info:
        anonymous.model_info("alice/secret")
    assert exc_info.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError) as exc_info:
        HfApi(endpoint=local_hub.url, token=bob).model_info("alice/secret")
    assert exc_info.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/secret", "data.txt", endpoint=local_hub.url, cache_dir=tmp_path / "c1", token=False)
    path = hf_hub_download("alice/secret", "data.txt", endpoint=local_hub.url, cache_dir=tmp_path / "c2", token=alice)
    assert Path(path).read_bytes() == b"s3cr3t"
    assert HfApi(endpoint=local_hub.url, token=reader).model_info("alice/secret").private is True

    # Writes: anonymous -> 401, read-only token -> 403, someone else's namespace -> 403.
    with pytest.raises(HfHubHTTPError) as exc_info:
        anonymous.create_repo("alice/other")
    assert exc_info.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as exc_info:
        HfApi(endpoint=local_hub.url, token=reader).upload_file(
            path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/secret"
        )
    assert exc_info.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as exc_info:
        HfApi(endpoint=local_hub.url, token=bob).create_repo("alice/hijack")
    assert exc_info.value.response.status_code == 403
    # Organisation namespaces and name-only repo ids (namespaced to the token's user).
    assert HfApi(endpoint=local_hub.url, token=org_member).create_repo("team/shared").repo_id == "team/shared"
    assert HfApi(endpoint=local_hub.url, token=bob).create_repo("mine").repo_id == "bob/mine"
    # An unknown token is rejected even on public endpoints.
    with pytest.raises(HfHubHTTPError) as exc_info:
        HfApi(endpoint=local_hub.url, token="hf_not_a_real_token").model_info("bob/mine")
    assert exc_info.value.response.status_code == 401
    # Visibility can be changed through the settings endpoint.
    owner.update_repo_settings("alice/secret", private=False)
    assert anonymous.model_info("alice/secret").private is False
    assert HfApi(endpoint=local_hub.url, token=alice).whoami()["name"] == "alice"


def test_token_never_persisted_or_logged(local_hub: LocalHub, tmp_path: Path) -> None:
    token = local_hub.add_token("alice")
    api = HfApi(endpoint=local_hub.url, token=token)
    api.create_repo("alice/private-stuff", private=True)
    api.upload_folder(folder_path=_make_folder(tmp_path / "src"), repo_id="alice/private-stuff", commit_message="x")
    hf_hub_download("alice/private-stuff", "config.json", endpoint=local_hub.url, cache_dir=tmp_path / "c", token=token)
    stored = list(local_hub.stored_files())
    assert any(p.name == "repo.json" for p in stored)
    for path in stored:
        assert token.encode() not in path.read_bytes(), path
    assert all(token not in repr(record) for record in local_hub.requests)
    assert any(r.user == "alice" and r.authenticated for r in local_hub.requests)


def test_resolve_headers_and_range_requests(local_hub: LocalHub) -> None:
    token = local_hub.add_token("alice")
    api = HfApi(endpoint=local_hub.url, token=token)
    api.create_repo("alice/raw")
    content = bytes(range(256)) * 4
    commit = api.upload_file(path_or_fileobj=content, path_in_repo="dir/blob.bin", repo_id="alice/raw")

    url = f"{local_hub.url}/alice/raw/resolve/main/dir/blob.bin"
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as resp:
        assert resp.status == 200
        assert resp.headers["X-Repo-Commit"] == commit.oid
        assert resp.headers["Content-Length"] == str(len(content))
        git_oid = hashlib.sha1(b"blob %d\x00" % len(content) + content).hexdigest()
        assert resp.headers["ETag"] == f'"{git_oid}"'
        assert "X-Xet-Hash" not in resp.headers  # Xet is never advertised
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=1000-"})) as resp:
        assert resp.status == 206
        assert resp.read() == content[1000:]
        assert resp.headers["Content-Range"] == f"bytes 1000-{len(content) - 1}/{len(content)}"
    with pytest.raises(urllib.error.HTTPError) as exc_info:
        urllib.request.urlopen(f"{local_hub.url}/alice/raw/resolve/main/missing.bin")
    assert exc_info.value.code == 404
    assert exc_info.value.headers["X-Error-Code"] == "EntryNotFound"
    assert exc_info.value.headers["X-Repo-Commit"] == commit.oid
    with pytest.raises(urllib.error.HTTPError) as exc_info:
        urllib.request.urlopen(f"{local_hub.url}/alice/raw/resolve/nobranch/dir/blob.bin")
    assert exc_info.value.headers["X-Error-Code"] == "RevisionNotFound"


def test_lfs_batch_upload_when_server_requests_lfs(local_hub: LocalHub, tmp_path: Path, monkeypatch) -> None:
    """With an LFS threshold the basic LFS transfer is used (Xet disabled on the client)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    local_hub.lfs_threshold = 1024
    token = local_hub.add_token("alice")
    api = HfApi(endpoint=local_hub.url, token=token)
    api.create_repo("alice/lfs")
    big = bytes(range(256)) * 16
    api.upload_folder(folder_path=_write(tmp_path / "src", {"big.bin": big, "small.txt": b"small"}), repo_id="alice/lfs")  # noqa: E501

    tree = {e.path: e for e in api.list_repo_tree("alice/lfs")}
    assert tree["big.bin"].lfs is not None and tree["big.bin"].lfs.sha256 == hashlib.sha256(big).hexdigest()
    assert tree["small.txt"].lfs is None
    assert any("/info/lfs/objects/batch" in r.path for r in local_hub.requests)
    assert any(r.method == "PUT" and r.path.startswith("/__lfs__/") for r in local_hub.requests)
    path = hf_hub_download("alice/lfs", "big.bin", endpoint=local_hub.url, cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == big
    assert Path(path).resolve().name == hashlib.sha256(big).hexdigest()  # blob named by X-Linked-Etag
    # Uploading the same object again skips the transfer (the batch answer has no actions).
    local_hub.reset_requests()
    api.upload_file(path_or_fileobj=big, path_in_repo="copy.bin", repo_id="alice/lfs")
    assert not any(r.method == "PUT" for r in local_hub.requests)


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def test_failure_injection_and_restart(local_hub: LocalHub, tmp_path: Path) -> None:
    token = local_hub.add_token("alice")
    api = HfApi(endpoint=local_hub.url, token=token)

    local_hub.fail_next(1, status=500)
    with pytest.raises(HfHubHTTPError) as exc_info:
        api.create_repo("alice/flaky")
    assert exc_info.value.response.status_code == 500
    api.create_repo("alice/flaky")  # recovered
    api.upload_file(path_or_fileobj=b"hello", path_in_repo="a.txt", repo_id="alice/flaky")

    # A failed commit is not retried by the client: the error surfaces.
    local_hub.fail_next(1, status=500, path_contains="/commit/")
    with pytest.raises(HfHubHTTPError) as exc_info:
        api.upload_file(path_or_fileobj=b"lost", path_in_repo="lost.txt", repo_id="alice/flaky")
    assert exc_info.value.response.status_code == 500
    assert "lost.txt" not in api.list_repo_files("alice/flaky")

    # Time-limited failures, filtered by path: other routes are unaffected.
    local_hub.fail_for(30, status=503, path_contains="/api/models/alice/flaky/refs")
    assert api.list_repo_files("alice/flaky") == [".gitattributes", "a.txt"]
    with pytest.raises(HfHubHTTPError):
        api.list_repo_refs("alice/flaky")
    local_hub.clear_faults()
    assert [b.name for b in api.list_repo_refs("alice/flaky").branches] == ["main"]

    # The client retries preupload and (uncached) downloads on 5xx: a single failure is absorbed.
    local_hub.fail_next(1, status=503, path_contains="/preupload/")
    api.upload_file(path_or_fileobj=b"retried", path_in_repo="b.txt", repo_id="alice/flaky")
    assert [r.fault for r in local_hub.requests if "/preupload/" in r.path][-2:] == ["status 503", None]
    local_hub.fail_next(1, status=503, path_contains="/resolve/")
    cache = tmp_path / "cache"
    path = hf_hub_download("alice/flaky", "a.txt", endpoint=local_hub.url, cache_dir=cache)
    assert Path(path).read_bytes() == b"hello"

    # Dropped connection -> network error on the client.
    local_hub.drop_next(1)
    with pytest.raises(httpx2.TransportError):
        api.model_info("alice/flaky")

    # Slow responses -> the HEAD call times out and the client falls back to its cached copy.
    local_hub.delay_next(1, 3.0, path_contains="/resolve/")
    start = time.monotonic()
    again = hf_hub_download("alice/flaky", "a.txt", endpoint=local_hub.url, cache_dir=cache, etag_timeout=0.5)
    assert again == path and time.monotonic() - start < 2.5
    assert local_hub.pending_faults == 0  # the delay was applied to that HEAD request

    # Stop: connection refused. Restart: same port, same data.
    port = local_hub.port
    local_hub.stop()
    with pytest.raises(httpx2.ConnectError):
        api.model_info("alice/flaky")
    local_hub.start()
    assert local_hub.port == port
    assert set(api.list_repo_files("alice/flaky")) == {".gitattributes", "a.txt", "b.txt"}


def test_stop_aborts_delayed_requests(local_hub: LocalHub) -> None:
    token = local_hub.add_token("alice")
    api = HfApi(endpoint=local_hub.url, token=token)
    api.create_repo("alice/slow")
    local_hub.delay_for(60, 30.0)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            api.model_info("alice/slow")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    import threading

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.3)
    start = time.monotonic()
    local_hub.stop()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - start < 5
    assert errors and isinstance(errors[0], httpx2.TransportError)
    local_hub.clear_faults()
    local_hub.start()
    assert api.model_info("alice/slow").id == "alice/slow"


def test_in_process_default_endpoint_fixture(local_hub_client: LocalHub) -> None:
    """`local_hub_client` points huggingface_hub's defaults (no endpoint=...) at the server."""
    token = local_hub_client.add_token("alice")
    api = HfApi(token=token)
    assert api.endpoint == local_hub_client.url
    api.create_repo("alice/defaults")
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id="alice/defaults")
    path = hf_hub_download("alice/defaults", "config.json", token=token)
    assert Path(path).read_bytes() == b"{}"


@pytest.mark.slow
def test_subprocess_client_and_offline_cache(local_hub: LocalHub, tmp_path: Path) -> None:
    """A client configured only through HF_ENDPOINT/HF_HOME; then HF_HUB_OFFLINE=1 uses the cache."""
    token = local_hub.add_token("alice")
    api = HfApi(endpoint=local_hub.url, token=token)
    api.create_repo("alice/cached", private=True)
    api.upload_folder(folder_path=_make_folder(tmp_path / "src"), repo_id="alice/cached")

    code = """
        import json, sys
        from pathlib import Path
        from huggingface_hub import hf_hub_download, snapshot_download
        snap = snapshot_download("alice/cached")
        cfg = hf_hub_download("alice/cached", "config.json")
        print(json.dumps({"files": sorted(p.relative_to(snap).as_posix() for p in Path(snap).rglob("*") if p.is_file()),
                          "marker": json.loads(Path(cfg).read_text())["marker"]}))
    """
    home = tmp_path / "client-home"
    online = _run_client(code, local_hub.client_env(token=token, hf_home=home))
    assert online.returncode == 0, online.stderr
    result = json.loads(online.stdout.strip().splitlines()[-1])
    assert result == {"files": [".gitattributes", "config.json", "nested/deeper/notes.txt", "weights.bin"], "marker": "v1"}  # noqa: E501
    assert token not in online.stdout + online.stderr

    local_hub.stop()  # offline mode must not even try to connect
    offline = _run_client(code, local_hub.client_env(token=token, hf_home=home, offline=True))
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout.strip().splitlines()[-1]) == result
    # Without the cache, offline mode fails.
    cold = _run_client(code, local_hub.client_env(token=token, hf_home=tmp_path / "cold", offline=True))
    assert cold.returncode != 0


@pytest.mark.slow
def test_transformers_auto_classes_against_local_hub(local_hub: LocalHub, tmp_path: Path) -> None:
    """transformers' AutoConfig/AutoModel load a tiny BERT pushed to the local Hub (subprocess)."""
    token = local_hub.add_token("alice")
    code = """
        import json, sys, tempfile
        import torch
        from huggingface_hub import HfApi
        from transformers import AutoConfig, AutoModel, BertConfig, BertModel

        torch.manual_seed(0)
        config = BertConfig(vocab_size=64, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=16, max_position_embeddings=16)
        api = HfApi()
        api.create_repo("alice/tiny-bert", private=True)
        out = {}
        for i in range(2):
            model = BertModel(config)
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder)
                out[f"commit{i}"] = api.upload_folder(folder_path=folder, repo_id="alice/tiny-bert").oid
            out[f"sum{i}"] = float(model.embeddings.word_embeddings.weight.sum())

        loaded_config = AutoConfig.from_pretrained("alice/tiny-bert")
        latest = AutoModel.from_pretrained("alice/tiny-bert")
        pinned = AutoModel.from_pretrained("alice/tiny-bert", revision=out["commit0"])
        out["config"] = type(loaded_config).__name__
        out["model"] = type(latest).__name__
        out["loaded_sum1"] = float(latest.embeddings.word_embeddings.weight.sum())
        out["loaded_sum0"] = float(pinned.embeddings.word_embeddings.weight.sum())
        print(json.dumps(out))
    """
    proc = _run_client(code, local_hub.client_env(token=token, hf_home=tmp_path / "home"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["config"] == "BertConfig" and out["model"] == "BertModel"
    assert out["loaded_sum1"] == pytest.approx(out["sum1"])
    assert out["loaded_sum0"] == pytest.approx(out["sum0"])
    assert out["sum0"] != pytest.approx(out["sum1"])
    assert local_hub.unhandled == [], local_hub.unhandled
    assert any(r.path.startswith("/alice/tiny-bert/resolve/") for r in local_hub.requests)
