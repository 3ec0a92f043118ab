"""Sliding windows on the engine models: a fixed-size ONNX Runtime export segments any image size through padded
windows of its size, OpenVINO through any window, both matching the PyTorch model's windows; scripts/evaluate.py
and scripts/predict.py reach them. Exports take a few seconds of CPU each, so these tests are marked slow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from msaf_hf import DSNetForSemanticSegmentation, DSNetImageProcessor, load_preset
from msaf_hf.modeling_dsnet import sliding_window_logits

pytestmark = pytest.mark.slow

SIZE = (64, 64)


@pytest.fixture(scope="module")
def tiny_model() -> DSNetForSemanticSegmentation:
    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=4)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    from msaf_hf.engines import export_to_engine

    root = tmp_path_factory.mktemp("sliding-engines")
    return {
        engine: export_to_engine(tiny_model, root / engine, engine=engine, height=SIZE[0], width=SIZE[1],
                                 image_processor=DSNetImageProcessor(), check=False)
        for engine in ("onnxruntime", "openvino")
    }


def _relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours - reference).abs().max() / reference.abs().max()).item()


def _image(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(2))


def test_fixed_size_onnxruntime_export_takes_any_image_through_padded_windows(exported, tiny_model):
    from msaf_hf.engines import ONNXRuntimeSegmenter, load_segmentation_model

    model = load_segmentation_model(exported["onnxruntime"], num_threads=1)
    assert isinstance(model, ONNXRuntimeSegmenter) and model.fixed_input_size == SIZE
    with pytest.raises(ValueError, match="takes 64x64 images only"):
        model(pixel_values=_image(1, 3, 96, 160))  # whole-image inference is refused
    # Larger than the window, and lower than it (padded to 64 rows), with uneven strides.
    for shape, stride in (((2, 3, 96, 160), None), ((1, 3, 40, 150), (64, 40))):
        pixel_values = _image(*shape)
        logits = model.sliding_window_logits(pixel_values, stride=stride, window_batch_size=3)
        reference = sliding_window_logits(tiny_model, pixel_values, SIZE, stride or (42, 42), pad_to_window=True)
        assert logits.shape == (shape[0], 4, *shape[-2:])
        assert _relative(logits, reference) <= 1e-4
        assert (logits.argmax(1) == reference.argmax(1)).float().mean() >= 0.999
    # An image of exactly the export size: one window, i.e. the engine's own whole-image logits upsampled.
    pixel_values = _image(1, 3, *SIZE)
    whole = F.interpolate(model(pixel_values=pixel_values).logits, size=SIZE, mode="bilinear", align_corners=False)
    assert torch.equal(model.sliding_window_logits(pixel_values), whole)
    with pytest.raises(ValueError, match="takes 64x64 inputs only, so its window must be 64x64, got 32x32"):
        model.sliding_window_logits(pixel_values, (32, 32))


def test_openvino_sliding_windows_match_torch(exported, tiny_model):
    from msaf_hf.engines import load_segmentation_model

    model = load_segmentation_model(exported["openvino"], num_threads=1)
    assert model.fixed_input_size is None
    pixel_values = _image(1, 3, 72, 100)
    logits = model.sliding_window_logits(pixel_values, (32, 48), (24, 32))
    reference = tiny_model.sliding_window_logits(pixel_values, (32, 48), (24, 32))
    assert _relative(logits, reference) <= 1e-4
    assert (logits.argmax(1) == reference.argmax(1)).float().mean() >= 0.999


def test_evaluate_and_predict_run_a_fixed_size_export_through_windows(exported, tiny_model, tmp_path):
    from msaf_hf.commands.predict import main as predict_main
    from msaf_hf.evaluation import main as evaluate_main
    from msaf_hf.visualization import load_mask

    folder = exported["onnxruntime"]
    payload = evaluate_main(["--model_name_or_path", str(folder), "--synthetic", "--synthetic_num_eval", "2",
                             "--synthetic_num_train", "1", "--synthetic_image_size", "80", "120",
                             "--sliding_window", "64", "64", "--output_file", str(tmp_path / "eval.json")])
    assert payload["eval_size"] == "native" and payload["sliding_window"]["window"] == [64, 64]
    assert payload["num_images"] == 2
    with pytest.raises(ValueError, match="--sliding_window/--stride: .*window must be 64x64, got 32x32"):
        evaluate_main(["--model_name_or_path", str(folder), "--synthetic", "--sliding_window", "32", "32",
                       "--output_file", str(tmp_path / "eval.json")])

    path = tmp_path / "in" / "big.png"
    path.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)).save(path)
    assert predict_main([str(folder), str(path), "--output_dir", str(tmp_path / "out"), "--no-progress",
                         "--sliding_window", "64", "64"]) == 0
    mask = load_mask(tmp_path / "out" / "big_mask.png")
    pixel_values = DSNetImageProcessor()(images=Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"]
    reference = sliding_window_logits(tiny_model, pixel_values, SIZE, (42, 42), pad_to_window=True)[0].argmax(0)
    assert mask.shape == (90, 130) and (mask == reference.numpy()).mean() >= 0.999
