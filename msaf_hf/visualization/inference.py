"""Running a segmenter on PIL images for pictures: class-id maps at the image size, MSAF fusion-weight maps, timing.

`load_segmenter` is the one place a model is loaded for ``msaf-hf predict`` and the demo; anything that can be
wrapped in a `Segmenter` (a ``from_pretrained`` model and its image processor) works with them.

Self-contained (torch, transformers, numpy, PIL and sibling imports only): the demo Space ships a copy of it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers.modeling_outputs import SemanticSegmenterOutput

from .palettes import label_colors

__all__ = ["SegmentationResult", "Segmenter", "load_segmenter", "parse_image_size", "resolve_device"]


@dataclass
class SegmentationResult:
    """One image's prediction."""

    label_map: np.ndarray  # (H, W) int64 class ids at the image's own size
    fusion_weights: list[np.ndarray] | None  # MSAF weight maps, channel means, (h, w) float32 each; None if not asked
    seconds: float  # this image's share of its batch's preprocessing + forward + upsampling time


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA if available, else Apple MPS, else the CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def parse_image_size(value: str | int | Sequence[int] | None) -> tuple[int, int] | int | None:
    """``"HxW"`` -> ``(H, W)``; ``"N"`` or ``N`` -> ``N`` (the shorter side, aspect ratio kept); ``None`` -> None."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        numbers = [int(v) for v in value]
    elif isinstance(value, int):
        numbers = [value]
    else:
        try:
            numbers = [int(p) for p in str(value).lower().replace("×", "x").split("x")]
        except ValueError:
            raise ValueError(f"size: expected HxW (e.g. 512x1024) or N (shorter side), got {value!r}.") from None
    if len(numbers) not in (1, 2) or any(n <= 0 for n in numbers):
        raise ValueError(
            f"size: expected HxW (e.g. 512x1024) or N (shorter side) with positive numbers, got {value!r}."
        )
    return numbers[0] if len(numbers) == 1 else (numbers[0], numbers[1])


def _target_size(image_size: tuple[int, int], size: tuple[int, int] | int) -> tuple[int, int]:
    """(height, width) to feed the model for an image of PIL ``(width, height)``."""
    if isinstance(size, tuple):
        return size
    width, height = image_size
    scale = size / min(width, height)
    # Multiples of 8: DSNet's fusion maps are at 1/8 of the input, so they then cover the image exactly.
    return max(8, round(height * scale / 8) * 8), max(8, round(width * scale / 8) * 8)


class Segmenter:
    """A semantic segmentation model plus its image processor, returning pictures-ready predictions.

    Args:
        model: a model whose forward takes ``pixel_values`` and returns ``logits`` (``(N, C, h, w)``) and, with
            ``output_attentions=True``, DSNet's three MSAF weight maps as ``attentions``.
        image_processor: the model's image processor (``AutoImageProcessor``).
        device: where to run (default: `resolve_device`).
        size: input size: ``(H, W)``, or an int for the shorter side (aspect kept); default: the processor's
            (with ``sliding_window``: the image's own size).
        sliding_window: ``(H, W)``: logits averaged over overlapping windows of that size (the model's
            ``sliding_window_logits``), for images larger than the model's input; ``stride`` ``(H, W)`` defaults to
            2/3 of the window, ``window_batch_size`` windows run per forward pass, ``window_progress`` shows a bar.
        autocast_dtype: run the model under ``torch.autocast`` in this dtype (e.g. ``torch.bfloat16``); None: as is.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        image_processor: Any,
        *,
        device: str | torch.device | None = None,
        size: tuple[int, int] | int | None = None,
        sliding_window: Sequence[int] | None = None,
        stride: Sequence[int] | None = None,
        window_batch_size: int = 4,
        window_progress: bool = False,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.autocast_dtype = autocast_dtype
        self.model = model.to(self.device).eval()
        self.image_processor = image_processor
        self.size = parse_image_size(size)
        self.sliding_window, self.stride = None, None
        if sliding_window is not None:
            if not hasattr(model, "resolve_sliding_window"):
                raise ValueError("sliding windows need a DSNet model or an msaf_hf engine model.")
            self.sliding_window, self.stride = model.resolve_sliding_window(tuple(sliding_window), stride)
        self.window_batch_size = window_batch_size
        self.window_progress = window_progress
        config = model.config
        self.id2label = {int(k): str(v) for k, v in config.id2label.items()}
        self.num_labels = int(config.num_labels)
        self.palette = label_colors(self.id2label, getattr(config, "label2color", None), self.num_labels)

    @property
    def supports_fusion_maps(self) -> bool:
        # An exported engine (msaf_hf.engines) returns logits only; with sliding windows each window has its maps.
        return (
            getattr(self.model.config, "model_type", None) == "dsnet"
            and not hasattr(self.model, "engine_name")
            and self.sliding_window is None
        )

    def _pixel_values(self, image: Image.Image) -> torch.Tensor:
        kwargs: dict[str, Any] = {}
        if self.size is not None:
            height, width = _target_size(image.size, self.size)
            kwargs = {"do_resize": True, "size": {"height": height, "width": width}}
        elif self.sliding_window is not None:  # the windows cover the image at its own size
            kwargs = {"do_resize": False}
        return self.image_processor(images=image, return_tensors="pt", **kwargs)["pixel_values"]

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def predict(self, images: Sequence[Image.Image], fusion_maps: bool = False) -> list[SegmentationResult]:
        """Segment a batch of RGB images (any sizes; images of equal input size run as one forward pass)."""
        images = [image.convert("RGB") for image in images]
        if fusion_maps and self.sliding_window is not None:
            raise ValueError("fusion maps are not available with sliding windows (each window has its own).")
        if fusion_maps and not self.supports_fusion_maps:
            raise ValueError("fusion maps need a DSNet model (they are its MSAF weights).")
        results: list[SegmentationResult | None] = [None] * len(images)
        start = time.perf_counter()
        tensors = [self._pixel_values(image) for image in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, tensor in enumerate(tensors):
            groups.setdefault(tuple(tensor.shape[-2:]), []).append(index)
        shared_seconds = (time.perf_counter() - start) / max(len(images), 1)
        for indices in groups.values():
            start = time.perf_counter()
            pixel_values = torch.cat([tensors[i] for i in indices]).to(self.device)
            kwargs = {"output_attentions": True} if fusion_maps else {}
            with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                if self.sliding_window is not None:
                    outputs, logits = None, self.model.sliding_window_logits(
                        pixel_values, self.sliding_window, self.stride, window_batch_size=self.window_batch_size,
                        progress=self.window_progress,
                    )
                else:
                    outputs = self.model(pixel_values=pixel_values, **kwargs)
                    logits = outputs.logits
            logits = logits.float()
            # The image processor owns logits -> label map (upsampling to each image's size, then class ids).
            maps = self.image_processor.post_process_semantic_segmentation(
                SemanticSegmenterOutput(logits=logits), target_sizes=[images[index].size[::-1] for index in indices]
            )
            label_maps = [m.cpu().numpy().astype(np.int64) for m in maps]
            weights = None
            if fusion_maps:
                weights = [
                    [w[row].float().mean(dim=0).cpu().numpy() for w in outputs.attentions]
                    for row in range(len(indices))
                ]
            self._synchronize()
            seconds = (time.perf_counter() - start) / len(indices) + shared_seconds
            for row, index in enumerate(indices):
                results[index] = SegmentationResult(label_maps[row], weights[row] if weights else None, seconds)
        return results  # type: ignore[return-value]


def load_segmenter(
    source: str,
    *,
    device: str | torch.device | None = None,
    size: tuple[int, int] | int | str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    token: str | bool | None = None,
    autocast_dtype: torch.dtype | None = None,
    **segmenter_kwargs: Any,
) -> Segmenter:
    """Load a model for pictures: any ``from_pretrained`` source (a local folder or a Hub repo id).

    This is the single place where ``msaf-hf predict`` and the demo load a model; other model formats (e.g.
    exported inference engines) plug in here by returning a `Segmenter`-compatible object.
    ``trust_remote_code=True`` loads the model code shipped with the checkpoint (needed where ``msaf_hf`` is not
    installed, e.g. in a Space). ``autocast_dtype`` and ``segmenter_kwargs`` (``sliding_window``, ``stride``, ...) go
    to `Segmenter`.
    """
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        kwargs["revision"] = revision
    if token is not None:
        kwargs["token"] = token
    model = _exported_engine_model(source)
    if model is None:
        model = AutoModelForSemanticSegmentation.from_pretrained(source, **kwargs)
    try:
        image_processor = AutoImageProcessor.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{source!r} has no usable image processor (preprocessor_config.json): {error}. Save one beside the "
            "model (image_processor.save_pretrained(folder)) so that inputs are normalised as in training."
        ) from error
    if autocast_dtype is not None and hasattr(model, "engine_name"):
        raise ValueError(
            f"{source!r} is an exported {model.engine_name} folder: it runs in the precision it was exported at "
            f"({model.spec.precision}); drop --dtype, or export with msaf-hf export --precision bf16."
        )
    return Segmenter(model, image_processor, device=device, size=parse_image_size(size),
                     autocast_dtype=autocast_dtype, **segmenter_kwargs)


def _exported_engine_model(source: str) -> Any:
    """The engine model of a folder written by ``msaf-hf export`` (OpenVINO / ONNX Runtime), else None. Needs
    msaf_hf installed; a Space's copy of this module loads Hub models only."""
    try:
        from msaf_hf.engines import load_segmentation_model, read_engine_spec
    except ImportError:
        return None
    if not os.path.isdir(source) or read_engine_spec(source) is None:
        return None
    return load_segmentation_model(source)
