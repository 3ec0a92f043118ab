"""Labels: class-name files, the Cityscapes table, label-map decoding and the raw-to-training-id mapping."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..presets import find_configuration_file
from .bad_examples import ExampleProblem
from .images import is_image_value, open_image

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255


_CITYSCAPES_LABELS: tuple[tuple[str, int, int], ...] = (
    ("unlabeled", 0, 255),
    ("ego vehicle", 1, 255),
    ("rectification border", 2, 255),
    ("out of roi", 3, 255),
    ("static", 4, 255),
    ("dynamic", 5, 255),
    ("ground", 6, 255),
    ("road", 7, 0),
    ("sidewalk", 8, 1),
    ("parking", 9, 255),
    ("rail track", 10, 255),
    ("building", 11, 2),
    ("wall", 12, 3),
    ("fence", 13, 4),
    ("guard rail", 14, 255),
    ("bridge", 15, 255),
    ("tunnel", 16, 255),
    ("pole", 17, 5),
    ("polegroup", 18, 255),
    ("traffic light", 19, 6),
    ("traffic sign", 20, 7),
    ("vegetation", 21, 8),
    ("terrain", 22, 9),
    ("sky", 23, 10),
    ("person", 24, 11),
    ("rider", 25, 12),
    ("car", 26, 13),
    ("truck", 27, 14),
    ("bus", 28, 15),
    ("caravan", 29, 255),
    ("trailer", 30, 255),
    ("train", 31, 16),
    ("motorcycle", 32, 17),
    ("bicycle", 33, 18),
    # ("license plate", -1, -1) never appears in labelIds images.
)
CITYSCAPES_LABELID_TO_TRAINID: dict[int, int] = {label_id: train_id for _, label_id, train_id in _CITYSCAPES_LABELS}
"""Official Cityscapes labelId -> trainId (255 = ignored). labelIds not listed (34..255) are ignored too."""
CITYSCAPES_ID2LABEL: dict[int, str] = {
    train_id: name for name, _, train_id in _CITYSCAPES_LABELS if train_id != 255
}
"""The 19 Cityscapes training classes, trainId -> name."""


def cityscapes_lut(ignore_index: int) -> np.ndarray:
    """A 256-entry labelId -> trainId lookup table with ``ignore_index`` for every ignored labelId."""
    lut = np.full(256, ignore_index, dtype=np.int64)
    for label_id, train_id in CITYSCAPES_LABELID_TO_TRAINID.items():
        if train_id != 255:
            lut[label_id] = train_id
    return lut


# --------------------------------------------------------------------------------------------------

SYNTHETIC_CLASS_NAMES = ("background", "disc", "square", "triangle", "ring", "cross", "bar")


def synthetic_id2label(num_labels: int = 4) -> dict[int, str]:
    """Class names of the synthetic dataset: background, disc, square, triangle, ring, cross, bar."""
    if not 2 <= num_labels <= len(SYNTHETIC_CLASS_NAMES):
        raise ValueError(f"synthetic num_labels must be in 2..{len(SYNTHETIC_CLASS_NAMES)}, got {num_labels}.")
    return dict(enumerate(SYNTHETIC_CLASS_NAMES[:num_labels]))


def load_id2label_file(path: str | os.PathLike) -> dict[int, str]:
    """Read class names from JSON: ``{"0": "sky", ...}``, ``["sky", ...]`` or ``{"id2label": {...}}``.

    A path that does not exist but is a bare file name is also looked up among the packaged
    configuration files (so ``camvid_id2label.json`` works from an installed package).
    Ids must be exactly 0..N-1.
    """
    file = find_configuration_file(path)
    if file is None:
        raise FileNotFoundError(
            f"id2label file {str(path)!r} not found (also looked among the packaged configuration files)."
        )
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"id2label file {str(file)!r} is not valid JSON: {err}") from err
    if isinstance(raw, dict) and "id2label" in raw and isinstance(raw["id2label"], (dict, list)):
        raw = raw["id2label"]
    if isinstance(raw, list):
        raw = {i: name for i, name in enumerate(raw)}
    if not isinstance(raw, dict):
        raise ValueError(f"id2label file {str(file)!r} must hold a JSON object {{\"0\": \"name\", ...}} or a list.")
    try:
        id2label = {int(k): str(v) for k, v in raw.items()}
    except ValueError as err:
        raise ValueError(f"id2label file {str(file)!r}: keys must be integer class ids ({err}).") from err
    check_id2label(id2label, f"id2label file {str(file)!r}")
    return dict(sorted(id2label.items()))


def hub_id2label(dataset_name: str) -> dict[int, str] | None:
    """``id2label.json`` at the root of a Hub dataset repository (the HF segmentation examples' convention), or
    None where there is none (or the Hub cannot be reached)."""
    try:
        from huggingface_hub import hf_hub_download

        return load_id2label_file(hf_hub_download(dataset_name, "id2label.json", repo_type="dataset"))
    except Exception as err:  # not there, offline, gated, ...: the caller falls through to its next way
        logger.debug("No id2label.json in Hub dataset %s: %s", dataset_name, err)
        return None


def check_id2label(id2label: dict[int, str], where: str) -> None:
    """Raise ``ValueError`` (naming ``where``) unless the class ids are exactly 0..N-1."""
    if not id2label:
        raise ValueError(f"{where}: no classes.")
    if sorted(id2label) != list(range(len(id2label))):
        raise ValueError(f"{where}: class ids must be exactly 0..{len(id2label) - 1}, got {sorted(id2label)}.")


def find_class_label(feature: Any) -> Any:
    """Find a ``datasets.ClassLabel`` inside a (possibly nested) feature, else None."""
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return feature
    if isinstance(feature, dict):
        for value in feature.values():
            found = find_class_label(value)
            if found is not None:
                return found
        return None
    if isinstance(feature, (list, tuple)):
        return find_class_label(feature[0]) if feature else None
    inner = getattr(feature, "feature", None)  # datasets.List / Sequence / LargeList
    return find_class_label(inner) if inner is not None else None


# --------------------------------------------------------------------------------------------------
# Decoding and label mapping

def label_to_array(value: Any) -> np.ndarray:
    """Turn a label value (image-like or nested numbers) into an int64 (H, W) array of raw class ids."""
    if value is None or is_image_value(value):
        image = open_image(value, "label")
        array = np.asarray(image)
    else:
        array = np.asarray(value)
    if array.ndim == 3:
        # A 3-channel label is fine only if it is grey (all colour channels equal): take one channel. A 2-channel
        # one (mode LA/PA) is class ids plus transparency: the ids are channel 0; the alpha is not a class.
        colour = array[..., : 3 if array.shape[-1] >= 3 else 1]
        if not (colour == colour[..., :1]).all():
            raise ExampleProblem(
                "bad_label_format",
                "the label is a colour image whose channels differ (a colour-coded mask? pass --label_colors "
                "FILE.json mapping class ids to colours); labels must otherwise be single-channel maps of class ids",
            )
        array = array[..., 0]
    if array.ndim != 2:
        raise ExampleProblem("bad_label_format", f"the label must be a 2-D map of class ids, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(np.mod(array, 1) == 0):
            raise ExampleProblem("bad_label_format", f"label values must be integer class ids (dtype {array.dtype})")
    return array.astype(np.int64)


@dataclass(frozen=True)
class LabelMapper:
    """Maps raw label values to training ids and validates them.

    Order: pixels whose RAW value is in ``void_labels`` become ``ignore_index``; then, with
    ``reduce_labels``, 0 -> ``ignore_index``, ``ignore_index`` stays, others -1 (as
    ``DSNetImageProcessor.reduce_label``). Valid results are ``ignore_index`` or ``0..num_labels-1``.
    """

    num_labels: int | None
    ignore_index: int = IGNORE_INDEX
    void_labels: tuple[int, ...] = ()
    reduce_labels: bool = False

    def map(self, raw: np.ndarray) -> np.ndarray:
        """Apply void and reduce mapping to an int64 array of raw values."""
        void = np.isin(raw, self.void_labels) if self.void_labels else None
        label = raw
        if self.reduce_labels:
            label = raw - 1
            label[(raw == 0) | (raw == self.ignore_index)] = self.ignore_index
        elif void is not None:
            label = raw.copy()
        if void is not None:
            label[void] = self.ignore_index
        return label

    def invalid_values(self, label: np.ndarray) -> np.ndarray:
        """Sorted unique values that are neither ``ignore_index`` nor in ``0..num_labels-1``."""
        if self.num_labels is None:
            return np.empty(0, dtype=np.int64)
        bad = (label != self.ignore_index) & ((label < 0) | (label >= self.num_labels))
        return np.unique(label[bad]) if bad.any() else np.empty(0, dtype=np.int64)
