"""Preprocessing: the training augmentation and the evaluation transform (the image processor)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..image_processing_dsnet import DSNetImageProcessor
from .arguments import size_pair
from .labels import IGNORE_INDEX


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The RNG of one example in one epoch: a pure function of (seed, epoch, index).

    numpy's SeedSequence hashes the three numbers into independent streams, so neighbouring seeds,
    epochs or indices do not give correlated augmentations.
    """
    if seed < 0 or epoch < 0 or index < 0:
        raise ValueError(f"example_rng: seed, epoch and index must be >= 0, got {(seed, epoch, index)}.")
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(epoch), int(index)]))


def _resize_label_nearest(label: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize by index arithmetic (pixel centres, like PIL NEAREST); keeps int64 ids."""
    h, w = label.shape
    if (h, w) == (height, width):
        return label
    rows = np.minimum(((np.arange(height) + 0.5) * (h / height)).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (w / width)).astype(np.int64), w - 1)
    return label[rows[:, None], cols[None, :]]


class _Normalizer:
    """uint8 HWC RGB -> float32 CHW, /255 then (x - mean) / std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1)

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        # np.require copies only when needed (PIL's arrays are read-only; flips are negative-stride views).
        tensor = torch.from_numpy(np.require(array, requirements=["C", "W"])).permute(2, 0, 1)
        tensor = tensor.to(torch.float32).div_(255.0)
        return tensor.sub_(self.mean).div_(self.std)


class SegmentationTrainTransform:
    """The published training augmentation: random scale, pad, random crop, horizontal flip, normalise.

    1. scale factor ``s`` from ``scale_range``: continuous uniform, or ``min + k * scale_step`` for
       integer ``k`` when ``scale_step`` is set (the published code uses steps of 0.1);
    2. resize so the long side is ``s * base_size`` (or ``s *`` the image's own long side), image
       bilinear, label nearest;
    3. pad bottom/right to at least ``crop_size`` with 0 (black, before normalisation, as published)
       for the image and ``ignore_index`` for the label;
    4. random crop of ``crop_size``; 5. horizontal flip with ``hflip_probability``;
    6. RGB / 255, then (x - mean) / std (ImageNet by default).

    All randomness comes from the ``rng`` argument, drawn in a fixed order (scale, crop y, crop x, flip).
    """

    def __init__(
        self,
        crop_size: Sequence[int],
        scale_range: Sequence[float] = (0.5, 2.0),
        scale_step: float | None = None,
        base_size: int | None = None,
        hflip_probability: float = 0.5,
        ignore_index: int = IGNORE_INDEX,
        image_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        image_std: Sequence[float] = IMAGENET_DEFAULT_STD,
    ) -> None:
        self.crop_size = size_pair(crop_size)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.scale_step = scale_step
        self.base_size = base_size
        self.hflip_probability = hflip_probability
        self.ignore_index = ignore_index
        self.normalize = _Normalizer(image_mean, image_std)

    def sample_scale(self, rng: np.random.Generator) -> float:
        """Draw the random scale factor."""
        low, high = self.scale_range
        if self.scale_step:
            steps = int(math.floor((high - low) / self.scale_step + 1e-6))
            return low + self.scale_step * int(rng.integers(0, steps + 1))
        return float(rng.uniform(low, high))

    def __call__(
        self, image: PIL.Image.Image, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        width, height = image.size
        scale = self.sample_scale(rng)
        long_side = self.base_size if self.base_size is not None else max(height, width)
        ratio = scale * long_side / max(height, width)
        new_h, new_w = max(1, int(height * ratio + 0.5)), max(1, int(width * ratio + 0.5))
        if (new_h, new_w) != (height, width):
            image = image.resize((new_w, new_h), PIL.Image.Resampling.BILINEAR)
            label = _resize_label_nearest(label, new_h, new_w)
        pixels = np.asarray(image, dtype=np.uint8)
        crop_h, crop_w = self.crop_size
        pad_h, pad_w = max(crop_h - new_h, 0), max(crop_w - new_w, 0)
        if pad_h or pad_w:
            pixels = np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=0)
            label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=self.ignore_index)
        top = int(rng.integers(0, pixels.shape[0] - crop_h + 1))
        left = int(rng.integers(0, pixels.shape[1] - crop_w + 1))
        pixels = pixels[top : top + crop_h, left : left + crop_w]
        label = label[top : top + crop_h, left : left + crop_w]
        if rng.random() < self.hflip_probability:
            pixels, label = pixels[:, ::-1], label[:, ::-1]
        return self.normalize(pixels), torch.from_numpy(np.require(label, np.int64, ["C", "W"]))


def normalization_from_processor(image_processor: Any) -> tuple[list[float], list[float]]:
    """The (mean, std) that, applied to RGB / 255 as :class:`SegmentationTrainTransform` does, give the same values
    as ``image_processor`` (its rescale factor folded in), so training inputs are normalised as the saved processor
    normalises evaluation and inference inputs."""
    scale = float(image_processor.rescale_factor) * 255.0 if image_processor.do_rescale else 255.0
    if not image_processor.do_normalize:
        return [0.0, 0.0, 0.0], [1.0 / scale] * 3
    mean, std = (list(v) if isinstance(v, (list, tuple)) else [float(v)] * 3
                 for v in (image_processor.image_mean, image_processor.image_std))
    return [float(m) / scale for m in mean], [float(s) / scale for s in std]


def eval_image_processor(
    eval_size: Sequence[int] | None = None, ignore_index: int = IGNORE_INDEX, reduce_labels: bool = False
) -> Any:
    """The ``DSNetImageProcessor`` of the evaluation protocol, the one definition of evaluation preprocessing
    (training saves it beside its checkpoints; evaluation and the pipeline run it).

    ``eval_size``: None keeps the native size (the published protocol: whole image, single scale); one value
    resizes the long side to it, keeping the aspect ratio (``{"max_height": N, "max_width": N}``); two values
    give (height, width).
    """
    kwargs: dict[str, Any] = {"ignore_index": ignore_index, "do_reduce_labels": bool(reduce_labels)}
    if eval_size is not None:
        size = [int(v) for v in eval_size]
        if len(size) not in (1, 2) or min(size) <= 0:
            raise ValueError(f"eval_size must be one or two positive sizes (long side, or height width), got {size}.")
        kwargs["do_resize"] = True
        kwargs["size"] = (
            {"max_height": size[0], "max_width": size[0]} if len(size) == 1 else {"height": size[0], "width": size[1]}
        )
    return DSNetImageProcessor(**kwargs)


class SegmentationEvalTransform:
    """Evaluation preprocessing: the image through an image processor (``DSNetImageProcessor``; default: the
    native-size one of :func:`eval_image_processor`), the label unchanged. Deterministic.

    Labels are always returned at their native resolution, so metrics are computed against the original
    annotation: upsample the logits to ``labels.shape[-2:]`` (DSNet's loss does so already).
    """

    def __init__(self, image_processor: Any = None) -> None:
        self.image_processor = image_processor if image_processor is not None else eval_image_processor()

    def __call__(
        self, image: PIL.Image.Image, label: np.ndarray, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pixel_values = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        return pixel_values, torch.from_numpy(np.require(label, np.int64, ["C", "W"]))


Transform = Callable[[PIL.Image.Image, np.ndarray, np.random.Generator], tuple[torch.Tensor, torch.Tensor]]
