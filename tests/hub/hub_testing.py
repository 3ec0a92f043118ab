"""Shared helpers of the msaf_hf.hub tests: a tiny saved DSNet folder, folder digests, Hub snapshots."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
from hub_server import LocalHub
from huggingface_hub import snapshot_download
from safetensors.numpy import save_file

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


def snapshot_files(
    hub: LocalHub, repo_id: str, tmp_path: Path, token: str | None, revision: str | None = None
) -> dict[str, bytes]:
    snap = snapshot_download(
        repo_id, endpoint=hub.url, cache_dir=tmp_path / f"dl-{time.monotonic_ns()}", token=token, revision=revision
    )
    return {p.relative_to(snap).as_posix(): p.read_bytes() for p in Path(snap).rglob("*") if p.is_file()}

