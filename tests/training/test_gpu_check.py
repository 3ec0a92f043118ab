"""scripts/gpu_check.py: its logic on the CPU at tiny sizes (the GPU run itself needs a CUDA machine)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_data_reads_as_cityscapes_with_19_classes(gpu_check, tmp_path):
    from msaf_hf.data.sources import cityscapes_source

    root = gpu_check.make_cityscapes_like(tmp_path / "cs", num_train=3, num_val=1, size=(32, 64))
    source, unmatched = cityscapes_source(str(root), "train", 255, skip_bad=False)
    assert unmatched == 0 and len(source.pairs) == 3
    label_ids = np.concatenate([np.unique(np.array(Image.open(label))) for _, label in source.pairs])
    train_ids = np.unique(source.lut[label_ids])
    assert set(train_ids) <= set(range(19)) | {255} and len(set(train_ids) - {255}) > 3
    assert Image.open(source.pairs[0][0]).size == (64, 32)


def test_recipe_arguments_are_the_cityscapes_recipe_shortened(gpu_check, tmp_path):
    from msaf_hf.training.arguments import parse_args

    size = gpu_check.sizes(tiny=False)
    argv = gpu_check.recipe_arguments(tmp_path / "cs", tmp_path / "out", 50, "fp16", size, cpu=False)
    model_args, data_args, args = parse_args(argv)
    assert list(data_args.crop_size) == [1024, 1024] and data_args.base_size == 2048
    assert (args.max_steps, args.mixed_precision, args.per_device_train_batch_size) == (50, "fp16", 3)
    assert (args.optimizer, args.learning_rate, args.lr_scheduler_type) == ("sgd", 0.01, "poly")
    assert "131072" in json.dumps(model_args.config_overrides)  # the recipe's OHEM, untouched
    assert gpu_check.sizes(tiny=False)["fps_shape"] == (1, 3, 1024, 2048)


def test_without_a_gpu_the_full_check_refuses_and_names_tiny(gpu_check, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the full check would run")
    with pytest.raises(SystemExit, match="--tiny"):
        gpu_check.run_checks(False, 1, tmp_path / "r.json", 10.0, tmp_path)


@pytest.mark.slow
def test_tiny_check_runs_every_part_and_writes_the_report(tmp_path):
    report_path = tmp_path / "report.json"
    command = [sys.executable, str(SCRIPT), "--tiny", "--steps", "2", "--skip_compile", "--output", str(report_path),
               "--work_dir", str(tmp_path / "work")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["ok"] is True and report["tiny"] is True
    parts = report["parts"]
    assert set(parts) == {"data", "train_bf16", "train_fp16", "multi_gpu", "evaluate", "fps"}
    for precision in ("bf16", "fp16"):
        train = parts[f"train_{precision}"]
        assert train["steps"] == 2 and len(train["losses"]) == 2 and train["all_losses_finite"]
        assert len(train["scales"]) == 2 and Path(train["final_dir"], "config.json").is_file()
    assert parts["train_bf16"]["grad_scaler"] is False
    assert parts["evaluate"]["num_images"] == 2 and 0.0 <= parts["evaluate"]["mean_iou"] <= 1.0
    assert [row["variant"] for row in parts["fps"]["rows"]] == ["eval", "deploy"]
    assert all(row["fps"] > 0 for row in parts["fps"]["rows"]) and parts["fps"]["paper_fps"] == 81.9
