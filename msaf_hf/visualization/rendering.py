"""Pictures of predictions: colour masks, overlays, palette PNGs, legends and MSAF fusion-weight heatmaps.

Everything works on numpy arrays and PIL images (no torch, no matplotlib), and is self-contained (sibling imports
only) because the demo Space ships a copy of it.

Conventions: a *label map* is an ``(H, W)`` integer array of class ids; a *palette* is an ``(num_labels, 3)``
uint8 array (`msaf_hf.visualization.label_colors`); images are RGB ``PIL.Image`` objects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "FUSION_COLORMAP",
    "FUSION_RANGE",
    "class_shares",
    "colorize",
    "fusion_heatmap",
    "fusion_scale_image",
    "legend_image",
    "load_mask",
    "overlay",
    "save_palette_mask",
    "weight_map",
]

#: Diverging colour map of the fusion-weight heatmaps: blue where the context branch dominates (w -> 0), light grey
#: for the plain sum (w = 0.5), red where the detail branch dominates (w -> 1). Anchors (position, RGB).
FUSION_COLORMAP: tuple[tuple[float, tuple[int, int, int]], ...] = (
    (0.0, (59, 76, 192)),
    (0.25, (141, 176, 254)),
    (0.5, (221, 221, 221)),
    (0.75, (244, 154, 123)),
    (1.0, (180, 4, 38)),
)


#: Default value range of the fusion heatmaps: the colours saturate 0.2 either side of the even mix. Channel means of
#: MSAF's weights stay near 0.5 (trained CamVid models: about 0.4-0.6), so the full (0, 1) range would look flat;
#: a fixed range keeps heatmaps of different images comparable.
FUSION_RANGE: tuple[float, float] = (0.3, 0.7)


def _as_label_map(label_map: Any) -> np.ndarray:
    array = np.asarray(label_map.cpu() if hasattr(label_map, "cpu") else label_map)
    if array.ndim != 2:
        raise ValueError(f"expected an (H, W) map of class ids, got shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"expected integer class ids, got dtype {array.dtype}.")
    return array


def colorize(label_map: Any, palette: np.ndarray, ignore_color: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """``(H, W, 3)`` uint8 colours of a label map; ids outside the palette (e.g. the ignore index) get
    ``ignore_color``."""
    labels = _as_label_map(label_map)
    table = np.zeros((max(int(labels.max(initial=0)) + 1, len(palette)), 3), dtype=np.uint8)
    table[:] = np.asarray(ignore_color, dtype=np.uint8)
    table[: len(palette)] = palette
    return table[np.clip(labels, 0, None)]


def overlay(image: Image.Image, label_map: Any, palette: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The image blended with its class colours: ``(1 - alpha) * image + alpha * colour``, at the image's size.

    The label map must have the image's size (upsample predictions to it first).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha}.")
    labels = _as_label_map(label_map)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(
            f"overlay: the label map is {labels.shape[1]}x{labels.shape[0]} but the image is "
            f"{rgb.shape[1]}x{rgb.shape[0]} (width x height); upsample the prediction to the image size."
        )
    blended = (1.0 - alpha) * rgb + alpha * colorize(labels, palette).astype(np.float32)
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))


def _atomic_save(image: Image.Image, path: Path, **kwargs: Any) -> None:
    # Write aside, then rename: a crash never leaves a truncated picture under the final name.
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(staging, format=kwargs.pop("format", None) or _format_of(path), **kwargs)
        os.replace(staging, path)
    finally:
        if staging.exists():
            staging.unlink()


def _format_of(path: Path) -> str:
    return {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")


def save_image(image: Image.Image, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Save atomically (JPEG at quality 90 unless told otherwise)."""
    path = Path(path)
    if _format_of(path) == "JPEG":
        kwargs.setdefault("quality", 90)
        image = image.convert("RGB")
    _atomic_save(image, path, **kwargs)
    return path


def save_palette_mask(label_map: Any, palette: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a label map as a lossless PNG whose pixel values *are* the class ids.

    Up to 256 classes: a palette ("P") PNG, so viewers show the class colours while ``np.array(Image.open(p))``
    gives back the ids exactly. More classes: a 16-bit greyscale PNG (ids as values, no colours).
    """
    labels = _as_label_map(label_map)
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ValueError(f"save_palette_mask: class ids must be in 0..65535, got {labels.min()}..{labels.max()}.")
    if labels.max(initial=0) < 256 and len(palette) <= 256:
        image = Image.fromarray(labels.astype(np.uint8), mode="P")
        table = np.zeros((256, 3), dtype=np.uint8)
        table[: len(palette)] = palette
        image.putpalette(table.reshape(-1).tolist())
    else:
        image = Image.fromarray(labels.astype(np.uint16))
    path = Path(path)
    _atomic_save(image, path, format="PNG", optimize=False)
    return path


def load_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a mask written by `save_palette_mask`: ``(H, W)`` int64 class ids."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L", "I;16", "I"):
            raise ValueError(f"{path}: not a class-id mask (mode {image.mode}); expected a palette or greyscale PNG.")
        return np.asarray(image).astype(np.int64)


def class_shares(label_map: Any, num_labels: int) -> np.ndarray:
    """Fraction of the pixels predicted as each class, ``(num_labels,)`` float64 (sums to 1 over valid ids)."""
    labels = _as_label_map(label_map).reshape(-1)
    valid = labels[(labels >= 0) & (labels < num_labels)]
    counts = np.bincount(valid, minlength=num_labels).astype(np.float64)
    return counts / max(labels.size, 1)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def legend_image(
    id2label: Mapping[Any, str],
    palette: np.ndarray,
    class_ids: Sequence[int] | None = None,
    shares: Sequence[float] | None = None,
    columns: int | None = None,
    font_size: int = 14,
) -> Image.Image:
    """A legend: one colour swatch and class name per class (``class_ids``, default all), with each class's share
    of the image in percent when ``shares`` (indexed by class id) is given. Laid out in ``columns`` (default: one
    column up to 12 classes, then more)."""
    names = {int(k): str(v) for k, v in id2label.items()}
    ids = list(range(len(palette))) if class_ids is None else [int(i) for i in class_ids]
    if not ids:
        ids = []
    font = _font(font_size)
    labels = [names.get(i, f"class {i}") + (f"  {100 * shares[i]:.1f}%" if shares is not None else "") for i in ids]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max([int(measure.textlength(t, font=font)) for t in labels] + [40])
    row_height = font_size + 8
    swatch = font_size + 2
    columns = columns or max(1, -(-len(ids) // 12))
    rows = max(1, -(-len(ids) // columns))
    cell_width = swatch + 8 + text_width + 16
    image = Image.new("RGB", (8 + columns * cell_width, 8 + rows * row_height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for position, (class_id, text) in enumerate(zip(ids, labels, strict=False)):
        column, row = divmod(position, rows)
        x, y = 8 + column * cell_width, 4 + row * row_height + 3
        color = tuple(int(c) for c in palette[class_id]) if class_id < len(palette) else (0, 0, 0)
        draw.rectangle([x, y, x + swatch, y + swatch - 2], fill=color, outline=(80, 80, 80))
        draw.text((x + swatch + 8, y), text, fill=(20, 20, 20), font=font)
    return image


def _colormap(values: np.ndarray, colormap: Sequence[tuple[float, Sequence[int]]] = FUSION_COLORMAP) -> np.ndarray:
    positions = np.array([p for p, _ in colormap], dtype=np.float32)
    colors = np.array([c for _, c in colormap], dtype=np.float32)
    values = np.clip(values, 0.0, 1.0)
    channels = [np.interp(values, positions, colors[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1)


def weight_map(weights: Any) -> np.ndarray:
    """One MSAF weight map as an ``(h, w)`` float32 array: the channel mean of ``w`` -- the detail branch's share
    of each fused pixel (``1 - w`` is the context branch's). Accepts ``(C, h, w)`` or ``(h, w)``."""
    array = np.asarray(weights.detach().float().cpu() if hasattr(weights, "detach") else weights, dtype=np.float32)
    if array.ndim == 3:
        array = array.mean(axis=0)
    if array.ndim != 2:
        raise ValueError(f"weight_map: expected (C, h, w) or (h, w) weights, got shape {array.shape}.")
    return array


def fusion_heatmap(
    image: Image.Image,
    weights: Any,
    alpha: float = 0.6,
    value_range: tuple[float, float] = FUSION_RANGE,
) -> Image.Image:
    """An MSAF weight map (`weight_map`) as a heatmap over the image, at the image's size.

    The map (1/8 of the input resolution) is upsampled bilinearly; ``value_range`` maps to the two ends of
    `FUSION_COLORMAP` (default `FUSION_RANGE`, the same for every image so that heatmaps compare directly).
    """
    low, high = value_range
    if not high > low:
        raise ValueError(f"fusion_heatmap: value_range must be (low, high) with high > low, got {value_range}.")
    values = weight_map(weights)
    rgb = image.convert("RGB")
    resized = np.asarray(
        Image.fromarray(values, mode="F").resize(rgb.size, resample=Image.Resampling.BILINEAR), dtype=np.float32
    )
    heat = _colormap((resized - low) / (high - low))
    blended = (1.0 - alpha) * np.asarray(rgb, dtype=np.float32) + alpha * heat
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))


def fusion_scale_image(
    width: int = 320, value_range: tuple[float, float] = FUSION_RANGE, font_size: int = 12
) -> Image.Image:
    """A colour bar explaining the fusion heatmaps: context branch trusted (left) to detail branch trusted (right)."""
    font = _font(font_size)
    bar = _colormap(np.linspace(0.0, 1.0, width, dtype=np.float32))[None].repeat(16, axis=0)
    image = Image.new("RGB", (width + 16, 16 + 2 * (font_size + 6) + 4), (255, 255, 255))
    image.paste(Image.fromarray(bar.astype(np.uint8)), (8, 4))
    draw = ImageDraw.Draw(image)
    low, high = value_range
    y = 24
    draw.text((8, y), f"w={low:g}: context", fill=(20, 20, 20), font=font)
    right = f"detail: w={high:g}"
    draw.text((8 + width - int(draw.textlength(right, font=font)), y), right, fill=(20, 20, 20), font=font)
    middle = f"{(low + high) / 2:g}: equal"
    draw.text(
        (8 + (width - int(draw.textlength(middle, font=font))) // 2, y + font_size + 6),
        middle,
        fill=(20, 20, 20),
        font=font,
    )
    return image
