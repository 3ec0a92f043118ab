"""Sliding-window inference (msaf_hf.modeling_dsnet.sliding_window_logits and the models' `sliding_window_logits`):
exactly whole-image inference when one window covers the image, every pixel averaged over the windows covering it
when windows overlap or stop at the edges, padding for fixed-size models, batches of windows, progress, and clear
errors for bad windows and strides."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from msaf_hf import DSNetForSemanticSegmentation, load_preset
from msaf_hf.modeling_dsnet import check_sliding_window, default_window_stride, sliding_window_logits


@pytest.fixture(scope="module")
def model() -> DSNetForSemanticSegmentation:
    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=5)).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics: logits vary over the image and between windows
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


class RecordingModel(torch.nn.Module):
    """Returns `logits_fn(crops)` and records every batch of windows it sees (shape and the crops themselves)."""

    def __init__(self, logits_fn):
        super().__init__()
        self.logits_fn = logits_fn
        self.batches: list[torch.Tensor] = []

    def forward(self, pixel_values):
        self.batches.append(pixel_values.clone())
        return self.logits_fn(pixel_values)


def reference_sliding_window(forward, image, window, stride, pad_to_window=False):
    """A plain re-statement of the method, one window at a time, with an explicit H x W count map."""
    _, _, height, width = image.shape
    (window_h, window_w), (stride_h, stride_w) = window, stride

    def starts(size, length, step):
        if size <= length:
            return [0]
        positions = list(range(0, size - length, step))
        return positions + [size - length]  # the last window ends at the edge

    total, count = None, torch.zeros(height, width)
    for top in starts(height, window_h, stride_h):
        for left in starts(width, window_w, stride_w):
            crop = image[:, :, top : top + window_h, left : left + window_w]
            crop_h, crop_w = crop.shape[-2:]
            if pad_to_window:
                crop = F.pad(crop, (0, window_w - crop_w, 0, window_h - crop_h))
            logits = F.interpolate(forward(crop), size=crop.shape[-2:], mode="bilinear", align_corners=False)
            logits = logits[..., :crop_h, :crop_w]
            if total is None:
                total = torch.zeros(image.shape[0], logits.shape[1], height, width)
            total[:, :, top : top + crop_h, left : left + crop_w] += logits
            count[top : top + crop_h, left : left + crop_w] += 1
    assert count.min() >= 1
    return total / count


def _image(*shape, seed=1):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------------------
# What it computes
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window_batch_size", [1, 4])
def test_one_window_covering_the_image_is_exactly_whole_image_inference(model, window_batch_size):
    pixel_values = _image(2, 3, 48, 80)
    # The same batches as the windows (convolutions may round differently for another batch size).
    with torch.no_grad():
        whole = torch.cat([
            F.interpolate(model(pixel_values=batch).logits, size=(48, 80), mode="bilinear", align_corners=False)
            for batch in pixel_values.split(window_batch_size)
        ])
    windowed = model.sliding_window_logits(pixel_values, (48, 80), window_batch_size=window_batch_size)
    assert windowed.shape == (2, 5, 48, 80) and windowed.dtype == torch.float32
    assert torch.equal(windowed, whole)
    # A window larger than the image shrinks to it (the PyTorch model takes any size): still whole-image inference.
    assert torch.equal(model.sliding_window_logits(pixel_values, (64, 128), window_batch_size=window_batch_size),
                       whole)


@pytest.mark.parametrize(
    ("size", "window", "stride"),
    [((72, 100), (32, 48), (24, 40)), ((64, 96), (32, 32), (32, 32)), ((40, 200), (64, 64), (16, 48))],
)
def test_overlapping_windows_match_a_window_by_window_reference_on_dsnet(model, size, window, stride):
    """Strides that do not divide the size, windows that tile exactly, and an image lower than the window."""
    pixel_values = _image(1, 3, *size)
    with torch.no_grad():
        expected = reference_sliding_window(lambda crop: model(pixel_values=crop).logits, pixel_values, window,
                                            stride)
    # One window per forward, as the reference: the same convolutions, so only the summing order may round.
    windowed = model.sliding_window_logits(pixel_values, window, stride, window_batch_size=1)
    assert windowed.shape == expected.shape
    scale = expected.abs().max().item()
    torch.testing.assert_close(windowed, expected, rtol=0, atol=1e-6 * scale)
    # Batches of windows: float32 rounding of the convolutions at another batch size, nothing more.
    batched = model.sliding_window_logits(pixel_values, window, stride, window_batch_size=3)
    torch.testing.assert_close(batched, expected, rtol=0, atol=1e-4 * scale)
    # The windows are what the model actually saw at each position: not whole-image inference.
    with torch.no_grad():
        whole = F.interpolate(model(pixel_values=pixel_values).logits, size=size, mode="bilinear",
                              align_corners=False)
    assert (windowed - whole).abs().max() > 1e-3


def test_window_positions_and_per_pixel_counts_at_edges_and_uneven_strides():
    """Each window returns its own index as a constant logit: the result at a pixel must be the mean of the indices
    of exactly the windows covering it, so a pixel counted twice (or missed) shows."""
    seen = []

    def window_index(crops):
        indices = torch.arange(len(seen), len(seen) + len(crops), dtype=torch.float32)
        seen.extend(range(len(seen), len(seen) + len(crops)))
        return indices[:, None, None, None].expand(len(crops), 1, *crops.shape[-2:])

    recorder = RecordingModel(window_index)
    height, width, window, stride = 50, 77, (16, 24), (10, 17)
    pixel_values = torch.zeros(1, 1, height, width)
    # Position encoding in the image: row * 1000 + column, so each crop tells where it was taken.
    pixel_values[0, 0] = torch.arange(height)[:, None] * 1000.0 + torch.arange(width)[None, :]
    result = sliding_window_logits(recorder, pixel_values, window, stride, window_batch_size=5)
    crops = torch.cat(recorder.batches)
    tops = [int(c[0, 0, 0]) // 1000 for c in crops]
    lefts = [int(c[0, 0, 0]) % 1000 for c in crops]
    rows, columns = [0, 10, 20, 30, 34], [0, 17, 34, 51, 53]  # the last window of each side ends at the edge
    assert sorted(set(tops)) == rows and sorted(set(lefts)) == columns
    assert len(crops) == len(rows) * len(columns) and all(c.shape[-2:] == window for c in crops)
    expected_sum, expected_count = torch.zeros(height, width), torch.zeros(height, width)
    for index, (top, left) in enumerate(zip(tops, lefts, strict=True)):
        expected_sum[top : top + 16, left : left + 24] += index
        expected_count[top : top + 16, left : left + 24] += 1
    assert expected_count.min() == 1 and expected_count.max() == 9  # every pixel covered, 3 x 3 overlaps
    torch.testing.assert_close(result[0, 0], expected_sum / expected_count, rtol=0, atol=1e-5)


def test_averaging_an_identity_model_gives_back_the_image_and_constants_stay_constant():
    pixel_values = torch.randint(-50, 50, (2, 3, 37, 61)).float()  # integers: sums and means are exact
    identity = RecordingModel(lambda crops: crops)
    torch.testing.assert_close(sliding_window_logits(identity, pixel_values, (16, 16), (5, 9)), pixel_values,
                               rtol=0, atol=1e-5)
    ones = RecordingModel(lambda crops: torch.ones(len(crops), 2, crops.shape[-2] // 4, crops.shape[-1] // 4))
    assert torch.equal(sliding_window_logits(ones, pixel_values, (16, 16), (5, 9)), torch.ones(2, 2, 37, 61))


def test_windows_run_in_batches_and_only_a_batch_at_a_time():
    recorder = RecordingModel(lambda crops: crops[:, :1])
    pixel_values = _image(2, 3, 40, 40)
    sliding_window_logits(recorder, pixel_values, (16, 16), (8, 8), window_batch_size=7)
    windows = 2 * 4 * 4  # two images, 4 x 4 windows each
    sizes = [len(batch) for batch in recorder.batches]
    assert sum(sizes) == windows and max(sizes) == 7 and len(sizes) == math.ceil(windows / 7)


def test_fixed_size_models_get_padded_windows_cropped_back():
    recorder = RecordingModel(lambda crops: crops[:, :2] + 1.0)
    pixel_values = _image(1, 3, 20, 70)  # lower than the window: padded at the bottom
    result = sliding_window_logits(recorder, pixel_values, (32, 32), (32, 24), pad_to_window=True, pad_value=-9.0)
    crops = torch.cat(recorder.batches)
    assert all(c.shape[-2:] == (32, 32) for c in crops) and len(crops) == 3
    assert (crops[:, :, 20:] == -9.0).all()  # the padding the model saw
    torch.testing.assert_close(result, pixel_values[:, :2] + 1.0, rtol=0, atol=1e-6)  # and none of it came back


def test_progress_bar_and_callback():
    calls = []
    recorder = RecordingModel(lambda crops: crops)
    sliding_window_logits(recorder, _image(1, 3, 24, 24), (8, 8), (8, 8), window_batch_size=4,
                          progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 9), (8, 9), (9, 9)]
    sliding_window_logits(recorder, _image(1, 3, 24, 24), (8, 8), progress=True)  # the tqdm bar runs and closes


def test_default_stride_is_two_thirds_of_the_window():
    assert default_window_stride((184, 240)) == (122, 160)
    assert check_sliding_window((512, 1024)) == ((512, 1024), (341, 682))
    assert check_sliding_window(64, 32) == ((64, 64), (32, 32))


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "stride", "message"),
    [
        ((0, 64), None, r"window_size must be positive, got 0x64"),
        ((64, -8), None, r"window_size must be positive"),
        ((64, 64), (0, 8), r"stride must be positive, got 0x8"),
        ((64, 64), (65, 32), r"stride 65x32 is larger than the window 64x64"),
        ((64, 64, 3), None, r"window_size must be an int or \(height, width\)"),
        ((64.0, 64), None, r"window_size must be an int or \(height, width\)"),
    ],
)
def test_bad_windows_and_strides_are_clear_errors(model, window, stride, message):
    with pytest.raises(ValueError, match=message):
        check_sliding_window(window, stride)
    with pytest.raises(ValueError, match=message):
        model.sliding_window_logits(torch.zeros(1, 3, 64, 64), window, stride)


def test_dsnet_windows_are_multiples_of_8_and_other_errors(model):
    with pytest.raises(ValueError, match=r"window 60x64 must have sides that are multiples of 8.*e\.g\. 64x64"):
        model.sliding_window_logits(torch.zeros(1, 3, 64, 64), (60, 64))
    with pytest.raises(ValueError, match="pass window_size"):
        model.sliding_window_logits(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="window_batch_size must be at least 1"):
        model.sliding_window_logits(torch.zeros(1, 3, 64, 64), (32, 32), window_batch_size=0)
    with pytest.raises(ValueError, match=r"must be \(batch, channels, height, width\), got \(3, 64, 64\)"):
        model.sliding_window_logits(torch.zeros(3, 64, 64), (32, 32))


def test_a_fixed_size_model_defaults_to_its_size_and_refuses_another(model, monkeypatch):
    monkeypatch.setattr(type(model), "fixed_input_size", property(lambda self: (32, 48)))
    assert model.resolve_sliding_window() == ((32, 48), (21, 32))
    with pytest.raises(ValueError, match=r"takes 32x48 inputs only, so its window must be 32x48, got 64x64"):
        model.sliding_window_logits(torch.zeros(1, 3, 64, 64), (64, 64))
    seen = []
    forward = type(model).forward
    monkeypatch.setattr(type(model), "forward",
                        lambda self, pixel_values, **kw: seen.append(tuple(pixel_values.shape[-2:])) or forward(
                            self, pixel_values, **kw))
    result = model.sliding_window_logits(_image(1, 3, 24, 100))  # lower than the window: padded to 32x48
    assert result.shape == (1, 5, 24, 100) and set(seen) == {(32, 48)}


def test_image_segmentation_pipeline_runs_windows_through_with_sliding_window(model, transformers_log_messages):
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    from msaf_hf import DSNetImageProcessor

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8))
    processor = DSNetImageProcessor(do_resize=False)
    windowed = model.with_sliding_window((32, 48), (16, 24))
    assert windowed.config is model.config and windowed.window_size == (32, 48)
    segments = pipeline("image-segmentation", model=windowed, image_processor=processor)(image)
    # transformers' model-type check knows the wrapper
    assert not [m for m in transformers_log_messages if "is not supported" in m]
    pixel_values = processor(images=image, return_tensors="pt")["pixel_values"]
    expected = model.sliding_window_logits(pixel_values, (32, 48), (16, 24))[0].argmax(0).numpy()
    assert len(segments) == len(np.unique(expected)) > 1
    for segment in segments:
        label = model.config.label2id[segment["label"]]
        np.testing.assert_array_equal(np.array(segment["mask"]) > 0, expected == label)
    with pytest.raises(ValueError, match="multiples of 8"):
        model.with_sliding_window((30, 48))
    with pytest.raises(ValueError, match=r"logits only; \['labels'\]"):
        windowed(pixel_values=pixel_values, labels=torch.zeros(1, 70, 90, dtype=torch.long))
