"""Tests of msaf_hf.hub.push: upload selection, single-commit pushes (against LocalHub), hub_strategy plans, and
the scripts/push_to_hub.py front end."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from hub_server import LocalHub
from hub_testing import (
    EVAL_RESULTS,
    HYPERPARAMETERS,
    LEAKY_TOKEN,
    SHAREABLE,
    make_model_folder,
    snapshot_files,
    tree_digest,
)
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError

from msaf_hf.hub import (
    BackgroundPusher,
    HubPushPlan,
    collect_upload_files,
    plan_hub_push,
    push_folder_to_hub,
    render_model_card,
)


def test_collect_upload_files_excludes_training_state(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "m")
    (folder / "README.md").write_text("old card")
    assert set(collect_upload_files(folder)) == SHAREABLE
    assert set(collect_upload_files(folder, include_readme=True)) == SHAREABLE | {"README.md"}
    assert set(collect_upload_files(folder, allow_patterns=["*.log"])) == SHAREABLE | {"train.log"}
    assert "modeling_dsnet.py" not in collect_upload_files(folder, ignore_patterns=["modeling_*.py"])


# -- push ------------------------------------------------------------------------------------------


def test_push_folder_uploads_exactly_the_shareable_files(local_hub: LocalHub, tmp_path: Path) -> None:
    token = local_hub.add_token("me")
    folder = make_model_folder(tmp_path / "out")
    before = tree_digest(folder)
    info = push_folder_to_hub(folder, "me/dsnet", token=token, endpoint=local_hub.url, commit_message="first")
    assert info.commit_url == f"{local_hub.url}/me/dsnet/commit/{info.oid}"
    assert tree_digest(folder) == before  # nothing written to the caller's folder

    files = snapshot_files(local_hub, "me/dsnet", tmp_path, token)
    assert set(files) == SHAREABLE | {"README.md", ".gitattributes"}
    assert files["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    assert files["modeling_dsnet.py"] == (folder / "modeling_dsnet.py").read_bytes()
    expected_card = str(render_model_card(folder, repo_id="me/dsnet"))
    assert files["README.md"].decode() == expected_card
    hyper = json.loads(files["training_hyperparameters.json"])
    assert hyper == HYPERPARAMETERS  # the secret-looking entry was dropped from the upload
    assert HfApi(endpoint=local_hub.url).model_info("me/dsnet").card_data["pipeline_tag"] == "image-segmentation"
    assert [c.title for c in HfApi(endpoint=local_hub.url).list_repo_commits("me/dsnet")][0] == "first"


def test_push_private_repo_token_from_env_and_no_leaks(
    local_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd
) -> None:
    token = local_hub.add_token("me")
    monkeypatch.setenv("HF_TOKEN", token)  # resolved by huggingface_hub when token=None
    caplog.set_level(logging.DEBUG)
    folder = make_model_folder(tmp_path / "out")
    (folder / "eval_results.json").write_text(json.dumps({**EVAL_RESULTS, "note": f"pushed with {token}"}))
    info = push_folder_to_hub(folder, "me/secret-dsnet", private=True, endpoint=local_hub.url)
    assert info.oid

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=local_hub.url, token=False).model_info("me/secret-dsnet")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(
            "me/secret-dsnet", "config.json", endpoint=local_hub.url, cache_dir=tmp_path / "anon", token=False
        )
    files = snapshot_files(local_hub, "me/secret-dsnet", tmp_path, token)
    assert set(files) == SHAREABLE | {"README.md", ".gitattributes"}
    for name, content in files.items():
        assert token.encode() not in content, name
        assert LEAKY_TOKEN.encode() not in content, name
    assert json.loads(files["eval_results.json"])["note"] == "pushed with ***"
    for path in local_hub.stored_files():
        assert token.encode() not in path.read_bytes()
    out, err = capfd.readouterr()
    assert token not in caplog.text + out + err
    # Writing requires a token.
    with pytest.raises(Exception) as exc_info:
        push_folder_to_hub(folder, "me/other", endpoint=local_hub.url, token=False)
    assert getattr(exc_info.value, "response", None) is not None and exc_info.value.response.status_code == 401


def test_push_to_branch_and_pull_request(local_hub: LocalHub, tmp_path: Path) -> None:
    token = local_hub.add_token("me")
    api = HfApi(endpoint=local_hub.url, token=token)
    main = push_folder_to_hub(
        make_model_folder(tmp_path / "a", seed=0), "me/dsnet", token=token, endpoint=local_hub.url
    )
    dev = push_folder_to_hub(
        make_model_folder(tmp_path / "b", seed=1), "me/dsnet", token=token, endpoint=local_hub.url, revision="exp-1"
    )
    refs = {b.name: b.target_commit for b in api.list_repo_refs("me/dsnet").branches}
    assert refs == {"main": main.oid, "exp-1": dev.oid}
    weights = snapshot_files(local_hub, "me/dsnet", tmp_path, token, revision="exp-1")["model.safetensors"]
    assert weights == (tmp_path / "b" / "model.safetensors").read_bytes()
    pr = push_folder_to_hub(
        make_model_folder(tmp_path / "c", seed=2), "me/dsnet", token=token, endpoint=local_hub.url, create_pr=True
    )
    assert pr.pr_url.endswith("/me/dsnet/discussions/1")
    assert api.list_repo_refs("me/dsnet").branches[-1].target_commit == main.oid  # main unchanged


def test_push_replaces_stale_weights_and_checkpoint(local_hub: LocalHub, tmp_path: Path) -> None:
    token = local_hub.add_token("me")
    api = HfApi(endpoint=local_hub.url, token=token)
    sharded = make_model_folder(tmp_path / "sharded", results=False, training_state=False)
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00002.safetensors")
    first_shard = (sharded / "model-00001-of-00002.safetensors").read_bytes()
    (sharded / "model-00002-of-00002.safetensors").write_bytes(first_shard)
    (sharded / "model.safetensors.index.json").write_text("{}")
    ckpt1 = tmp_path / "checkpoint-10"
    ckpt1.mkdir()
    (ckpt1 / "optimizer.bin").write_bytes(b"step 10")
    (ckpt1 / "scheduler.pt").write_bytes(b"sched")
    (ckpt1 / "random_states_0.pkl").write_bytes(b"rng")  # never uploaded
    push_folder_to_hub(sharded, "me/dsnet", token=token, endpoint=local_hub.url, checkpoint_folder=ckpt1)
    files = set(api.list_repo_files("me/dsnet"))
    assert {
        "model-00001-of-00002.safetensors",
        "last-checkpoint/optimizer.bin",
        "last-checkpoint/scheduler.pt",
    } <= files
    assert "last-checkpoint/random_states_0.pkl" not in files

    single = make_model_folder(tmp_path / "single", results=False, training_state=False)
    ckpt2 = tmp_path / "checkpoint-20"
    (ckpt2 / "sub").mkdir(parents=True)
    (ckpt2 / "optimizer.bin").write_bytes(b"step 20")
    (ckpt2 / "sub" / "extra.json").write_text("{}")
    push_folder_to_hub(single, "me/dsnet", token=token, endpoint=local_hub.url, checkpoint_folder=ckpt2)
    files = set(api.list_repo_files("me/dsnet"))
    assert not any(f.startswith("model-0000") or f.endswith(".index.json") for f in files)
    assert {f for f in files if f.startswith("last-checkpoint/")} == {
        "last-checkpoint/optimizer.bin",
        "last-checkpoint/sub/extra.json",
    }
    assert local_hub.repo_files("me/dsnet")["last-checkpoint/optimizer.bin"] == b"step 20"


# -- hub_strategy ------------------------------------------------------------------------------------


def test_plan_hub_push_follows_trainer_strategies(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint-500"
    assert plan_hub_push("end", "save", checkpoint_dir=ckpt, step=500) == HubPushPlan(push=False)
    for strategy in ("end", "every_save", "checkpoint", "all_checkpoints"):
        assert plan_hub_push(strategy, "end") == HubPushPlan(push=True, commit_message="End of training")
    every = plan_hub_push("every_save", "save", checkpoint_dir=ckpt, step=500)
    assert every == HubPushPlan(push=True, commit_message="Training in progress, step 500")
    last = plan_hub_push("checkpoint", "save", checkpoint_dir=ckpt, step=500)
    assert last.push and last.checkpoint_folder == str(ckpt) and last.checkpoint_path_in_repo == "last-checkpoint"
    every_ckpt = plan_hub_push("all_checkpoints", "save", checkpoint_dir=ckpt)
    assert every_ckpt.checkpoint_path_in_repo == "checkpoint-500"
    assert every_ckpt.commit_message == "Training in progress"
    with pytest.raises(ValueError):
        plan_hub_push("sometimes", "save")
    with pytest.raises(ValueError):
        BackgroundPusher("me/x", strategy="sometimes")


# -- CLI ------------------------------------------------------------------------------------------------


def _load_script():
    """``msaf-hf push`` (``scripts/push_to_hub.py`` is a thin wrapper over it)."""
    return importlib.import_module("msaf_hf.commands.push")


CLI_ARGS = [
    "--private",
    "--branch",
    "release",
    "--commit-message",
    "CLI upload",
    "--dataset-name",
    "Cityscapes",
    "--dataset-id",
    "me/cityscapes",
    "--dataset-split",
    "val",
    "--eval-results",
    json.dumps({"mean_iou": 0.75, "pixel_accuracy": 0.95}),
    "--input-size",
    "768x768",
]


def _check_cli_push(hub: LocalHub, token: str, printed: str) -> None:
    api = HfApi(endpoint=hub.url, token=token)
    release = {b.name: b.target_commit for b in api.list_repo_refs("me/dsnet-cli").branches}["release"]
    assert printed.strip() == f"{hub.url}/me/dsnet-cli/commit/{release}"
    assert api.model_info("me/dsnet-cli").private is True
    files = hub.repo_files("me/dsnet-cli", "release")
    assert set(files) == SHAREABLE - {"eval_results.json", "training_hyperparameters.json"} | {
        "README.md",
        ".gitattributes",
    }
    card = ModelCard(files["README.md"].decode())
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {"mean_iou": 0.75, "pixel_accuracy": 0.95}
    assert card.data.eval_results[0].dataset_split == "val"
    assert "| Input size used | 768 × 768 (H × W) |" in card.text
    assert "README.md" not in hub.repo_files("me/dsnet-cli", "main")  # main untouched


def test_push_to_hub_script(local_hub: LocalHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = _load_script()
    token = local_hub.add_token("me")
    folder = make_model_folder(tmp_path / "out", results=False)
    args = [str(folder), "me/dsnet-cli", *CLI_ARGS, "--endpoint", local_hub.url, "--token", token]

    assert script.main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "| Mean IoU | 75.00% |" in out and "model.safetensors" in out and "optimizer.bin" not in out
    assert local_hub.storage.list_repos() == []  # dry run: nothing uploaded

    assert script.main(args) == 0
    captured = capsys.readouterr()
    _check_cli_push(local_hub, token, captured.out)
    assert token not in captured.out + captured.err

    local_hub.stop()
    assert script.main(args) == 1
    err = capsys.readouterr().err
    assert "push failed" in err and token not in err
    assert script.main([str(tmp_path / "missing"), "me/x"]) == 2


@pytest.mark.slow
def test_push_to_hub_script_subprocess_uses_env(local_hub: LocalHub, tmp_path: Path) -> None:
    """The script run as a program, configured only by HF_ENDPOINT / HF_TOKEN."""
    token = local_hub.add_token("me")
    folder = make_model_folder(tmp_path / "out", results=False)
    env = local_hub.client_env(token=token, hf_home=tmp_path / "home")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "push_to_hub.py"), str(folder), "me/dsnet-cli", *CLI_ARGS],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_cli_push(local_hub, token, proc.stdout)
    assert token not in proc.stdout + proc.stderr


def test_push_space_goes_through_the_hub_package(local_hub: LocalHub, tmp_path: Path) -> None:
    """The demo Space is written by msaf_hf.visualization.space and pushed by msaf_hf.hub (all Hub access there)."""
    from msaf_hf.hub import push_space

    token = local_hub.add_token("me")
    info = push_space("me/dsnet-demo", "me/dsnet", token=token, endpoint=local_hub.url, title="DSNet demo")
    files = set(HfApi(endpoint=local_hub.url, token=token).list_repo_files("me/dsnet-demo", repo_type="space"))
    assert {"app.py", "requirements.txt", "README.md", "dsnet_demo/inference.py"} <= files
    assert info.commit_url.startswith(local_hub.url)
    readme = hf_hub_download("me/dsnet-demo", "README.md", repo_type="space", endpoint=local_hub.url, token=token,
                             cache_dir=tmp_path / "cache")
    assert "me/dsnet" in Path(readme).read_text(encoding="utf-8")
