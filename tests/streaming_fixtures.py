"""A tiny local parquet folder for the ``--streaming`` tests (tests/data/test_streaming.py,
tests/training/test_streaming_training.py).

Row ``i`` is named ``ex<i>``; its image is one grey value :func:`grey_of` ``(i)`` everywhere, so any crop or flip of it
still says which row it was (:func:`row_of`); its label is a fixed pattern of the classes 0..2.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

NUM_CLASSES = 3


def grey_of(row: int) -> int:
    return 8 * row + 8


def row_of(pixel_values: torch.Tensor) -> int:
    """The row an augmented image came from (normalised grey value of its top-left pixel, channel 0)."""
    value = (float(pixel_values[0, 0, 0]) * IMAGENET_DEFAULT_STD[0] + IMAGENET_DEFAULT_MEAN[0]) * 255.0
    return round((value - 8) / 8)


def _png(array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


COLORS = {0: [200, 0, 0], 1: [0, 200, 0], 2: [0, 0, 200]}


def write_parquet_folder(root: Path, num_rows: int = 24, num_shards: int = 3, size: int = 32,
                         bad_row: int | None = None, num_eval: int = 4, colors: bool = False,
                         columns: tuple[str, str] = ("image", "label")) -> Path:
    """``root/train-*.parquet`` (``num_shards`` equal shards), ``root/validation-*.parquet`` and ``id2label.json``.
    ``bad_row`` gets a label value (7) outside the classes. ``colors``: labels are RGB masks in :data:`COLORS`
    (table in ``root.parent/colors.json``). ``columns``: the names of the image and label columns."""
    import datasets

    root.mkdir(parents=True, exist_ok=True)
    image_column, label_column = columns
    features = datasets.Features({"name": datasets.Value("string"), image_column: datasets.Image(),
                                  label_column: datasets.Image()})
    yy, xx = np.mgrid[0:size, 0:size]

    def row(i: int, prefix: str = "ex") -> dict:
        label = ((yy // 4 + xx // 4 + i) % NUM_CLASSES).astype(np.uint8)
        if i == bad_row:
            label[0, 0] = 7
        image = np.full((size, size, 3), grey_of(i), dtype=np.uint8)
        if colors:
            label = np.asarray([COLORS[c] for c in range(NUM_CLASSES)], dtype=np.uint8)[label]
        return {"name": f"{prefix}{i:02d}", image_column: _png(image), label_column: _png(label)}

    per_shard = num_rows // num_shards
    for shard in range(num_shards):
        rows = [row(i) for i in range(shard * per_shard, (shard + 1) * per_shard)]
        datasets.Dataset.from_list(rows, features=features).to_parquet(
            str(root / f"train-{shard:05d}-of-{num_shards:05d}.parquet"))
    datasets.Dataset.from_list([row(i, "val") for i in range(num_eval)], features=features).to_parquet(
        str(root / "validation-00000-of-00001.parquet"))
    (root.parent / "colors.json").write_text(json.dumps({str(k): v for k, v in COLORS.items()}))
    (root / "id2label.json").write_text(json.dumps({str(i): f"class{i}" for i in range(NUM_CLASSES)}))
    return root
