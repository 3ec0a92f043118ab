"""Sliding windows in pictures: `scripts/predict.py --sliding_window H W [--stride H W]` and the demo's
`Segmenter(sliding_window=...)` predict the argmax of the window-averaged logits at the image's own size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from msaf_hf import DSNetForSemanticSegmentation, DSNetImageProcessor, load_preset
from msaf_hf.commands.predict import main
from msaf_hf.visualization import load_mask
from msaf_hf.visualization.demo import make_predict_fn
from msaf_hf.visualization.inference import load_segmenter


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=5)).eval()
    with torch.no_grad():
        model.decode_head.classifier.weight.mul_(50.0)
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    DSNetImageProcessor(do_resize=True, size={"height": 16, "width": 16}).save_pretrained(folder)  # resizes
    return folder


def _image(path: Path, height: int, width: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return path


def _expected(model_dir: Path, path: Path, window, stride) -> np.ndarray:
    model = DSNetForSemanticSegmentation.from_pretrained(model_dir).eval()
    processor = DSNetImageProcessor.from_pretrained(model_dir)
    pixel_values = processor(images=Image.open(path).convert("RGB"), do_resize=False, return_tensors="pt")
    logits = model.sliding_window_logits(pixel_values["pixel_values"], window, stride, window_batch_size=1)
    return logits[0].argmax(0).numpy()


def test_predict_with_sliding_windows_writes_the_window_averaged_argmax(model_dir, tmp_path, monkeypatch):
    path = _image(tmp_path / "in" / "big.png", 72, 104)
    seen = []
    forward = DSNetForSemanticSegmentation.forward
    monkeypatch.setattr(DSNetForSemanticSegmentation, "forward",
                        lambda self, pixel_values, **kw: seen.append(tuple(pixel_values.shape)) or forward(
                            self, pixel_values, **kw))
    out = tmp_path / "out"
    code = main([str(model_dir), str(path), "--output_dir", str(out), "--device", "cpu", "--no-progress",
                 "--sliding_window", "32", "48", "--stride", "24", "32", "--window_batch_size", "1"])
    assert code == 0
    # The image at its own 72x104 size (not the processor's 16x16), in 32x48 windows: rows 0, 24, 40; columns 0,
    # 32, 56 -> 9 windows, one per forward.
    assert seen == [(1, 3, 32, 48)] * 9
    mask = load_mask(out / "big_mask.png")
    assert mask.shape == (72, 104)
    np.testing.assert_array_equal(mask, _expected(model_dir, path, (32, 48), (24, 32)))
    assert len(np.unique(mask)) > 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--stride", "8", "8"], "--stride needs --sliding_window"),
        (["--sliding_window", "16", "0"], "--sliding_window/--stride: .*window_size must be positive"),
        (["--sliding_window", "16", "16", "--stride", "17", "8"], "stride 17x8 is larger than the window 16x16"),
        (["--sliding_window", "16", "16", "--window_batch_size", "0"], "--window_batch_size must be >= 1"),
        (["--sliding_window", "16", "16", "--fusion-maps"], "--fusion-maps is not available with --sliding_window"),
        (["--sliding_window", "12", "16"], r"--sliding_window/--stride: .*multiples of 8.*16x16"),
    ],
)
def test_bad_sliding_window_flags(model_dir, tmp_path, capsys, flags, message):
    path = _image(tmp_path / "in" / "a.png", 24, 24)
    assert main([str(model_dir), str(path), "--output_dir", str(tmp_path / "out"), "--no-progress", *flags]) == 2
    import re

    assert re.search(message, capsys.readouterr().err)


def test_demo_segmenter_with_sliding_windows(model_dir, tmp_path):
    segmenter = load_segmenter(str(model_dir), device="cpu", sliding_window=(32, 32))
    assert segmenter.stride == (21, 21) and not segmenter.supports_fusion_maps
    path = _image(tmp_path / "demo.png", 40, 72)
    overlay, legend, shares, latency, maps = make_predict_fn(segmenter)(Image.open(path), 0.5, True)
    assert overlay.size == (72, 40) and maps == [] and "72×40" in latency
    result = segmenter.predict([Image.open(path)])[0]
    np.testing.assert_array_equal(result.label_map, _expected(model_dir, path, (32, 32), (21, 21)))
    with pytest.raises(ValueError, match="fusion maps are not available with sliding windows"):
        segmenter.predict([Image.open(path)], fusion_maps=True)


def test_demo_script_passes_the_window_to_the_segmenter_and_rejects_bad_flags(model_dir, monkeypatch, capsys):
    from msaf_hf.commands import demo as demo_script
    built = []

    class NoLaunch:
        def launch(self, **kwargs):
            built.append(kwargs)

    monkeypatch.setattr(demo_script, "build_demo", lambda segmenter, **kw: built.append(segmenter) or NoLaunch())
    assert demo_script.main([str(model_dir), "--device", "cpu", "--sliding_window", "32", "48", "--stride",
                             "16", "24"]) == 0
    assert (built[0].sliding_window, built[0].stride) == ((32, 48), (16, 24))
    for flags, message in ((["--stride", "8", "8"], "--stride needs --sliding_window"),
                           (["--sliding_window", "30", "48"], "multiples of 8")):
        with pytest.raises(SystemExit):
            demo_script.main([str(model_dir), "--device", "cpu", *flags])
        assert message in capsys.readouterr().err
