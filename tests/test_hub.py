"""Tests of msaf_hf.hub: model card rendering, pushes and background pushes (against LocalHub)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import HfApi, ModelCard, hf_hub_download, snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError
from huggingface_hub.repocard_data import model_index_to_eval_results
from safetensors.numpy import save_file

from msaf_hf.hub import (
    BackgroundPusher,
    HubPushPlan,
    collect_upload_files,
    load_card_inputs,
    plan_hub_push,
    push_folder_to_hub,
    render_model_card,
)

try:
    from .hub_fixtures import local_hub  # noqa: F401
    from .hub_server import LocalHub
except ImportError:
    from hub_fixtures import local_hub  # noqa: F401
    from hub_server import LocalHub

REPO_ROOT = Path(__file__).resolve().parents[1]
LEAKY_TOKEN = "hf_leakyTokenThatMustNeverBeUploaded0123"

EVAL_RESULTS = {
    "mean_iou": 0.7123456789,
    "pixel_accuracy": 0.9512,
    "mean_class_accuracy": 0.8034,
    "per_class_iou": [0.91, 0.52, float("nan")],
    "dataset_name": "Cityscapes",
    "dataset_id": "me/cityscapes",
    "dataset_split": "validation",
}
HYPERPARAMETERS = {"learning_rate": 0.01, "train_batch_size": 8, "max_steps": 160000, "optimizer": "SGD"}

SHAREABLE = {
    "config.json",
    "preprocessor_config.json",
    "model.safetensors",
    "configuration_dsnet.py",
    "modeling_dsnet.py",
    "eval_results.json",
    "training_hyperparameters.json",
}


def make_model_folder(path: Path, *, seed: int = 0, training_state: bool = True, results: bool = True) -> Path:
    """A tiny saved DSNet folder: config, weights, preprocessor config, remote code (+ state)."""
    path.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "dsnet",
        "architectures": ["DSNetForSemanticSegmentation"],
        "head_type": "fcn",
        "base_channels": 32,
        "fusion_type": "msaf",
        "num_labels": 3,
        "id2label": {"0": "road", "1": "car", "2": "sky"},
        "label2id": {"road": 0, "car": 1, "sky": 2},
        "auto_map": {
            "AutoConfig": "configuration_dsnet.DSNetConfig",
            "AutoModelForSemanticSegmentation": "modeling_dsnet.DSNetForSemanticSegmentation",
        },
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    rng = np.random.default_rng(seed)
    tensors = {
        "stem.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "head.bias": np.zeros(3, np.float32),
        # BatchNorm buffers are stored but are not parameters.
        "stem.bn.running_mean": np.zeros(8, np.float32),
        "stem.bn.running_var": np.ones(8, np.float32),
        "stem.bn.num_batches_tracked": np.zeros((), np.int64),
    }
    save_file(tensors, str(path / "model.safetensors"))
    (path / "preprocessor_config.json").write_text(
        json.dumps({"image_processor_type": "DSNetImageProcessor", "crop_size": {"height": 512, "width": 1024}})
    )
    (path / "configuration_dsnet.py").write_text("# placeholder remote code: DSNetConfig\n")
    (path / "modeling_dsnet.py").write_text("# placeholder remote code: DSNetForSemanticSegmentation\n")
    if results:
        (path / "eval_results.json").write_text(json.dumps(EVAL_RESULTS))
        (path / "training_hyperparameters.json").write_text(json.dumps({**HYPERPARAMETERS, "hub_token": LEAKY_TOKEN}))
    if training_state:
        (path / "optimizer.bin").write_bytes(b"optimizer state")
        (path / "scheduler.pt").write_bytes(b"scheduler state")
        (path / "random_states_0.pkl").write_bytes(b"rng")
        (path / "trainer_state.json").write_text(json.dumps({"global_step": 10}))
        (path / "training_args.json").write_text(json.dumps({"hub_token": LEAKY_TOKEN, "output_dir": str(path)}))
        (path / "train.log").write_text("loss=1.0\n")
        ckpt = path / "checkpoint-10"
        ckpt.mkdir()
        (ckpt / "optimizer.bin").write_bytes(b"ckpt optimizer")
        (ckpt / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
        (path / "runs").mkdir()
        (path / "runs" / "events.out.tfevents").write_bytes(b"tb")
    return path


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    } | {p.relative_to(folder).as_posix() + "/": "dir" for p in folder.rglob("*") if p.is_dir()}


def snapshot_files(hub: LocalHub, repo_id: str, tmp_path: Path, token: str | None, revision: str | None = None) -> dict[str, bytes]:
    snap = snapshot_download(
        repo_id, endpoint=hub.url, cache_dir=tmp_path / f"dl-{time.monotonic_ns()}", token=token, revision=revision
    )
    return {p.relative_to(snap).as_posix(): p.read_bytes() for p in Path(snap).rglob("*") if p.is_file()}


# -- model card ---------------------------------------------------------------------------------


def test_card_renders_all_sections(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "model")
    card = render_model_card(folder, repo_id="me/dsnet-cityscapes", base_model="me/dsnet-imagenet")
    text = str(card)
    for heading in (
        "# dsnet-cityscapes",
        "## Model description",
        "### Variant",
        "## Evaluation results",
        "### Per-class IoU",
        "## Training procedure",
        "### Training hyperparameters",
        "### Training data",
        "## How to use",
        "### With `msaf_hf` installed",
        "### Without `msaf_hf` (remote code)",
        "## Citation",
    ):
        assert heading in text, heading
    # Variant, from config.json / preprocessor_config.json / safetensors header.
    assert "| Head type | fcn |" in text
    assert "| Base width (channels) | 32 |" in text
    assert "| Fusion | MSAF (Multi-Scale Attention Fusion) |" in text
    assert "| Number of classes | 3 |" in text
    assert f"| Parameters | {8 * 3 * 3 * 3 + 3} |" in text
    assert "| Input size used | 512 × 1024 (H × W) |" in text
    # Metrics, per-class table with labels, hyperparameters.
    assert "| Mean IoU | 71.23% |" in text and "| Pixel accuracy | 95.12% |" in text
    assert "| 0 | road | 91.00% |" in text and "| 2 | sky | n/a |" in text
    assert "| learning_rate | 0.01 |" in text and "| max_steps | 160000 |" in text
    assert "Evaluated on **Cityscapes** (`validation` split)" in text
    assert "fine-tuned from [`me/dsnet-imagenet`]" in text
    # Usage with and without msaf_hf, and the citation.
    assert "import msaf_hf" in text
    assert 'AutoModelForSemanticSegmentation.from_pretrained("me/dsnet-cityscapes")' in text
    assert 'AutoImageProcessor.from_pretrained("me/dsnet-cityscapes")' in text
    assert 'pipeline("image-segmentation", model="me/dsnet-cityscapes")' in text
    assert 'from_pretrained("me/dsnet-cityscapes", trust_remote_code=True)' in text
    assert "DSNet: A Novel Way to Use Atrous Convolutions in Semantic Segmentation" in text
    assert "Guo, Zilu and Bian, Liuyang and Wei, Hu and Li, Jingyu and Ni, Huasheng and Huang, Xuan" in text
    assert "2406.03702" in text and "Circuits and Systems for Video Technology" in text
    # No leftover template syntax, no secret, tables not broken by blank lines.
    assert "{{" not in text and "{%" not in text
    assert LEAKY_TOKEN not in text and "hub_token" not in text
    assert "|\n\n|" not in text


def test_card_metadata_round_trips(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "model")
    card = render_model_card(folder, repo_id="me/dsnet-cityscapes", base_model="me/dsnet-imagenet", tags=["cityscapes"])
    loaded = ModelCard(str(card))  # parse the rendered text back, as the Hub / from_pretrained would
    data = loaded.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "image-segmentation"
    assert data.license == "apache-2.0"
    assert data.base_model == "me/dsnet-imagenet"
    assert data.datasets == ["me/cityscapes"]
    assert {"dsnet", "msaf", "semantic-segmentation", "real-time", "cityscapes"} <= set(data.tags)
    assert data.model_name == "dsnet-cityscapes"

    metrics = {r.metric_type: r.metric_value for r in data.eval_results}
    assert metrics == {
        "mean_iou": EVAL_RESULTS["mean_iou"],
        "pixel_accuracy": EVAL_RESULTS["pixel_accuracy"],
        "mean_accuracy": EVAL_RESULTS["mean_class_accuracy"],
    }
    for result in data.eval_results:
        assert result.task_type == "image-segmentation"
        assert result.dataset_type == "me/cityscapes"
        assert result.dataset_name == "Cityscapes"
        assert result.dataset_split == "validation"
    # The raw YAML model-index parses with huggingface_hub's own parser to the same results.
    metadata = yaml.safe_load(str(card).split("---")[1])
    name, results = model_index_to_eval_results(metadata["model-index"])
    assert name == "dsnet-cityscapes"
    assert results == card.data.eval_results == data.eval_results


def test_card_degrades_gracefully_without_results(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "converted", training_state=False, results=False)
    card = render_model_card(folder, repo_id="me/dsnet-base", converted=True)
    text = str(card)
    loaded = ModelCard(text)
    assert not loaded.data.eval_results and "model-index" not in text
    assert loaded.data.base_model is None and loaded.data.datasets is None
    assert "No evaluation results were recorded" in text
    assert "No training hyperparameters were recorded" in text
    assert "converted from a published DSNet checkpoint" in text
    assert "### Per-class IoU" not in text and "### Training data" not in text
    assert "## Citation" in text and "{{" not in text

    # A bare config dict, with keys missing: still a valid card.
    minimal = render_model_card({"model_type": "dsnet"}, repo_id="me/bare")
    assert ModelCard(str(minimal)).data.pipeline_tag == "image-segmentation"
    assert "| Architecture | DSNet |" in str(minimal)
    assert "does not ship the model code" in str(minimal)

    # A config object with to_dict() (like a PretrainedConfig).
    class FakeConfig:
        def to_dict(self) -> dict:
            return {"model_type": "dsnet", "head_type": "aux", "num_labels": 19, "auto_map": {"AutoConfig": "x.Y"}}

    from_object = str(render_model_card(FakeConfig(), repo_id="me/obj", eval_results={"mean_iou": 0.5}))
    assert "| Head type | aux |" in from_object and "trust_remote_code=True" in from_object
    assert ModelCard(from_object).data.eval_results[0].metric_value == 0.5
    assert ModelCard(from_object).data.eval_results[0].dataset_type == "custom"


def test_card_inputs_from_trainer_files(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "m", training_state=False, results=False)
    (folder / "all_results.json").write_text(
        json.dumps({"eval_mean_iou": 0.6, "eval_overall_accuracy": 0.9, "eval_per_category_iou": [0.5, 0.7], "train_loss": 1.2})
    )
    assert load_card_inputs(folder) == {
        "eval_results": {"mean_iou": 0.6, "pixel_accuracy": 0.9, "per_class_iou": [0.5, 0.7]}
    }
    text = str(render_model_card(folder, repo_id="me/m"))
    assert "| Mean IoU | 60.00% |" in text and "| 1 | car | 70.00% |" in text
    # The trainer's eval_results.json: None for absent classes, class names, step, dataset keys.
    trainer_file = {
        "mean_iou": 0.5,
        "pixel_accuracy": 0.8,
        "mean_class_accuracy": 0.6,
        "per_class_iou": [0.4, None],
        "per_class_accuracy": [0.5, None],
        "class_names": ["left", "right"],
        "step": 1200,
        "dataset_name": "toy",
        "dataset_split": "validation",
    }
    card = render_model_card({"model_type": "dsnet"}, repo_id="me/t", eval_results=trainer_file)
    assert "| 0 | left | 40.00% | 50.00% |" in card.text and "| 1 | right | n/a | n/a |" in card.text
    assert "| Evaluated at training step | 1200 |" in card.text
    assert {r.dataset_split for r in card.data.eval_results} == {"validation"}
    # Explicit arguments win over files; read_folder_results=False ignores them.
    explicit = render_model_card(folder, repo_id="me/m", eval_results={"mean_iou": 0.42}, dataset_name="ADE20K")
    assert [r.metric_value for r in explicit.data.eval_results] == [0.42]
    assert not render_model_card(folder, repo_id="me/m", read_folder_results=False).data.eval_results


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
        hf_hub_download("me/secret-dsnet", "config.json", endpoint=local_hub.url, cache_dir=tmp_path / "anon", token=False)
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
    main = push_folder_to_hub(make_model_folder(tmp_path / "a", seed=0), "me/dsnet", token=token, endpoint=local_hub.url)
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
    (sharded / "model-00002-of-00002.safetensors").write_bytes((sharded / "model-00001-of-00002.safetensors").read_bytes())
    (sharded / "model.safetensors.index.json").write_text("{}")
    ckpt1 = tmp_path / "checkpoint-10"
    ckpt1.mkdir()
    (ckpt1 / "optimizer.bin").write_bytes(b"step 10")
    (ckpt1 / "scheduler.pt").write_bytes(b"sched")
    (ckpt1 / "random_states_0.pkl").write_bytes(b"rng")  # never uploaded
    push_folder_to_hub(sharded, "me/dsnet", token=token, endpoint=local_hub.url, checkpoint_folder=ckpt1)
    files = set(api.list_repo_files("me/dsnet"))
    assert {"model-00001-of-00002.safetensors", "last-checkpoint/optimizer.bin", "last-checkpoint/scheduler.pt"} <= files
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


# -- BackgroundPusher ---------------------------------------------------------------------------------


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


# -- CLI ------------------------------------------------------------------------------------------------


def _load_script():
    spec = importlib.util.spec_from_file_location("push_to_hub_script", REPO_ROOT / "scripts" / "push_to_hub.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_metric_values_survive_yaml_exactly() -> None:
    values = {"mean_iou": 1 / 3, "pixel_accuracy": math.pi / 4, "mean_class_accuracy": 0.1 + 0.2}
    card = render_model_card({"model_type": "dsnet"}, repo_id="me/x", eval_results=values, dataset_name="X")
    parsed = {r.metric_type: r.metric_value for r in ModelCard(str(card)).data.eval_results}
    assert parsed == {"mean_iou": 1 / 3, "pixel_accuracy": math.pi / 4, "mean_accuracy": 0.1 + 0.2}
