"""scripts/predict.py --dataset/--split: a dataset split (Hub-style parquet folder, folder of plain images) read with
msaf_hf.data.load_split and prepared by the checkpoint's image processor."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from msaf_hf import DSNetForSemanticSegmentation, DSNetImageProcessor, load_preset
from msaf_hf.commands.predict import main

MEAN, STD = [0.7, 0.2, 0.5], [0.1, 0.3, 0.2]  # far from ImageNet's: its constants would give other masks


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=5, ohem_min_kept=64)).eval()
    with torch.no_grad():  # a random tiny model predicts nearly one class; louder logits make the maps varied
        model.decode_head.classifier.weight.mul_(50.0)
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    DSNetImageProcessor(image_mean=MEAN, image_std=STD).save_pretrained(folder)
    return folder


def _arrays(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (24 + 8 * k, 32, 3), dtype=np.uint8) for k in range(count)]


def _reference(model_dir: Path, array: np.ndarray) -> np.ndarray:
    model = DSNetForSemanticSegmentation.from_pretrained(model_dir).eval()
    processor = DSNetImageProcessor.from_pretrained(model_dir)
    image = Image.fromarray(array)
    with torch.no_grad():
        outputs = model(**processor(images=image, return_tensors="pt"))
    return processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0].numpy()


def _run(model_dir: Path, out: Path, *extra: str) -> int:
    return main([str(model_dir), "--output_dir", str(out), "--device", "cpu", "--no-progress", *extra])


def test_predict_a_hub_style_dataset_split(model_dir, tmp_path, capsys):
    import datasets

    arrays = _arrays(3)
    folder = tmp_path / "hub"
    folder.mkdir()
    rows = {"image": [], "name": []}
    for index, array in enumerate(arrays):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        rows["image"].append({"bytes": buffer.getvalue(), "path": None})
        rows["name"].append(f"frame_{index}.png" if index < 2 else "frame_0.png")  # a repeated name
    features = datasets.Features({"image": datasets.Image(), "name": datasets.Value("string")})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    out = tmp_path / "out"
    assert _run(model_dir, out, "--dataset", str(folder), "--split", "test") == 0
    for name, array in zip(["frame_0", "frame_1", "frame_0-2"], arrays, strict=True):
        expected = _reference(model_dir, array)
        assert len(np.unique(expected)) >= 2  # a constant map would match by luck
        with Image.open(out / f"{name}_mask.png") as mask:
            np.testing.assert_array_equal(np.asarray(mask), expected)
    assert "3 images and 0 video frames" in capsys.readouterr().out
    # A split that is not there: a clear error naming it and the flag.
    assert _run(model_dir, tmp_path / "o2", "--dataset", str(folder), "--split", "validation") == 2
    assert "split 'validation' not found (available: ['test']); pass --split <split>" in capsys.readouterr().err


def test_predict_a_folder_of_plain_images_as_a_dataset(model_dir, tmp_path, capsys):
    arrays = _arrays(2)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(arrays[0]).save(folder / "a.png")
    Image.fromarray(arrays[1]).save(folder / "sub" / "b.png")
    out = tmp_path / "out"
    assert _run(model_dir, out, "--dataset", str(folder)) == 0
    for name, array in (("a", arrays[0]), ("sub/b", arrays[1])):
        with Image.open(out / f"{name}_mask.png") as mask:
            np.testing.assert_array_equal(np.asarray(mask), _reference(model_dir, array))
    assert _run(model_dir, folder / "results", "--dataset", str(folder)) == 2  # outputs among the inputs
    assert "inside the input folder" in capsys.readouterr().err
    assert _run(model_dir, tmp_path / "o3") == 2
    assert "or --dataset" in capsys.readouterr().err
