"""Sources: random access to raw (image, label, name) examples, decoded on demand.

A Hub dataset split (:class:`HubSource`), or (image file, label file) pairs (:class:`PairSource`) found in two
folders (:func:`folder_source`) or in the Cityscapes layout (:func:`cityscapes_source`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from .bad_examples import ExampleProblem
from .images import IMAGE_EXTENSIONS, open_image, to_rgb
from .labels import IGNORE_INDEX, cityscapes_lut, label_to_array

logger = logging.getLogger(__name__)

# Columns used (in this order) to name an example in error messages when --name_column is not given.
_NAME_COLUMN_CANDIDATES = ("name", "file_name", "filename", "image_id", "id")


@dataclass
class RawExample:
    image: PIL.Image.Image  # RGB
    label: np.ndarray  # int64 (H, W), source ids (Cityscapes: already trainIds)
    name: str | None
    mode: str | None = None  # the image's PIL mode before conversion to RGB (reported by the dataset check)


class HubSource:
    """A ``datasets.Dataset`` split. Image columns are read undecoded and decoded here so that a corrupt
    file becomes a per-example problem with the example's name instead of an anonymous datasets error."""

    def __init__(
        self,
        dataset: Any,
        image_column: str,
        label_column: str,
        name_column: str | None,
        description: str,
    ) -> None:
        import datasets

        self.description = description
        columns = list(dataset.column_names)
        for flag, column in (("--image_column", image_column), ("--label_column", label_column)):
            if column not in columns:
                raise ValueError(
                    f"{description}: column '{column}' not found (columns: {columns}); pass {flag} <column>."
                )
        if name_column is not None and name_column not in columns:
            raise ValueError(f"{description}: --name_column '{name_column}' not found (columns: {columns}).")
        if name_column is None:
            name_column = next(
                (c for c in _NAME_COLUMN_CANDIDATES if c in columns and c not in (image_column, label_column)), None
            )
        self.features = dataset.features
        self.image_column, self.label_column, self.name_column = image_column, label_column, name_column
        keep = [image_column, label_column] + ([name_column] if name_column else [])
        dataset = dataset.select_columns(keep)
        for column in (image_column, label_column):
            feature = dataset.features[column]
            if isinstance(feature, datasets.Image) and feature.decode:
                dataset = dataset.cast_column(column, datasets.Image(decode=False))  # metadata-only change
        self.dataset = dataset
        # Label value -> int64 class-id map; a ColorTable's decode for colour masks (see label_formats).
        self.label_decoder: Callable[[Any], np.ndarray] = label_to_array

    def __len__(self) -> int:
        return len(self.dataset)

    def _row(self, index: int) -> tuple[dict[str, Any], str | None]:
        row = self.dataset[index]
        return row, self.row_name(row)

    def row_name(self, row: dict[str, Any]) -> str | None:
        """The name of a row in messages: its name column, else its image file's name."""
        name = row.get(self.name_column) if self.name_column else None
        if name is None:
            value = row[self.image_column]
            if isinstance(value, dict) and value.get("path"):
                name = os.path.basename(value["path"])
            elif isinstance(value, (str, os.PathLike)):
                name = os.path.basename(value)
        return str(name) if name is not None else None

    def load(self, index: int) -> RawExample:
        return self.decode_row(*self._row(index))

    def decode_row(self, row: dict[str, Any], name: str | None) -> RawExample:
        """Decode one row of this source (read by index, or from a stream: ``msaf_hf.data.streaming``)."""
        try:
            decoded = open_image(row[self.image_column], "image")
            image = to_rgb(decoded)
            label = self.label_decoder(row[self.label_column])
        except ExampleProblem as problem:
            problem.name = name
            raise
        return RawExample(image, label, name, decoded.mode)

    def load_label(self, index: int) -> np.ndarray:
        row, name = self._row(index)
        try:
            return self.label_decoder(row[self.label_column])
        except ExampleProblem as problem:
            problem.name = name
            raise


class PairSource:
    """(image file, label file) pairs; optionally maps label values through a lookup table (Cityscapes)."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        description: str,
        lut: np.ndarray | None = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.pairs, self.description, self.lut, self.ignore_index = pairs, description, lut, ignore_index
        self.label_decoder: Callable[[Any], np.ndarray] = label_to_array  # as HubSource.label_decoder

    def __len__(self) -> int:
        return len(self.pairs)

    def _map(self, label: np.ndarray) -> np.ndarray:
        if self.lut is None:
            return label
        out = np.full(label.shape, self.ignore_index, dtype=np.int64)
        inside = (label >= 0) & (label < len(self.lut))
        out[inside] = self.lut[label[inside]]
        return out

    def load(self, index: int) -> RawExample:
        image_path, label_path = self.pairs[index]
        try:
            decoded = open_image(image_path, "image")
            image = to_rgb(decoded)
            label = self._map(self.label_decoder(label_path))
        except ExampleProblem as problem:
            problem.name = image_path.name
            raise
        return RawExample(image, label, image_path.name, decoded.mode)

    def load_label(self, index: int) -> np.ndarray:
        image_path, label_path = self.pairs[index]
        try:
            return self._map(self.label_decoder(label_path))
        except ExampleProblem as problem:
            problem.name = image_path.name
            raise


def _list_images(folder: Path, flag: str) -> dict[str, Path]:
    """Image files directly inside ``folder`` keyed by stem (duplicate stems are an error)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{flag} {str(folder)!r} is not a directory.")
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if path.stem in by_stem:
                raise ValueError(
                    f"{flag} {str(folder)!r}: two files share the stem '{path.stem}' ({by_stem[path.stem].name}, "
                    f"{path.name}); stems must be unique to match images with labels."
                )
            by_stem[path.stem] = path
    return by_stem


def folder_source(
    image_dir: str, mask_dir: str, split: str, skip_bad: bool, flags: tuple[str, str]
) -> tuple[PairSource, int]:
    """Pair images with label maps by stem. Returns the source and the number of unmatched images."""
    images = _list_images(Path(image_dir), flags[0])
    masks = _list_images(Path(mask_dir), flags[1])
    description = f"{split} data in {flags[0]} {image_dir!r} / {flags[1]} {mask_dir!r}"
    if not images:
        raise ValueError(
            f"Split '{split}' is empty: no images ({', '.join(IMAGE_EXTENSIONS)}) in {flags[0]} {image_dir!r}."
        )
    unmatched = [name for name in images if name not in masks]
    if unmatched:
        message = (
            f"{description}: {len(unmatched)} image(s) have no label file with the same stem, e.g. "
            f"{[images[n].name for n in unmatched[:5]]}"
        )
        if not skip_bad:
            raise ValueError(message + "; add the labels, or pass --skip_bad_examples to skip such images.")
        logger.warning("%s; skipping them (--skip_bad_examples).", message)
    extra = [name for name in masks if name not in images]
    if extra:
        logger.warning(
            "%s: %d label file(s) have no image and are ignored, e.g. %s", description, len(extra), extra[:5]
        )
    pairs = [(images[stem], masks[stem]) for stem in images if stem in masks]
    if not pairs:
        raise ValueError(f"Split '{split}' is empty: no image in {flags[0]} {image_dir!r} has a matching label file.")
    return PairSource(pairs, description), len(unmatched)


def cityscapes_source(root: str, split: str, ignore_index: int, skip_bad: bool) -> tuple[PairSource, int]:
    """Cityscapes fine annotations of one split; 'validation' falls back to the official 'val' folder."""
    base = Path(root)
    folder = split
    if not (base / "leftImg8bit" / folder).is_dir() and split == "validation":
        folder = "val"
    image_root, label_root = base / "leftImg8bit" / folder, base / "gtFine" / folder
    if not image_root.is_dir():
        raise FileNotFoundError(
            f"Cityscapes split '{split}': {str(image_root)!r} is not a directory (expected "
            "<cityscapes_root>/leftImg8bit/<split>/<city>/*_leftImg8bit.png)."
        )
    pairs: list[tuple[Path, Path]] = []
    unmatched: list[Path] = []
    for image_path in sorted(image_root.glob("*/*_leftImg8bit.png")):
        prefix = image_path.name[: -len("_leftImg8bit.png")]
        label_path = label_root / image_path.parent.name / f"{prefix}_gtFine_labelIds.png"
        (pairs.append((image_path, label_path)) if label_path.is_file() else unmatched.append(image_path))
    description = f"Cityscapes split '{split}' in {root!r}"
    if unmatched:
        examples = [p.name for p in unmatched[:5]]
        message = f"{description}: {len(unmatched)} image(s) have no gtFine labelIds file, e.g. {examples}"
        if not skip_bad:
            raise ValueError(message + "; pass --skip_bad_examples to skip them.")
        logger.warning("%s; skipping them (--skip_bad_examples).", message)
    if not pairs:
        raise ValueError(f"{description} is empty: no */*_leftImg8bit.png with a matching gtFine labelIds file.")
    return PairSource(pairs, description, lut=cityscapes_lut(ignore_index), ignore_index=ignore_index), len(unmatched)


# Splits that Hub datasets name in several ways: a requested name falls back to its aliases (with a log line).
SPLIT_ALIASES = {"validation": ("val", "valid", "dev"), "val": ("validation", "valid")}


def pick_split(available: Sequence[str], requested: str, flag: str, where: str, *, can_carve: bool = True) -> str:
    """The split ``requested`` of a dataset with ``available`` splits, else one of its aliases; an error that
    lists the splits and says which flag to pass (``can_carve``: ``--eval_split_fraction`` can make the split)."""
    if requested in available:
        return requested
    for alias in SPLIT_ALIASES.get(requested, ()):
        if alias in available:
            logger.info("%s: split '%s' not found, using '%s'.", where, requested, alias)
            return alias
    hint = f"pass {flag} <split>"
    if flag == "--eval_split":
        carve = ", --eval_split_fraction 0.1 (carve it from the training split)" if can_carve else ""
        hint += f"{carve} or --eval_split none"
    raise ValueError(f"{where}: split '{requested}' not found (available: {list(available)}); {hint}.")
