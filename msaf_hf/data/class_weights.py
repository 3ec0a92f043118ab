"""Per-class loss weights from label frequencies (``--class_weights auto``), and reading them from a file.

Median-frequency balancing (Eigen & Fergus, 2015), the form of the published Cityscapes weights
(``msaf_hf.CITYSCAPES_CLASS_WEIGHTS``: one weight per class, the median class near 1, frequent classes below 1 and
rare ones above)::

    freq_c   = pixels of class c / pixels of the training images in which class c occurs
    weight_c = median over classes of freq / freq_c,   clipped to [CLASS_WEIGHT_MIN, CLASS_WEIGHT_MAX]

Ignored pixels (the ignore index) count nowhere. A class that never occurs in the training labels gets weight 1
(it adds nothing to the loss anyway) and is named in a warning.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bad_examples import ExampleProblem

logger = logging.getLogger(__name__)

#: The range ``--class_weights auto`` clips its weights to: a class at most 10x more (or less) important than the
#: median class, so that one rare class cannot dominate the loss.
CLASS_WEIGHT_MIN = 0.1
CLASS_WEIGHT_MAX = 10.0


class ClassFrequencies:
    """Pixel counts per class and, per class, the pixels of the images that contain it (accumulated per label map)."""

    def __init__(self, num_labels: int) -> None:
        self.num_labels = int(num_labels)
        self.pixels = np.zeros(self.num_labels, dtype=np.int64)
        self.image_pixels = np.zeros(self.num_labels, dtype=np.int64)
        self.images = np.zeros(self.num_labels, dtype=np.int64)

    def add(self, label: np.ndarray) -> None:
        """Count one mapped label map; values outside ``0..num_labels-1`` (the ignore index, bad values) are skipped."""
        valid = label[(label >= 0) & (label < self.num_labels)]
        counts = np.bincount(valid.ravel(), minlength=self.num_labels)
        present = counts > 0
        self.pixels += counts
        self.image_pixels[present] += int(label.size)
        self.images[present] += 1

    def shares(self) -> np.ndarray:
        """Each class's share of all labelled pixels (0 where nothing is labelled)."""
        total = self.pixels.sum()
        return self.pixels / total if total else np.zeros(self.num_labels)


def median_frequency_weights(
    frequencies: ClassFrequencies,
    clip: tuple[float, float] = (CLASS_WEIGHT_MIN, CLASS_WEIGHT_MAX),
    id2label: dict[int, str] | None = None,
) -> list[float]:
    """Median-frequency-balanced class weights (see the module docstring), rounded to 4 decimals like the
    published ones."""
    present = frequencies.pixels > 0
    if not present.any():
        raise ValueError("Cannot compute class weights: the training labels have no labelled pixels.")
    freq = np.zeros(frequencies.num_labels)
    freq[present] = frequencies.pixels[present] / frequencies.image_pixels[present]
    weights = np.ones(frequencies.num_labels)
    weights[present] = np.median(freq[present]) / freq[present]
    weights = np.clip(weights, clip[0], clip[1])
    absent = np.flatnonzero(~present).tolist()
    if absent:
        names = [(id2label or {}).get(i, str(i)) for i in absent]
        logger.warning("Class weights: classes %s never occur in the training labels; they get weight 1.", names)
    return [round(float(w), 4) for w in weights]


def count_class_frequencies(dataset: Any, num_labels: int, progress: Iterable[int] | None = None) -> ClassFrequencies:
    """Class frequencies of a :class:`~msaf_hf.data.SegmentationDataset`'s labels (mapped; images not decoded).

    Examples whose labels cannot be read are skipped here: training reports (or skips) them itself.
    """
    frequencies = ClassFrequencies(num_labels)
    for index in progress if progress is not None else range(len(dataset)):
        try:
            label = dataset.label_mapper.map(dataset.source.load_label(dataset.indices[index]))
        except ExampleProblem:
            continue
        frequencies.add(label)
    return frequencies


def load_class_weights_file(path: str | os.PathLike, num_labels: int) -> list[float]:
    """Read ``--class_weights FILE``: a JSON list of one non-negative number per class (or ``{"class_weights":
    [...]}``)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"--class_weights {str(path)!r}: no such file (or pass 'auto').") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--class_weights {str(path)!r} is not valid JSON: {err}") from err
    if isinstance(raw, dict) and "class_weights" in raw:
        raw = raw["class_weights"]
    if not isinstance(raw, list) or not all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in raw):
        raise ValueError(f"--class_weights {str(path)!r} must hold a JSON list of numbers, one per class.")
    if len(raw) != num_labels:
        raise ValueError(
            f"--class_weights {str(path)!r} has {len(raw)} weights but the data has {num_labels} classes."
        )
    if any(w < 0 for w in raw):
        raise ValueError(f"--class_weights {str(path)!r}: weights must be non-negative.")
    return [float(w) for w in raw]


def format_weights(weights: Sequence[float], id2label: dict[int, str]) -> str:
    """``'sky 0.31, road 0.25, ...'`` for the log."""
    return ", ".join(f"{id2label.get(i, i)} {w:.4g}" for i, w in enumerate(weights))
