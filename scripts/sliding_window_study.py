"""Where sliding-window inference loses accuracy against whole-image inference (README, "Large images").

One pass over a Hub-layout dataset folder (`{split}-*.parquet` with `image` and `label` columns, CamVid's layout)
scores, against the same labels, the PyTorch model:

  whole           on the whole image
  windows         through sliding windows (`sliding_window_logits`: logits averaged where windows overlap)
  windows+view    the windows averaged with a view of the whole image resized to the window
  gaussian        windows weighted by a Gaussian centred on each (sigma = 1/8 of the window, nnU-Net's weighting)
  pools:global    diagnostic: the windows, each given the whole image's global (1x1) pooled contexts
  pools:all       diagnostic: the windows given every pooled context of the whole image (MSAF's 1x1 and grids, the
                  pyramid's 1x1), each grid cut to the window's part of the image

    python scripts/sliding_window_study.py MODEL data/camvid [--window 184 240] [--stride 122 160] [--limit 101]

Prints a Markdown table (mIoU and the difference to whole-image). The study replaces
`torch.nn.functional.adaptive_avg_pool2d` while it runs (it behaves as torch's except in the two diagnostics, which
are for understanding, not for inference).
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from msaf_hf import DSNetForSemanticSegmentation, SegmentationConfusionMatrix
from msaf_hf.image_processing_dsnet import DSNetImageProcessor
from msaf_hf.modeling_dsnet import check_sliding_window, sliding_window_logits, window_starts

METHODS = ("whole", "windows", "windows+view", "gaussian", "pools:global", "pools:all")
IGNORE_INDEX = 255


def read_examples(folder: Path, split: str, void_label: int | None, limit: int | None) -> Iterator[tuple]:
    """(RGB PIL image, label tensor with `void_label` as 255) for the split's rows, in file order."""
    import pyarrow.parquet as pq

    files = sorted(folder.glob(f"{split}-*.parquet"))
    if not files:
        raise SystemExit(f"sliding_window_study: no {split}-*.parquet in {folder}; pass a Hub-layout dataset folder.")
    count = 0
    for file in files:
        for row in pq.read_table(file, columns=["image", "label"]).to_pylist():
            if limit is not None and count >= limit:
                return
            image = PIL.Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
            label = torch.from_numpy(np.array(PIL.Image.open(io.BytesIO(row["label"]["bytes"])))).long()
            if void_label is not None:
                label[label == void_label] = IGNORE_INDEX
            yield image, label
            count += 1


def gaussian_weights(height: int, width: int, sigma_fraction: float = 0.125) -> torch.Tensor:
    def axis(n: int) -> torch.Tensor:
        position = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        return torch.exp(-(position**2) / (2 * (sigma_fraction * n) ** 2))

    return axis(height)[:, None] * axis(width)[None, :]


class WholeImagePools:
    """Records every adaptive average pool of a whole-image forward, then hands each window the whole image's pooled
    values in the same call order: the 1x1 pools as they are and, with `grids=True`, the grids cut to the window's
    part of the image (the grid upsampled to the pooled feature map, cropped, pooled back to the grid's size). Outside
    `record`/`window_logits` the installed pool is torch's."""

    def __init__(self):
        self.grids = False
        self.recorded: list[tuple[tuple[int, int], torch.Tensor]] = []
        self.mode = "off"
        self.calls = 0
        self.image_size = (0, 0)
        self.window = (0, 0, 0, 0)

    @contextlib.contextmanager
    def installed(self) -> Iterator[WholeImagePools]:
        original = F.adaptive_avg_pool2d

        def pool(hidden_states: torch.Tensor, output_size):
            pooled = original(hidden_states, output_size)
            if self.mode == "record":
                self.recorded.append((tuple(hidden_states.shape[-2:]), pooled))
                return pooled
            if self.mode != "replay":
                return pooled
            feature_size, whole = self.recorded[self.calls]
            self.calls += 1
            if whole.shape[-2:] == (1, 1):
                return whole.expand_as(pooled).contiguous()
            if not self.grids:
                return pooled
            (height, width), (top, left, window_h, window_w) = self.image_size, self.window
            fh, fw = feature_size
            rows = slice(round(top * fh / height), round((top + window_h) * fh / height))
            columns = slice(round(left * fw / width), round((left + window_w) * fw / width))
            if (rows.start, rows.stop, columns.start, columns.stop) == (0, fh, 0, fw):
                return whole  # the window is the image: exactly the whole image's grid
            upsampled = F.interpolate(whole, size=feature_size, mode="nearest")[..., rows, columns]
            return original(upsampled, pooled.shape[-2:])

        F.adaptive_avg_pool2d = pool
        try:
            yield self
        finally:
            F.adaptive_avg_pool2d = original

    def record(self, model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """The whole image's logits; its pools are kept for the windows."""
        self.recorded, self.mode, self.image_size = [], "record", tuple(pixel_values.shape[-2:])
        try:
            return model(pixel_values=pixel_values).logits
        finally:
            self.mode = "off"

    def window_logits(
        self, model: torch.nn.Module, crop: torch.Tensor, top: int, left: int, grids: bool
    ) -> torch.Tensor:
        self.mode, self.calls, self.window, self.grids = "replay", 0, (top, left, *crop.shape[-2:]), grids
        try:
            return model(pixel_values=crop).logits
        finally:
            self.mode = "off"


def windowed(model, pixel_values, window, stride, forward=None, weights=None) -> torch.Tensor:
    """Logits averaged over the windows (weighted by `weights` if given), each window through `forward`."""
    height, width = pixel_values.shape[-2:]
    crop_h, crop_w = min(window[0], height), min(window[1], width)
    weight = torch.ones(crop_h, crop_w) if weights is None else weights[:crop_h, :crop_w]
    total, norm = None, torch.zeros(height, width)
    for top in window_starts(height, window[0], stride[0]):
        for left in window_starts(width, window[1], stride[1]):
            crop = pixel_values[..., top : top + crop_h, left : left + crop_w]
            logits = forward(crop, top, left) if forward else model(pixel_values=crop).logits
            logits = F.interpolate(logits.float(), size=(crop_h, crop_w), mode="bilinear", align_corners=False)
            total = torch.zeros(1, logits.shape[1], height, width) if total is None else total
            total[..., top : top + crop_h, left : left + crop_w] += logits * weight
            norm[top : top + crop_h, left : left + crop_w] += weight
    return total / norm


def study(model, processor, examples, window, stride) -> dict[str, float]:
    """mIoU of every method in `METHODS` over `examples` ((image, label) pairs)."""
    matrices = {name: SegmentationConfusionMatrix(model.config.num_labels) for name in METHODS}
    pools = WholeImagePools()
    gaussian = gaussian_weights(*window)
    with torch.no_grad(), pools.installed():
        for image, label in examples:
            pixel_values = processor(images=image, do_resize=False, return_tensors="pt").pixel_values

            def upsampled(logits: torch.Tensor, size: tuple[int, int] = tuple(pixel_values.shape[-2:])) -> torch.Tensor:
                return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)

            windows = sliding_window_logits(model, pixel_values, window, stride)
            view = F.interpolate(pixel_values, size=window, mode="bilinear", align_corners=False)
            scores = {
                "whole": upsampled(pools.record(model, pixel_values)),
                "windows": windows,
                "windows+view": (windows + upsampled(model(pixel_values=view).logits)) / 2,
                "gaussian": windowed(model, pixel_values, window, stride, weights=gaussian),
            }
            for name, grids in (("pools:global", False), ("pools:all", True)):
                scores[name] = windowed(
                    model, pixel_values, window, stride,
                    forward=lambda crop, top, left, g=grids: pools.window_logits(model, crop, top, left, g),
                )
            for name, score in scores.items():
                matrices[name].update(score.argmax(1)[0], label)
    return {name: float(matrix.compute()["mean_iou"]) for name, matrix in matrices.items()}


def format_table(results: dict[str, float], images: int) -> str:
    whole = 100 * results["whole"]
    lines = [f"| method ({images} images) | mIoU % | vs whole image |", "|---|---|---|"]
    for name, value in results.items():
        lines.append(f"| {name} | {100 * value:.2f} | {100 * value - whole:+.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a saved DSNet model folder (save_pretrained / msaf-hf train output)")
    parser.add_argument("dataset", type=Path, help="a Hub-layout dataset folder with {split}-*.parquet files")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--window", type=int, nargs=2, default=(184, 240), metavar=("H", "W"))
    parser.add_argument("--stride", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="default: 2/3 of the window")
    parser.add_argument("--void_label", type=int, default=11, help="label value scored as ignored (-1: none)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    window, stride = check_sliding_window(args.window, args.stride)
    model = DSNetForSemanticSegmentation.from_pretrained(args.model).eval()
    processor = DSNetImageProcessor.from_pretrained(args.model)
    examples = list(read_examples(args.dataset, args.split, None if args.void_label < 0 else args.void_label,
                                  args.limit))
    results = study(model, processor, examples, window, stride)
    print(f"window {window[0]}x{window[1]}, stride {stride[0]}x{stride[1]}, {args.model}")
    print(format_table(results, len(examples)))
    return results


if __name__ == "__main__":
    main()
