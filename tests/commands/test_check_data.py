"""``msaf-hf check-data``: planted bad masks are named and fail the check; clean data passes; no matplotlib: no
chart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from msaf_hf.commands.check_data import main as check_data

REPO_ROOT = Path(__file__).resolve().parents[2]
COLORS = {0: [128, 128, 128], 1: [128, 0, 0], 2: [0, 128, 192]}


def _folder(root: Path, colour: bool = False, count: int = 5) -> tuple[Path, Path]:
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(0)
    lut = np.array([COLORS[i] for i in range(3)], np.uint8)
    for i in range(count):
        PIL.Image.fromarray(rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)).save(images / f"im{i}.png")
        label = rng.integers(0, 3, (16, 24)).astype(np.uint8)
        PIL.Image.fromarray(lut[label] if colour else label).save(masks / f"im{i}.png")
    return images, masks


def _run(tmp_path: Path, images: Path, masks: Path, *extra: str) -> tuple[int, dict]:
    output_dir = tmp_path / "check"
    status = check_data(["--image_dir", str(images), "--mask_dir", str(masks), "--eval_split", "none",
                         "--output_dir", str(output_dir), "--no_progress", *extra])
    return status, json.loads((output_dir / "data_check.json").read_text())


def test_clean_data_passes(tmp_path, capsys):
    images, masks = _folder(tmp_path)
    status, report = _run(tmp_path, images, masks, "--num_labels", "3")
    assert status == 0 and report["ok"] and report["failures"] == []
    train = report["splits"]["train"]
    assert train["examples"] == 5 and train["bad_examples"] == 0
    assert sum(c["pixels"] for c in train["classes"]) == 5 * 16 * 24
    assert train["image_modes"] == {"RGB": 5}
    assert len(report["suggested_class_weights"]) == 3
    assert (tmp_path / "check" / "preview.png").is_file()
    assert "OK: training can run on this data." in capsys.readouterr().out


def test_planted_bad_masks_are_named_and_fail_the_check(tmp_path, capsys):
    images, masks = _folder(tmp_path)
    outside = np.zeros((16, 24), np.uint8)
    outside[:2, :3] = 7  # 6 pixels of a value that is no class
    PIL.Image.fromarray(outside).save(masks / "im1.png")
    PIL.Image.fromarray(np.zeros((8, 24), np.uint8)).save(masks / "im2.png")  # size mismatch
    whole = (masks / "im3.png").read_bytes()
    (masks / "im3.png").write_bytes(whole[: len(whole) // 2])  # truncated file
    status, report = _run(tmp_path, images, masks, "--num_labels", "3")
    assert status == 1 and not report["ok"]
    problems = report["splits"]["train"]["problems"]
    assert [e["name"] for e in problems["label_out_of_range"]["examples"]] == ["im1.png"]
    assert [e["name"] for e in problems["size_mismatch"]["examples"]] == ["im2.png"]
    assert [e["name"] for e in problems["unreadable_label"]["examples"]] == ["im3.png"]
    assert report["splits"]["train"]["values_outside_classes"]["7"] == {"pixels": 6, "examples": 1,
                                                                         "files": ["im1.png"]}
    captured = capsys.readouterr()
    for name in ("im1.png", "im2.png", "im3.png"):
        assert name in captured.out
    assert "Training would fail" in captured.err
    # The same data with --skip_bad_examples: training would skip them, so the check passes (still listing them).
    status, report = _run(tmp_path, images, masks, "--num_labels", "3", "--skip_bad_examples")
    assert status == 0 and report["splits"]["train"]["bad_examples"] == 3


def test_unknown_colour_is_named_and_fails_the_check(tmp_path, capsys):
    images, masks = _folder(tmp_path, colour=True)
    rgb = np.asarray(PIL.Image.open(masks / "im4.png")).copy()
    rgb[0, :5] = [9, 9, 9]
    PIL.Image.fromarray(rgb).save(masks / "im4.png")
    table = tmp_path / "colors.json"
    table.write_text(json.dumps({str(k): v for k, v in COLORS.items()}))
    status, report = _run(tmp_path, images, masks, "--label_colors", str(table))
    assert status == 1
    (example,) = report["splits"]["train"]["problems"]["unknown_label_color"]["examples"]
    assert example["name"] == "im4.png" and "(9, 9, 9) #090909 (5 pixels)" in example["detail"]
    assert "im4.png" in example["detail"]  # the mask file itself
    status, report = _run(tmp_path, images, masks, "--label_colors", str(table), "--unknown_colors_to_ignore")
    assert status == 0 and report["unknown_colors_ignored"] == {"pixels": 5, "files": 1}
    assert report["splits"]["train"]["ignored_pixels"]["pixels"] == 5


def test_unopenable_data_exits_2(tmp_path, capsys):
    assert check_data(["--image_dir", str(tmp_path / "nope"), "--mask_dir", str(tmp_path), "--output_dir",
                       str(tmp_path / "c")]) == 2
    assert "nope" in capsys.readouterr().err


def test_without_matplotlib_the_chart_is_skipped_and_said(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    images, masks = _folder(tmp_path)
    status, report = _run(tmp_path, images, masks, "--num_labels", "3")
    assert status == 0 and report["pictures"]["class_frequencies"] is None
    assert report["pictures"]["preview"] is not None
    assert "matplotlib is not installed" in capsys.readouterr().out


@pytest.mark.slow
def test_the_script_wrapper_runs(tmp_path):
    images, masks = _folder(tmp_path)
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "check_data.py"), "--image_dir", str(images), "--mask_dir",
         str(masks), "--eval_split", "none", "--num_labels", "2", "--output_dir", str(tmp_path / "c"), "--no_progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stderr  # class 2 is outside 2 classes
    assert "label_out_of_range" in result.stdout


def test_label_colors_model_reads_the_models_colours(tmp_path, tiny_config, capsys):
    from msaf_hf import DSNetForSemanticSegmentation

    tiny_config.num_labels = 3
    tiny_config.id2label = {0: "grey", 1: "red", 2: "blue"}
    tiny_config.label2id = {v: k for k, v in tiny_config.id2label.items()}
    tiny_config.label2color = COLORS
    DSNetForSemanticSegmentation(tiny_config).save_pretrained(tmp_path / "model")
    images, masks = _folder(tmp_path / "data", colour=True)
    status, report = _run(tmp_path, images, masks, "--label_colors", "model", "--model_name_or_path",
                          str(tmp_path / "model"))
    assert status == 0 and report["id2label"] == {"0": "grey", "1": "red", "2": "blue"}
    assert sum(c["pixels"] for c in report["splits"]["train"]["classes"]) == 5 * 16 * 24
    assert check_data(["--image_dir", str(images), "--mask_dir", str(masks), "--label_colors", "model",
                       "--output_dir", str(tmp_path / "c")]) == 2
    assert "--model_name_or_path" in capsys.readouterr().err
