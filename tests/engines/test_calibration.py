"""int8 calibration data (msaf_hf.engines.quantization.load_calibration_images and scripts/export.py): plain image
folders without labels, prepared by the checkpoint's own image processor (not default ImageNet constants)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from msaf_hf import DSNetForSemanticSegmentation, DSNetImageProcessor, load_preset
from msaf_hf.engines import load_calibration_images

# Far from ImageNet's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225): ImageNet constants give other values.
MEAN, STD = [0.2, 0.7, 0.1], [0.5, 0.1, 0.35]


def _photo_folder(root: Path, count: int = 3) -> tuple[Path, list[PIL.Image.Image]]:
    """A folder of plain RGB PNGs (one in a subfolder), no masks, no class names."""
    rng = np.random.default_rng(0)
    folder = root / "photos"
    (folder / "sub").mkdir(parents=True)
    images = []
    for index in range(count):
        image = PIL.Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
        image.save(folder / ("sub" if index == count - 1 else "") / f"photo_{index}.png")
        images.append(image)
    return folder, images


def _processor(**kwargs) -> DSNetImageProcessor:
    return DSNetImageProcessor(image_mean=MEAN, image_std=STD, **kwargs)


def test_calibration_from_a_plain_image_folder_uses_the_given_processor(tmp_path):
    folder, images = _photo_folder(tmp_path)
    processor = _processor()
    calibration = load_calibration_images(str(folder), processor, num_samples=10)
    assert len(calibration) == len(images)
    for tensor, image in zip(calibration, images, strict=True):  # sorted paths: photo_0, photo_1, sub/photo_2
        expected = processor(images=image, return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6)
        imagenet = DSNetImageProcessor()(images=image, return_tensors="pt")["pixel_values"]
        assert (tensor - imagenet).abs().max() > 0.5  # default constants would not pass the check above
    resized = load_calibration_images(str(folder), processor, num_samples=2, size=(32, 16))
    assert len(resized) == 2 and resized[0].shape == (1, 3, 32, 16)
    assert processor.do_resize is False  # the caller's processor is not changed


def test_calibration_folder_errors_name_the_folder_and_the_fix(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"holds no images .* put the images there"):
        load_calibration_images(str(empty), _processor())
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match=r"image folder '.*nothing' holds no images"):
        load_calibration_images(str(tmp_path / "nothing"), _processor())


@pytest.mark.slow
def test_export_int8_calibrates_on_plain_images_with_the_checkpoints_processor(tmp_path, monkeypatch):
    """scripts/export.py --precision int8 --calibration_dataset FOLDER (plain PNGs; no --void_labels or
    --id2label_file): NNCF receives exactly the checkpoint processor's output."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from msaf_hf.engines import exporting, read_engine_spec

    folder, images = _photo_folder(tmp_path)
    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=3, ohem_min_kept=64)).eval()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    processor = _processor()
    processor.save_pretrained(checkpoint)
    seen: list[torch.Tensor] = []
    real_quantize = exporting.quantize

    def spy(graph, engine, calibration_images, scheme, keep_fp32=None):
        seen.extend(calibration_images)
        return real_quantize(graph, engine, calibration_images, scheme, keep_fp32)

    monkeypatch.setattr(exporting, "quantize", spy)
    out = exporting.main([str(checkpoint), str(tmp_path / "int8"), "--engine", "openvino", "--precision", "int8",
                          "--height", "64", "--width", "64", "--calibration_dataset", str(folder),
                          "--calibration_samples", "3", "--no_check"])
    spec = read_engine_spec(out)
    assert spec.precision == "int8" and spec.quantization["calibration_images"] == 3
    assert len(seen) == 3
    for tensor, image in zip(seen, images, strict=True):
        torch.testing.assert_close(tensor, processor(images=image, return_tensors="pt")["pixel_values"],
                                   rtol=0, atol=1e-6)
    saved = json.loads((out / "preprocessor_config.json").read_text("utf-8"))
    assert saved["image_mean"] == MEAN and saved["image_std"] == STD


def test_export_passes_the_checkpoints_processor_and_ignores_label_flags(tmp_path, monkeypatch, caplog):
    """scripts/export.py hands the checkpoint's processor to the calibration loader; --void_labels/--id2label_file
    (needed by earlier versions) are accepted with a warning that they are not needed."""
    from msaf_hf.engines import exporting

    checkpoint = tmp_path / "checkpoint"
    DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=3)).save_pretrained(checkpoint)
    _processor().save_pretrained(checkpoint)
    calls = []

    class Stop(Exception):
        pass

    def fake_loader(*args, **kwargs):
        calls.append((args, kwargs))
        return [torch.zeros(1, 3, 16, 16)]

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(exporting, "load_calibration_images", fake_loader)
    monkeypatch.setattr(exporting, "export_to_engine", stop)
    with caplog.at_level("WARNING"), pytest.raises(Stop):
        exporting.main([str(checkpoint), str(tmp_path / "out"), "--precision", "int8", "--calibration_dataset",
                        "photos", "--void_labels", "11", "--id2label_file", "camvid_id2label.json"])
    (dataset, processor), kwargs = calls[0]
    assert dataset == "photos" and list(processor.image_mean) == MEAN and list(processor.image_std) == STD
    assert "--void_labels is not needed" in caplog.text and "--id2label_file is not needed" in caplog.text
