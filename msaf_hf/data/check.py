"""The dataset check's scan: read every example of a split once and report what is in it (no drawing here: the
``check-data`` command draws the chart and preview with :mod:`msaf_hf.visualization.data_check`).

:func:`scan_split` validates each example as :class:`~msaf_hf.data.SegmentationDataset` does (unreadable files,
image/label size mismatches, values outside the classes, colours not in the colour table) but keeps going, and
counts image sizes and modes, class pixels and the examples holding each problem.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .bad_examples import ExampleProblem
from .class_weights import ClassFrequencies

#: How many file names each problem lists.
MAX_LISTED_FILES = 5


@dataclass
class SplitScan:
    """What :func:`scan_split` found in one split. ``problems`` maps a reason (``unreadable_image``,
    ``unreadable_label``, ``size_mismatch``, ``label_out_of_range``, ``bad_label_format``, ``unknown_label_color``)
    to the examples it concerns, ``[{"name", "detail"}]``."""

    split: str
    examples: int
    frequencies: ClassFrequencies
    image_sizes: Counter = field(default_factory=Counter)
    image_modes: Counter = field(default_factory=Counter)
    ignored_pixels: int = 0
    outside_classes: dict[int, dict[str, Any]] = field(default_factory=dict)
    problems: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    unmatched_files: int = 0
    preview: list[tuple[Any, np.ndarray, str]] = field(default_factory=list)  # (RGB image, label, name)

    @property
    def num_bad_examples(self) -> int:
        return sum(len(v) for v in self.problems.values())

    def add_problem(self, reason: str, name: str, detail: str) -> None:
        self.problems.setdefault(reason, []).append({"name": name, "detail": detail})

    def to_dict(self, id2label: dict[int, str], ignore_index: int) -> dict[str, Any]:
        """JSON-ready summary (``data_check.json``)."""
        shares = self.frequencies.shares()
        return {
            "split": self.split,
            "examples": self.examples,
            "bad_examples": self.num_bad_examples,
            "unmatched_image_files": self.unmatched_files,
            "image_sizes": dict(self.image_sizes.most_common()),
            "image_modes": dict(self.image_modes.most_common()),
            "classes": [
                {"id": i, "name": id2label.get(i, f"class_{i}"), "pixels": int(self.frequencies.pixels[i]),
                 "share": float(shares[i]), "images": int(self.frequencies.images[i])}
                for i in range(self.frequencies.num_labels)
            ],
            "ignored_pixels": {"value": ignore_index, "pixels": self.ignored_pixels},
            "values_outside_classes": {str(v): info for v, info in sorted(self.outside_classes.items())},
            "problems": {reason: {"count": len(items), "examples": items} for reason, items in self.problems.items()},
        }


def scan_split(
    dataset: Any,
    *,
    progress: Iterable[int] | None = None,
    num_preview: int = 0,
) -> SplitScan:
    """Read every example of a :class:`~msaf_hf.data.SegmentationDataset` once (undecorated: no augmentation)."""
    mapper = dataset.label_mapper
    scan = SplitScan(dataset.split, len(dataset), ClassFrequencies(mapper.num_labels or 0))
    scan.unmatched_files = dataset.stats.unmatched_files
    for index in progress if progress is not None else range(len(dataset)):
        source_index = dataset.indices[index]
        try:
            raw = dataset.source.load(source_index)
        except ExampleProblem as problem:
            scan.add_problem(problem.reason, problem.name or f"#{source_index}", problem.detail)
            continue
        name = raw.name or f"#{source_index}"
        width, height = raw.image.size
        scan.image_sizes[f"{height}x{width}"] += 1
        scan.image_modes[raw.mode or raw.image.mode] += 1
        if raw.label.shape != (height, width):
            scan.add_problem(
                "size_mismatch", name,
                f"image is {height}x{width} (HxW) but its label is {raw.label.shape[0]}x{raw.label.shape[1]}",
            )
            continue
        label = mapper.map(raw.label)
        scan.frequencies.add(label)
        scan.ignored_pixels += int((label == mapper.ignore_index).sum())
        bad = mapper.invalid_values(label)
        for value in bad.tolist():
            info = scan.outside_classes.setdefault(int(value), {"pixels": 0, "examples": 0, "files": []})
            info["pixels"] += int((label == value).sum())
            info["examples"] += 1
            if len(info["files"]) < MAX_LISTED_FILES:
                info["files"].append(name)
        if bad.size:
            scan.add_problem("label_out_of_range", name, f"label values {bad.tolist()[:10]} are not class ids "
                             f"0..{mapper.num_labels - 1} nor the ignore index {mapper.ignore_index}")
        elif len(scan.preview) < num_preview:
            scan.preview.append((raw.image, label, name))
    return scan
