"""A generated, deterministic, learnable segmentation set: coloured shapes on a textured background."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image

from .arguments import size_pair
from .labels import IGNORE_INDEX, SYNTHETIC_CLASS_NAMES, synthetic_id2label

# One strong, well-separated colour per foreground class: colour alone identifies the class, shape
# agrees with it, so even a small CNN learns the task in a few hundred steps.
_SYNTHETIC_COLOURS = np.array(
    [[0, 0, 0], [225, 40, 40], [40, 200, 60], [50, 80, 235], [240, 205, 30], [205, 50, 215], [30, 205, 215]],
    dtype=np.float64,
)
_SYNTHETIC_SPLIT_CODES = {"train": 0, "validation": 1}


def _shape_sdf(kind: str, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """Signed distance (negative inside) of a shape centred at 0 in rotated coordinates (u, v)."""
    if kind == "disc":
        return np.hypot(u, v) - radius
    if kind == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.8 * radius
    if kind == "triangle":  # regular triangle: intersection of 3 half-planes, inradius 0.6 r
        angles = np.array([np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3])
        return np.max(np.stack([u * np.cos(a) + v * np.sin(a) for a in angles]), axis=0) - 0.6 * radius
    if kind == "ring":
        return np.abs(np.hypot(u, v) - 0.75 * radius) - 0.28 * radius
    if kind == "cross":
        arm1 = np.maximum(np.abs(u) - radius, np.abs(v) - 0.3 * radius)
        arm2 = np.maximum(np.abs(u) - 0.3 * radius, np.abs(v) - radius)
        return np.minimum(arm1, arm2)
    if kind == "bar":
        return np.maximum(np.abs(u) - 1.3 * radius, np.abs(v) - 0.3 * radius)
    raise ValueError(f"unknown synthetic shape {kind!r}")


def _synthetic_example(
    rng: np.random.Generator, height: int, width: int, num_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 HxWx3) and label (uint8 HxW, 255 = ignore on a thin band around every shape)."""
    # Textured, low-saturation background: grey level + gradient + grey noise + a slight tint.
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    grey = rng.uniform(70, 170)
    gradient = rng.uniform(-30, 30) * ys / height + rng.uniform(-30, 30) * xs / width
    noise = rng.standard_normal((height, width, 4), dtype=np.float32) * np.float32(4)
    noise = noise[..., :3] + 3.5 * noise[..., 3:]  # mostly grey noise (same in all channels), a little colour
    image = (grey + gradient)[..., None] + noise + rng.normal(0, 5, 3).astype(np.float32)
    label = np.zeros((height, width), dtype=np.uint8)
    side = min(height, width)
    for _ in range(int(rng.integers(1, 5))):  # 1..4 shapes, later ones occlude earlier ones
        cls = int(rng.integers(1, num_labels))
        radius = rng.uniform(0.12, 0.26) * side
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        angle = rng.uniform(0, 2 * np.pi)
        brightness = rng.uniform(0.8, 1.1)
        # Only the shape's bounding box is touched (every shape fits in a circle of radius 1.4 r).
        reach = 1.4 * radius + 2
        y0, y1 = max(0, int(cy - reach)), min(height, int(cy + reach) + 1)
        x0, x1 = max(0, int(cx - reach)), min(width, int(cx + reach) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = ys[y0:y1] - cy, xs[:, x0:x1] - cx
        u, v = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
        sdf = _shape_sdf(SYNTHETIC_CLASS_NAMES[cls], u, v, radius)
        inside = sdf < 0
        box = image[y0:y1, x0:x1]
        colour = _SYNTHETIC_COLOURS[cls] * brightness + 8 * rng.standard_normal(box.shape, dtype=np.float32)
        box[inside] = colour[inside]
        label_box = label[y0:y1, x0:x1]
        label_box[inside] = cls
        label_box[np.abs(sdf) < 0.6] = IGNORE_INDEX  # ambiguous boundary pixels are not scored
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), label


def _png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG", compress_level=1)  # speed over size
    return buffer.getvalue()


def make_synthetic_segmentation_dataset(
    num_train: int = 512,
    num_eval: int = 64,
    image_size: Sequence[int] = (64, 64),
    num_labels: int = 4,
    seed: int = 0,
) -> Any:
    """A generated, deterministic, learnable segmentation set as a ``datasets.DatasetDict``.

    Splits ``train`` and ``validation`` with columns ``image`` (RGB PNG), ``label`` (PNG of class ids,
    255 on a ~1 px band around each shape = ignore) and ``name``, i.e. the layout of a real Hub dataset.
    Images show 1-4 shapes (``synthetic_id2label(num_labels)``: disc, square, triangle, ...) in one
    strong colour per class over a textured grey background. Example ``i`` of a split depends only on
    (seed, split, i), so a larger ``num_train`` extends the set without changing the first examples.
    Class names are not stored in the DatasetDict: use :func:`synthetic_id2label`.
    """
    import datasets

    height, width = size_pair(image_size)
    synthetic_id2label(num_labels)  # validates num_labels
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.Image(), "name": datasets.Value("string")}
    )
    splits = {}
    for split, count in (("train", num_train), ("validation", num_eval)):
        if count <= 0:
            raise ValueError(f"make_synthetic_segmentation_dataset: {split} size must be > 0, got {count}.")
        columns: dict[str, list[Any]] = {"image": [], "label": [], "name": []}
        for index in range(count):
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SYNTHETIC_SPLIT_CODES[split], index]))
            image, label = _synthetic_example(rng, height, width, num_labels)
            columns["image"].append({"bytes": _png_bytes(image), "path": None})
            columns["label"].append({"bytes": _png_bytes(label), "path": None})
            columns["name"].append(f"synthetic-{split}-{index:05d}")
        splits[split] = datasets.Dataset.from_dict(columns, features=features)
    return datasets.DatasetDict(splits)
