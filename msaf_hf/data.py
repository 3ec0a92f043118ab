"""Segmentation data for training and evaluating DSNet: sources, label handling, augmentation, batching.

The training script only needs three things from this module::

    data = load_segmentation_data(data_args, seed=training_seed)   # SegmentationData
    data.train.set_epoch(epoch)                                      # before every epoch (and on resume)
    loader = make_dataloader(data.train, batch_size, shuffle=True, seed=training_seed, drop_last=True)

Every example comes out as ``{"pixel_values": float32 (3, H, W), "labels": int64 (H, W)}`` and
:func:`collate_fn` stacks them.

Sources (pick exactly one in :class:`DataArguments`):

* ``dataset_name``: a Hub dataset id or a local folder laid out like a Hub dataset repository
  (e.g. parquet shards ``train-*.parquet``), read with ``datasets.load_dataset``;
* ``image_dir`` + ``mask_dir``: a folder of images and a folder of label maps, matched by file stem;
* ``cityscapes_root``: the official Cityscapes layout, labelIds mapped to the 19 trainIds;
* ``synthetic``: a generated, learnable toy set (:func:`make_synthetic_segmentation_dataset`).

Design notes (why things are the way they are):

* Nothing is decoded up front. Each example is decoded, label-mapped and validated when it is read.
* Augmentation randomness comes only from ``(seed, epoch, index)`` (see :func:`example_rng`), never
  from global RNG state, so an example looks the same whatever the number of DataLoader workers,
  the process it runs in, or whether the run was resumed.
* Bad examples (unreadable file, image/label size mismatch, label values out of range) raise
  :class:`BadExampleError` naming the split, index and file. With ``skip_bad_examples`` the dataset
  instead serves the next good example (index + 1, + 2, ... wrapping around), which is a pure function
  of the data, so the data order stays deterministic; see :class:`SegmentationDataset`.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import PIL.Image
import torch
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

logger = logging.getLogger(__name__)

__all__ = [
    "CITYSCAPES_ID2LABEL",
    "CITYSCAPES_LABELID_TO_TRAINID",
    "BadExampleError",
    "DataArguments",
    "DataStats",
    "LabelMapper",
    "SegmentationData",
    "SegmentationDataset",
    "SegmentationEvalTransform",
    "eval_image_processor",
    "SegmentationTrainTransform",
    "SkipStats",
    "collate_fn",
    "example_rng",
    "load_id2label_file",
    "load_segmentation_data",
    "make_dataloader",
    "make_synthetic_segmentation_dataset",
    "synthetic_id2label",
]

IGNORE_INDEX = 255
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Inferring num_labels means decoding every training label map once: only done for small sets.
MAX_LABEL_SCAN_EXAMPLES = 500
# Columns used (in this order) to name an example in error messages when --name_column is not given.
_NAME_COLUMN_CANDIDATES = ("name", "file_name", "filename", "image_id", "id")
_NO_EVAL_SPLIT = {"", "none", "null"}

# --------------------------------------------------------------------------------------------------
# Cityscapes: the official label table (cityscapesScripts/helpers/labels.py): (name, id, trainId).
# --------------------------------------------------------------------------------------------------
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


def _cityscapes_lut(ignore_index: int) -> np.ndarray:
    """A 256-entry labelId -> trainId lookup table with ``ignore_index`` for every ignored labelId."""
    lut = np.full(256, ignore_index, dtype=np.int64)
    for label_id, train_id in CITYSCAPES_LABELID_TO_TRAINID.items():
        if train_id != 255:
            lut[label_id] = train_id
    return lut


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------
@dataclass
class DataArguments:
    """What data to train and evaluate on and how to augment it (parsable by ``HfArgumentParser``).

    Exactly one source must be chosen: ``dataset_name``, ``image_dir``/``mask_dir``,
    ``cityscapes_root`` or ``synthetic``. Structural mistakes (wrong list lengths, bad ranges) raise in
    ``__post_init__``; the "exactly one source" rule is checked by :meth:`source_kind`, which
    :func:`load_segmentation_data` calls, so a default ``DataArguments()`` can still be built.
    """

    # ---- source: Hub / local Hub-style folder
    dataset_name: Optional[str] = field(
        default=None,
        metadata={
            "help": "A Hub dataset id, or a local folder laid out like a Hub dataset repository (e.g. "
            "train-*.parquet / validation-*.parquet shards), loaded with datasets.load_dataset."
        },
    )
    dataset_config_name: Optional[str] = field(
        default=None, metadata={"help": "The dataset configuration name passed to datasets.load_dataset."}
    )
    dataset_cache_dir: Optional[str] = field(
        default=None, metadata={"help": "Cache directory for datasets.load_dataset (default: the datasets cache)."}
    )
    train_split: str = field(
        default="train",
        metadata={"help": "Training split (a dataset split name, or the Cityscapes split folder)."},
    )
    eval_split: Optional[str] = field(
        default="validation",
        metadata={
            "help": "Evaluation split ('validation' also finds 'val'/'valid'); 'none' for no evaluation data. "
            "Ignored with --eval_split_fraction or --eval_image_dir."
        },
    )
    eval_split_fraction: Optional[float] = field(
        default=None,
        metadata={
            "help": "Carve this fraction (0..1) of the training examples out as the evaluation set "
            "(deterministic, see --eval_split_seed) instead of using a separate evaluation split."
        },
    )
    eval_split_seed: int = field(
        default=42, metadata={"help": "Seed of the shuffle that picks the --eval_split_fraction examples."}
    )
    image_column: str = field(default="image", metadata={"help": "Dataset column holding the images."})
    label_column: str = field(
        default="label", metadata={"help": "Dataset column holding the label maps (class ids per pixel)."}
    )
    name_column: Optional[str] = field(
        default=None,
        metadata={
            "help": "Dataset column naming each example in error messages (default: 'name', 'file_name', "
            "'filename', 'image_id' or 'id' if present, else the image's file path)."
        },
    )
    # ---- source: image / mask folders
    image_dir: Optional[str] = field(
        default=None, metadata={"help": "Folder of training images (matched to --mask_dir files by file stem)."}
    )
    mask_dir: Optional[str] = field(
        default=None, metadata={"help": "Folder of training label maps (single-channel class ids, e.g. PNG)."}
    )
    eval_image_dir: Optional[str] = field(default=None, metadata={"help": "Folder of evaluation images."})
    eval_mask_dir: Optional[str] = field(default=None, metadata={"help": "Folder of evaluation label maps."})
    # ---- source: Cityscapes
    cityscapes_root: Optional[str] = field(
        default=None,
        metadata={
            "help": "Cityscapes root with leftImg8bit/<split>/<city>/*_leftImg8bit.png and "
            "gtFine/<split>/<city>/*_gtFine_labelIds.png; labelIds are mapped to the 19 trainIds."
        },
    )
    # ---- source: synthetic
    synthetic: bool = field(
        default=False,
        metadata={
            "help": "Use the generated, learnable toy dataset (no download; see make_synthetic_segmentation_dataset)."
        },
    )
    synthetic_num_train: int = field(default=512, metadata={"help": "Synthetic training examples."})
    synthetic_num_eval: int = field(default=64, metadata={"help": "Synthetic evaluation examples."})
    synthetic_image_size: list[int] = field(
        default_factory=lambda: [64, 64], metadata={"help": "Synthetic image size: height width (or one value)."}
    )
    synthetic_num_labels: int = field(
        default=4, metadata={"help": "Synthetic classes including background (2..7)."}
    )
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the synthetic dataset generator."})
    # ---- labels
    void_labels: list[int] = field(
        default_factory=list,
        metadata={"help": "Raw label values mapped to --ignore_index (e.g. 11 for CamVid)."},
    )
    reduce_labels: bool = field(
        default=False,
        metadata={"help": "ADE20K-style: label 0 becomes --ignore_index, every other label is decreased by 1."},
    )
    ignore_index: int = field(
        default=IGNORE_INDEX, metadata={"help": "Label value of pixels that are not trained on or scored."}
    )
    id2label_file: Optional[str] = field(
        default=None,
        metadata={
            "help": "JSON file of class names: {\"0\": \"sky\", ...} or a list. A bare file name that does not "
            "exist is also looked up among the packaged ones (e.g. camvid_id2label.json). Takes precedence "
            "over names found in the dataset."
        },
    )
    skip_bad_examples: bool = field(
        default=False,
        metadata={
            "help": "Skip (log, count and replace with the next good one) examples that cannot be read, whose "
            "image and label sizes differ or whose labels are out of range, instead of raising."
        },
    )
    max_train_samples: Optional[int] = field(
        default=None, metadata={"help": "Use only the first N training examples (debugging, quick runs)."}
    )
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "Use only the first N evaluation examples."}
    )
    # ---- augmentation (training)
    crop_size: Optional[list[int]] = field(
        default=None,
        metadata={
            "help": "Training crop: height width (or one value for a square). Default: the synthetic image "
            "size with --synthetic, else 512 512. DSNet needs multiples of 8."
        },
    )
    base_size: Optional[int] = field(
        default=None,
        metadata={
            "help": "Long side the random scale is relative to (e.g. 2048 for Cityscapes); default: each "
            "image's own long side."
        },
    )
    scale_range: list[float] = field(
        default_factory=lambda: [0.5, 2.0], metadata={"help": "Random scale factor range: min max."}
    )
    scale_step: Optional[float] = field(
        default=None,
        metadata={
            "help": "If set, scale factors are min + k*step (discrete, as the published code does with 0.1); "
            "default: continuous uniform in the range."
        },
    )
    hflip_probability: float = field(default=0.5, metadata={"help": "Probability of a horizontal flip."})
    # ---- evaluation
    eval_size: Optional[list[int]] = field(
        default=None,
        metadata={
            "help": "Evaluation input size: height width, or one value for the long side (aspect kept). "
            "Default: the whole image at native size. Labels always stay at native size."
        },
    )
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})

    def __post_init__(self) -> None:
        # Normalise the 'no eval split' spellings once so the rest of the code checks for None only.
        if self.eval_split is not None and self.eval_split.strip().lower() in _NO_EVAL_SPLIT:
            self.eval_split = None
        # YAML/JSON configs may give a single number where a list is expected (crop_size: 512).
        for name in ("void_labels", "crop_size", "eval_size", "synthetic_image_size"):
            if isinstance(getattr(self, name), (int, np.integer)):
                setattr(self, name, [int(getattr(self, name))])
        self.void_labels = [int(v) for v in (self.void_labels or [])]
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(
                f"DataArguments.scale_range must be two numbers 0 < min <= max, got {self.scale_range!r}."
            )
        if self.scale_step is not None and self.scale_step <= 0:
            raise ValueError(f"DataArguments.scale_step must be > 0 (or unset), got {self.scale_step!r}.")
        if not 0.0 <= self.hflip_probability <= 1.0:
            raise ValueError(f"DataArguments.hflip_probability must be in [0, 1], got {self.hflip_probability!r}.")
        for name in ("crop_size", "eval_size", "synthetic_image_size"):
            value = getattr(self, name)
            if value is not None and (len(value) not in (1, 2) or any(int(v) <= 0 for v in value)):
                raise ValueError(
                    f"DataArguments.{name} must be one or two positive integers (height width), got {value!r}."
                )
        if self.base_size is not None and self.base_size <= 0:
            raise ValueError(f"DataArguments.base_size must be a positive integer, got {self.base_size!r}.")
        if self.eval_split_fraction is not None and not 0.0 < self.eval_split_fraction < 1.0:
            raise ValueError(
                f"DataArguments.eval_split_fraction must be strictly between 0 and 1, got {self.eval_split_fraction!r}."
            )
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"DataArguments.{name} must be a positive integer (or unset), got {value!r}.")
        if (self.image_dir is None) != (self.mask_dir is None):
            raise ValueError("DataArguments: --image_dir and --mask_dir must be given together.")
        if (self.eval_image_dir is None) != (self.eval_mask_dir is None):
            raise ValueError("DataArguments: --eval_image_dir and --eval_mask_dir must be given together.")
        if self.eval_image_dir is not None and self.image_dir is None:
            raise ValueError("DataArguments: --eval_image_dir/--eval_mask_dir need --image_dir/--mask_dir.")
        if self.eval_image_dir is not None and self.eval_split_fraction is not None:
            raise ValueError(
                "DataArguments: give either --eval_image_dir/--eval_mask_dir or --eval_split_fraction, not both."
            )
        if not 2 <= self.synthetic_num_labels <= len(SYNTHETIC_CLASS_NAMES):
            raise ValueError(
                f"DataArguments.synthetic_num_labels must be in 2..{len(SYNTHETIC_CLASS_NAMES)}, "
                f"got {self.synthetic_num_labels}."
            )
        if self.num_workers < 0:
            raise ValueError(f"DataArguments.num_workers must be >= 0, got {self.num_workers}.")

    def source_kind(self) -> str:
        """Return which source is selected: 'hub', 'folder', 'cityscapes' or 'synthetic'.

        Raises ``ValueError`` unless exactly one source is given.
        """
        chosen = [
            kind
            for kind, given in (
                ("hub", self.dataset_name is not None),
                ("folder", self.image_dir is not None),
                ("cityscapes", self.cityscapes_root is not None),
                ("synthetic", bool(self.synthetic)),
            )
            if given
        ]
        if len(chosen) != 1:
            raise ValueError(
                "DataArguments: choose exactly one data source: --dataset_name, --image_dir/--mask_dir, "
                f"--cityscapes_root or --synthetic (got {chosen or 'none'})."
            )
        return chosen[0]

    def resolved_crop_size(self) -> tuple[int, int]:
        """The training crop (height, width), applying the documented default."""
        if self.crop_size is not None:
            return _pair(self.crop_size)
        if self.synthetic:
            return _pair(self.synthetic_image_size)
        return (512, 512)


def _pair(values: Sequence[int]) -> tuple[int, int]:
    """One value -> (v, v); two values -> (h, w)."""
    values = [int(v) for v in values]
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


# --------------------------------------------------------------------------------------------------
# Errors and skip statistics
# --------------------------------------------------------------------------------------------------
SKIP_REASONS: dict[int, str] = {
    1: "unreadable_image",
    2: "unreadable_label",
    3: "size_mismatch",
    4: "label_out_of_range",
    5: "bad_label_format",
}
_REASON_CODES = {name: code for code, name in SKIP_REASONS.items()}


class _ExampleProblem(Exception):
    """Raised by sources/label mapping; the dataset turns it into a BadExampleError with full context."""

    def __init__(self, reason: str, detail: str, name: Optional[str] = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.name = name


class BadExampleError(ValueError):
    """An example that cannot be used: unreadable file, image/label size mismatch or bad label values.

    Attributes: ``split``, ``index`` (in the dataset), ``source_index`` (row/file number in the source),
    ``name`` (file or example name when known), ``reason`` (one of ``SKIP_REASONS.values()``), ``detail``.
    Constructible from a message alone, so DataLoader workers can re-raise it in the main process.
    """

    def __init__(
        self,
        message: str,
        *,
        split: Optional[str] = None,
        index: Optional[int] = None,
        source_index: Optional[int] = None,
        name: Optional[str] = None,
        reason: Optional[str] = None,
        detail: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.split, self.index, self.source_index = split, index, source_index
        self.name, self.reason, self.detail = name, reason, detail

    @classmethod
    def for_example(
        cls, split: str, index: int, source_index: int, name: Optional[str], reason: str, detail: str
    ) -> "BadExampleError":
        """Build the error with a message naming the split, index, source row and file/example name."""
        where = f"split '{split}', index {index}"
        if source_index != index:
            where += f" (source row {source_index})"
        if name:
            where += f", name '{name}'"
        message = (
            f"Bad example in {where}: {detail}. Fix or remove it, or pass --skip_bad_examples to skip "
            "such examples (they are counted and logged)."
        )
        return cls(
            message, split=split, index=index, source_index=source_index, name=name, reason=reason, detail=detail
        )


class SkipStats:
    """Which examples of one split were found bad and skipped, shared across DataLoader workers.

    Badness is a property of the data (not of the augmentation), so it is recorded once per example in
    a shared-memory uint8 tensor (one reason code per index). Workers write it and the main process
    reads it, so the counts are right whatever ``num_workers`` is; writes are idempotent, so no lock is
    needed. An example is only known to be bad once some process has tried to read it.
    """

    def __init__(self, split: str, size: int) -> None:
        self.split = split
        self._codes = torch.zeros(max(size, 1), dtype=torch.uint8).share_memory_()
        self.unmatched_files = 0
        """Image files dropped when the source was built because no label file matched them."""

    def record(self, index: int, reason: str) -> bool:
        """Mark ``index`` bad; return True when it was not known to be bad before."""
        first = int(self._codes[index]) == 0
        self._codes[index] = _REASON_CODES.get(reason, 255)
        return first

    def is_bad(self, index: int) -> bool:
        """Whether ``index`` is already known to be bad."""
        return int(self._codes[index]) != 0

    @property
    def num_skipped(self) -> int:
        """Number of distinct bad examples found so far (not counting unmatched files)."""
        return int((self._codes != 0).sum())

    def counts(self) -> dict[str, int]:
        """Number of skipped examples per reason (only reasons seen)."""
        values, counts = torch.unique(self._codes[self._codes != 0], return_counts=True)
        return {SKIP_REASONS.get(int(v), "other"): int(c) for v, c in zip(values, counts)}

    def bad_indices(self) -> list[int]:
        """Dataset indices found bad so far, ascending."""
        return torch.nonzero(self._codes, as_tuple=True)[0].tolist()

    def __repr__(self) -> str:
        return (
            f"SkipStats(split={self.split!r}, skipped={self.num_skipped}, by_reason={self.counts()}, "
            f"unmatched_files={self.unmatched_files})"
        )


@dataclass
class DataStats:
    """Skip statistics of both splits (read them at any time, e.g. after each epoch)."""

    train: SkipStats
    eval: Optional[SkipStats] = None

    def summary(self) -> dict[str, int]:
        """Flat counts, handy for logging: ``{"train_skipped": .., "train_unmatched_files": .., ...}``."""
        out: dict[str, int] = {}
        for prefix, stats in (("train", self.train), ("eval", self.eval)):
            if stats is not None:
                out[f"{prefix}_skipped"] = stats.num_skipped
                out[f"{prefix}_unmatched_files"] = stats.unmatched_files
        return out


# --------------------------------------------------------------------------------------------------
# id2label
# --------------------------------------------------------------------------------------------------
def _packaged_configuration_dir() -> Optional[Path]:
    """The folder holding the packaged JSON/YAML files (``configuration/``), if found."""
    from .presets import configuration_dir

    try:
        path = configuration_dir()
    except (ModuleNotFoundError, TypeError):
        return None
    return path if path.is_dir() else None


def load_id2label_file(path: str | os.PathLike) -> dict[int, str]:
    """Read class names from JSON: ``{"0": "sky", ...}``, ``["sky", ...]`` or ``{"id2label": {...}}``.

    A path that does not exist but is a bare file name is also looked up among the packaged
    configuration files (so ``camvid_id2label.json`` works from an installed package).
    Ids must be exactly 0..N-1.
    """
    file = Path(path)
    if not file.is_file():
        packaged = _packaged_configuration_dir()
        if file.parent == Path(".") and packaged is not None and (packaged / file.name).is_file():
            file = packaged / file.name
        else:
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
    _check_id2label(id2label, f"id2label file {str(file)!r}")
    return dict(sorted(id2label.items()))


def _check_id2label(id2label: dict[int, str], where: str) -> None:
    if not id2label:
        raise ValueError(f"{where}: no classes.")
    if sorted(id2label) != list(range(len(id2label))):
        raise ValueError(f"{where}: class ids must be exactly 0..{len(id2label) - 1}, got {sorted(id2label)}.")


def _find_class_label(feature: Any) -> Any:
    """Find a ``datasets.ClassLabel`` inside a (possibly nested) feature, else None."""
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return feature
    if isinstance(feature, dict):
        for value in feature.values():
            found = _find_class_label(value)
            if found is not None:
                return found
        return None
    if isinstance(feature, (list, tuple)):
        return _find_class_label(feature[0]) if feature else None
    inner = getattr(feature, "feature", None)  # datasets.List / Sequence / LargeList
    return _find_class_label(inner) if inner is not None else None


# --------------------------------------------------------------------------------------------------
# Decoding and label mapping
# --------------------------------------------------------------------------------------------------
def _open_image(value: Any, what: str) -> PIL.Image.Image:
    """Decode a PIL image from a datasets Image value ({'bytes', 'path'}), bytes, a path or a PIL image.

    Raises _ExampleProblem with reason 'unreadable_<what>' when it cannot be decoded.
    """
    reason = f"unreadable_{what}"
    if value is None or (isinstance(value, dict) and value.get("bytes") is None and not value.get("path")):
        raise _ExampleProblem(reason, f"the {what} is missing (empty value)")
    try:
        if isinstance(value, PIL.Image.Image):
            image = value
        elif isinstance(value, dict) and (value.get("bytes") is not None or value.get("path")):
            if value.get("bytes") is not None:
                image = PIL.Image.open(io.BytesIO(value["bytes"]))
            else:
                image = PIL.Image.open(value["path"])
        elif isinstance(value, (bytes, bytearray)):
            image = PIL.Image.open(io.BytesIO(value))
        elif isinstance(value, (str, os.PathLike)):
            image = PIL.Image.open(value)
        else:
            raise _ExampleProblem(reason, f"{what} has unsupported type {type(value).__name__}")
        image.load()  # force the decode here so truncated/corrupt files fail now, with context
    except _ExampleProblem:
        raise
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        raise _ExampleProblem(reason, f"cannot decode the {what} ({type(err).__name__}: {err})") from err
    return image


# PIL modes of high-bit-depth grayscale images: PNG/TIFF 16-bit open as I;16* (or I in older Pillow).
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """An 8-bit RGB copy of ``image``, scaled by its bit depth.

    ``Image.convert("RGB")`` clips 16-bit grayscale (``I;16``, ``I``) at 255 instead of scaling it; here 0..65535
    maps linearly onto 0..255 (as ``DSNetImageProcessor`` maps it onto [0, 1]). A 32-bit ``I`` image must hold
    16-bit values; float ``F`` images must hold values in [0, 1].
    """
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        array = np.asarray(image).astype(np.float64)
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise _ExampleProblem(
                "unreadable_image", f"the {image.mode} image has values in [{array.min():g}, {array.max():g}], outside "
                "the 16-bit range 0..65535; convert it to 8- or 16-bit first")
        grey = PIL.Image.fromarray(np.round(array / 257.0).astype(np.uint8))  # 65535 / 255 = 257
        return grey.convert("RGB")
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        if array.size and (array.min() < 0 or array.max() > 1):
            raise _ExampleProblem(
                "unreadable_image", f"the float image has values in [{array.min():g}, {array.max():g}]; float images "
                "must be in [0, 1] (or convert them to 8- or 16-bit)")
        return PIL.Image.fromarray(np.round(array * 255.0).astype(np.uint8)).convert("RGB")
    return image.convert("RGB")


def _is_image_value(value: Any) -> bool:
    return isinstance(value, (PIL.Image.Image, dict, bytes, bytearray, str, os.PathLike))


def _label_to_array(value: Any) -> np.ndarray:
    """Turn a label value (image-like or nested numbers) into an int64 (H, W) array of raw class ids."""
    if value is None or _is_image_value(value):
        image = _open_image(value, "label")
        array = np.asarray(image)
    else:
        array = np.asarray(value)
    if array.ndim == 3:
        # A 3-channel label is fine only if it is grey (all colour channels equal): take one channel. A 2-channel
        # one (mode LA/PA) is class ids plus transparency: the ids are channel 0; the alpha is not a class.
        colour = array[..., : 3 if array.shape[-1] >= 3 else 1]
        if not (colour == colour[..., :1]).all():
            raise _ExampleProblem(
                "bad_label_format",
                "the label is a colour image whose channels differ (a colour-coded mask?); labels must be "
                "single-channel maps of class ids",
            )
        array = array[..., 0]
    if array.ndim != 2:
        raise _ExampleProblem("bad_label_format", f"the label must be a 2-D map of class ids, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(np.mod(array, 1) == 0):
            raise _ExampleProblem("bad_label_format", f"label values must be integer class ids (dtype {array.dtype})")
    return array.astype(np.int64)


@dataclass(frozen=True)
class LabelMapper:
    """Maps raw label values to training ids and validates them.

    Order: pixels whose RAW value is in ``void_labels`` become ``ignore_index``; then, with
    ``reduce_labels``, 0 -> ``ignore_index``, ``ignore_index`` stays, others -1 (as
    ``DSNetImageProcessor.reduce_label``). Valid results are ``ignore_index`` or ``0..num_labels-1``.
    """

    num_labels: Optional[int]
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


# --------------------------------------------------------------------------------------------------
# Sources: random access to raw (image, label, name), decoded on demand
# --------------------------------------------------------------------------------------------------
@dataclass
class _RawExample:
    image: PIL.Image.Image  # RGB
    label: np.ndarray  # int64 (H, W), source ids (Cityscapes: already trainIds)
    name: Optional[str]


class _HubSource:
    """A ``datasets.Dataset`` split. Image columns are read undecoded and decoded here so that a corrupt
    file becomes a per-example problem with the example's name instead of an anonymous datasets error."""

    def __init__(
        self,
        dataset: Any,
        image_column: str,
        label_column: str,
        name_column: Optional[str],
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

    def __len__(self) -> int:
        return len(self.dataset)

    def _row(self, index: int) -> tuple[dict[str, Any], Optional[str]]:
        row = self.dataset[index]
        name = row.get(self.name_column) if self.name_column else None
        if name is None:
            value = row[self.image_column]
            if isinstance(value, dict) and value.get("path"):
                name = os.path.basename(value["path"])
            elif isinstance(value, (str, os.PathLike)):
                name = os.path.basename(value)
        return row, (str(name) if name is not None else None)

    def load(self, index: int) -> _RawExample:
        row, name = self._row(index)
        try:
            image = to_rgb(_open_image(row[self.image_column], "image"))
            label = _label_to_array(row[self.label_column])
        except _ExampleProblem as problem:
            problem.name = name
            raise
        return _RawExample(image, label, name)

    def load_label(self, index: int) -> np.ndarray:
        row, name = self._row(index)
        try:
            return _label_to_array(row[self.label_column])
        except _ExampleProblem as problem:
            problem.name = name
            raise


class _PairSource:
    """(image file, label file) pairs; optionally maps label values through a lookup table (Cityscapes)."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        description: str,
        lut: Optional[np.ndarray] = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        self.pairs, self.description, self.lut, self.ignore_index = pairs, description, lut, ignore_index

    def __len__(self) -> int:
        return len(self.pairs)

    def _map(self, label: np.ndarray) -> np.ndarray:
        if self.lut is None:
            return label
        out = np.full(label.shape, self.ignore_index, dtype=np.int64)
        inside = (label >= 0) & (label < len(self.lut))
        out[inside] = self.lut[label[inside]]
        return out

    def load(self, index: int) -> _RawExample:
        image_path, label_path = self.pairs[index]
        try:
            image = to_rgb(_open_image(image_path, "image"))
            label = self._map(_label_to_array(label_path))
        except _ExampleProblem as problem:
            problem.name = image_path.name
            raise
        return _RawExample(image, label, image_path.name)

    def load_label(self, index: int) -> np.ndarray:
        image_path, label_path = self.pairs[index]
        try:
            return self._map(_label_to_array(label_path))
        except _ExampleProblem as problem:
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


def _folder_source(
    image_dir: str, mask_dir: str, split: str, skip_bad: bool, flags: tuple[str, str]
) -> tuple[_PairSource, int]:
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
    return _PairSource(pairs, description), len(unmatched)


def _cityscapes_source(root: str, split: str, ignore_index: int, skip_bad: bool) -> tuple[_PairSource, int]:
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
    return _PairSource(pairs, description, lut=_cityscapes_lut(ignore_index), ignore_index=ignore_index), len(unmatched)


# --------------------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------------------
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
        scale_step: Optional[float] = None,
        base_size: Optional[int] = None,
        hflip_probability: float = 0.5,
        ignore_index: int = IGNORE_INDEX,
        image_mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
        image_std: Sequence[float] = IMAGENET_DEFAULT_STD,
    ) -> None:
        self.crop_size = _pair(crop_size)
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


def eval_image_processor(
    eval_size: Optional[Sequence[int]] = None, ignore_index: int = IGNORE_INDEX, reduce_labels: bool = False
) -> Any:
    """The ``DSNetImageProcessor`` of the evaluation protocol, the one definition of evaluation preprocessing
    (training saves it beside its checkpoints; evaluation and the pipeline run it).

    ``eval_size``: None keeps the native size (the published protocol: whole image, single scale); one value
    resizes the long side to it, keeping the aspect ratio (``{"max_height": N, "max_width": N}``); two values
    give (height, width).
    """
    from .image_processing_dsnet import DSNetImageProcessor

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
        self, image: PIL.Image.Image, label: np.ndarray, rng: Optional[np.random.Generator] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pixel_values = self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        return pixel_values, torch.from_numpy(np.require(label, np.int64, ["C", "W"]))


# --------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------
Transform = Callable[[PIL.Image.Image, np.ndarray, np.random.Generator], tuple[torch.Tensor, torch.Tensor]]


class SegmentationDataset(torch.utils.data.Dataset):
    """A map-style dataset of ``{"pixel_values": float32 (3,H,W), "labels": int64 (H,W)}``.

    Each ``__getitem__`` decodes one example, maps and validates its labels, and transforms it with
    ``example_rng(seed, epoch, index)``. Call :meth:`set_epoch` before every epoch (and with the resumed
    epoch when resuming): the epoch lives in shared memory, so persistent DataLoader workers see it.
    (Accelerate only calls ``dataset.set_epoch`` when the sampler has none, so call it yourself.)

    Bad examples raise :class:`BadExampleError`. With ``skip_bad_examples`` a bad index ``i`` is
    logged once, recorded in :attr:`stats` and served by the next good example ``i+1, i+2, ...``
    (wrapping around), transformed with index ``i``'s RNG, so every index still yields an example and
    the output is a deterministic function of (data, seed, epoch, index). ``replacement="masked"``
    (used for evaluation) additionally sets the replacement's labels to ``ignore_index`` so that it
    adds nothing to the metrics.
    """

    def __init__(
        self,
        source: Any,
        split: str,
        transform: Transform,
        label_mapper: LabelMapper,
        *,
        indices: Optional[Sequence[int]] = None,
        seed: int = 0,
        skip_bad_examples: bool = False,
        replacement: str = "duplicate",
    ) -> None:
        if replacement not in ("duplicate", "masked"):
            raise ValueError(f"SegmentationDataset: replacement must be 'duplicate' or 'masked', got {replacement!r}.")
        self.source = source
        self.split = split
        self.transform = transform
        self.label_mapper = label_mapper
        self.indices = list(range(len(source))) if indices is None else [int(i) for i in indices]
        if not self.indices:
            raise ValueError(f"Split '{split}' is empty ({getattr(source, 'description', 'source')}).")
        self.seed = int(seed)
        self.skip_bad_examples = skip_bad_examples
        self.replacement = replacement
        self.stats = SkipStats(split, len(self.indices))
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the augmentation (visible to already-running workers)."""
        self._epoch[0] = int(epoch)

    @property
    def ignore_index(self) -> int:
        return self.label_mapper.ignore_index

    def load_example(self, index: int) -> tuple[PIL.Image.Image, np.ndarray, Optional[str]]:
        """Decode, map and validate example ``index`` without augmentation: (RGB image, int64 label, name).

        Raises :class:`BadExampleError` for a bad example (regardless of ``skip_bad_examples``).
        """
        source_index = self.indices[index]
        name: Optional[str] = None
        try:
            raw = self.source.load(source_index)
            name = raw.name
            width, height = raw.image.size
            if raw.label.shape != (height, width):
                raise _ExampleProblem(
                    "size_mismatch",
                    f"image is {height}x{width} (HxW) but its label is {raw.label.shape[0]}x{raw.label.shape[1]}",
                )
            label = self.label_mapper.map(raw.label)
            bad = self.label_mapper.invalid_values(label)
            if bad.size:
                shown = ", ".join(str(v) for v in bad[:10].tolist()) + (" ..." if bad.size > 10 else "")
                raise _ExampleProblem(
                    "label_out_of_range",
                    f"label values [{shown}] are not class ids 0..{self.label_mapper.num_labels - 1} nor the ignore "
                    f"index {self.label_mapper.ignore_index} (void values can be mapped with --void_labels)",
                )
        except _ExampleProblem as problem:
            raise BadExampleError.for_example(
                self.split, index, source_index, problem.name or name, problem.reason, problem.detail
            ) from problem
        return raw.image, label, name

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError(f"index {index} out of range for split '{self.split}' of {size} examples")
        epoch = self.epoch
        candidate = index
        for _ in range(size):
            if self.skip_bad_examples and self.stats.is_bad(candidate):
                candidate = (candidate + 1) % size  # known bad: don't decode it again
                continue
            try:
                image, label, _ = self.load_example(candidate)
                break
            except BadExampleError as err:
                if not self.skip_bad_examples:
                    raise
                if self.stats.record(candidate, err.reason):
                    logger.warning("Skipping: %s", err)
                candidate = (candidate + 1) % size
        else:
            raise RuntimeError(
                f"Every example of split '{self.split}' is bad ({self.stats}); nothing to serve. "
                f"Check the data source ({getattr(self.source, 'description', 'source')})."
            )
        pixel_values, labels = self.transform(image, label, example_rng(self.seed, epoch, index))
        if candidate != index and self.replacement == "masked":
            labels.fill_(self.ignore_index)
        return {"pixel_values": pixel_values, "labels": labels}


# --------------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------------
def collate_fn(examples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack examples into ``{"pixel_values": (B,3,H,W), "labels": (B,H,W)}``.

    Training crops all have the same size. Evaluation keeps native sizes, so an evaluation batch can
    only mix images of one size: otherwise this raises (use batch size 1 or set --eval_size h w).
    """
    if not examples:
        raise ValueError("collate_fn: got an empty batch.")
    for key in ("pixel_values", "labels"):
        shapes = sorted({tuple(example[key].shape) for example in examples})
        if len(shapes) > 1:
            raise ValueError(
                f"collate_fn: '{key}' of different sizes in one batch {shapes}. Evaluation keeps native image "
                "sizes: use an evaluation batch size of 1, or resize with --eval_size HEIGHT WIDTH."
            )
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.stack([example["labels"] for example in examples]),
    }


def make_dataloader(
    dataset: SegmentationDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader with :func:`collate_fn` and a seeded shuffle (same order for the same seed).

    Use ``drop_last=True`` for training: DSNet's pooled BatchNorms need at least 2 images per batch.
    Workers need no seeding: augmentation randomness comes from (seed, epoch, index) only.
    """
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )


# --------------------------------------------------------------------------------------------------
# Synthetic dataset
# --------------------------------------------------------------------------------------------------
SYNTHETIC_CLASS_NAMES = ("background", "disc", "square", "triangle", "ring", "cross", "bar")
# One strong, well-separated colour per foreground class: colour alone identifies the class, shape
# agrees with it, so even a small CNN learns the task in a few hundred steps.
_SYNTHETIC_COLOURS = np.array(
    [[0, 0, 0], [225, 40, 40], [40, 200, 60], [50, 80, 235], [240, 205, 30], [205, 50, 215], [30, 205, 215]],
    dtype=np.float64,
)
_SYNTHETIC_SPLIT_CODES = {"train": 0, "validation": 1}


def synthetic_id2label(num_labels: int = 4) -> dict[int, str]:
    """Class names of the synthetic dataset: background, disc, square, triangle, ring, cross, bar."""
    if not 2 <= num_labels <= len(SYNTHETIC_CLASS_NAMES):
        raise ValueError(f"synthetic num_labels must be in 2..{len(SYNTHETIC_CLASS_NAMES)}, got {num_labels}.")
    return dict(enumerate(SYNTHETIC_CLASS_NAMES[:num_labels]))


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

    height, width = _pair(image_size)
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


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
@dataclass
class SegmentationData:
    """What :func:`load_segmentation_data` returns."""

    train: SegmentationDataset
    eval: Optional[SegmentationDataset]
    id2label: dict[int, str]
    num_labels: int
    ignore_index: int
    stats: DataStats

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in self.id2label.items()}


_EVAL_SPLIT_ALIASES = {"validation": ("val", "valid", "dev"), "val": ("validation", "valid")}


def _pick_split(available: Sequence[str], requested: str, flag: str, where: str) -> str:
    if requested in available:
        return requested
    for alias in _EVAL_SPLIT_ALIASES.get(requested, ()):
        if alias in available:
            logger.info("%s: split '%s' not found, using '%s'.", where, requested, alias)
            return alias
    hint = f"pass {flag} <split>"
    if flag == "--eval_split":
        hint += ", --eval_split_fraction 0.1 (carve it from the training split) or --eval_split none"
    raise ValueError(f"{where}: split '{requested}' not found (available: {list(available)}); {hint}.")


def _local_id2label_candidates(args: DataArguments) -> list[Path]:
    """Where an ``id2label.json`` shipped with local data may sit."""
    folders: list[Path] = []
    if args.dataset_name is not None and Path(args.dataset_name).is_dir():
        folders.append(Path(args.dataset_name))
    for folder in (args.mask_dir, args.image_dir):
        if folder is not None:
            folders += [Path(folder), Path(folder).parent]
    if args.cityscapes_root is not None:
        folders.append(Path(args.cityscapes_root))
    return [folder / "id2label.json" for folder in folders]


def _hub_id2label(dataset_name: str) -> Optional[dict[int, str]]:
    """``id2label.json`` at the root of a Hub dataset repository (the HF segmentation examples' convention)."""
    try:
        from huggingface_hub import hf_hub_download

        return load_id2label_file(hf_hub_download(dataset_name, "id2label.json", repo_type="dataset"))
    except Exception as err:  # not there, offline, gated, ...: fall through to the next way
        logger.debug("No id2label.json in Hub dataset %s: %s", dataset_name, err)
        return None


def _infer_num_labels(source: Any, indices: Sequence[int], mapper: LabelMapper, where: str) -> int:
    """Scan the (mapped) training labels for the largest class id; only for small datasets."""
    if len(indices) > MAX_LABEL_SCAN_EXAMPLES:
        raise ValueError(
            f"No class names found for {where} (no ClassLabel feature, no id2label.json next to the data) and "
            f"it is too large ({len(indices)} examples) to infer the number of classes cheaply: pass "
            "--id2label_file path/to/id2label.json ({\"0\": \"name0\", ...})."
        )
    largest = -1
    for i in indices:
        try:
            label = mapper.map(source.load_label(i))
        except _ExampleProblem:
            continue  # reported (or skipped) when the example is used
        valid = label[(label != mapper.ignore_index) & (label >= 0)]
        if valid.size:
            largest = max(largest, int(valid.max()))
    if largest < 0:
        raise ValueError(f"{where}: no labelled pixels found while inferring num_labels; pass --id2label_file.")
    logger.warning(
        "%s: no class names found; inferred num_labels=%d from the largest label id in %d training label maps. "
        "Pass --id2label_file to name the classes (and fix their number).",
        where, largest + 1, len(indices),
    )
    return largest + 1


def load_segmentation_data(
    args: DataArguments, *, seed: int = 0, image_processor: Any = None
) -> SegmentationData:
    """Build the training and evaluation datasets described by ``args``.

    ``seed`` seeds the augmentation (pass the training seed). ``image_processor`` preprocesses evaluation images
    (default: :func:`eval_image_processor` of ``args.eval_size``; ``scripts/evaluate.py`` passes the checkpoint's). Class names are resolved in this order:
    ``--id2label_file``; the source's own names (synthetic names, a ``ClassLabel`` feature in the label
    column, the Cityscapes table); an ``id2label.json`` in the local data folder (or at the root of the
    Hub dataset repository); finally, for small datasets only, generic names ``class_<i>`` with the
    count inferred from a label scan. Errors name the source/split at fault.
    """
    kind = args.source_kind()
    if seed < 0:
        raise ValueError(f"load_segmentation_data: seed must be >= 0, got {seed}.")
    void_labels = tuple(args.void_labels)
    reduce_labels = args.reduce_labels
    intrinsic_id2label: Optional[dict[int, str]] = None
    train_unmatched = eval_unmatched = 0
    eval_source: Any = None

    if kind in ("hub", "synthetic"):
        if kind == "synthetic":
            dsd = make_synthetic_segmentation_dataset(
                args.synthetic_num_train, args.synthetic_num_eval, args.synthetic_image_size,
                args.synthetic_num_labels, args.synthetic_seed,
            )
            where = "the synthetic dataset"
            intrinsic_id2label = synthetic_id2label(args.synthetic_num_labels)
            void_labels = tuple(sorted(set(void_labels) | {IGNORE_INDEX}))  # its void value is 255
        else:
            import datasets

            where = f"dataset {args.dataset_name!r}"
            try:
                dsd = datasets.load_dataset(
                    args.dataset_name, args.dataset_config_name, cache_dir=args.dataset_cache_dir
                )
            except Exception as err:
                raise ValueError(
                    f"Could not load {where} with datasets.load_dataset ({type(err).__name__}: {err}). "
                    "--dataset_name must be a Hub dataset id or a local folder laid out like a Hub dataset "
                    "repository (e.g. train-*.parquet and validation-*.parquet shards)."
                ) from err
            if not isinstance(dsd, datasets.DatasetDict):
                dsd = datasets.DatasetDict({args.train_split: dsd})
        train_name = _pick_split(list(dsd), args.train_split, "--train_split", where)
        train_source = _HubSource(
            dsd[train_name], args.image_column, args.label_column, args.name_column, f"{where}, split '{train_name}'"
        )
        if len(train_source) == 0:
            raise ValueError(f"Split '{train_name}' of {where} is empty.")
        if args.eval_split is not None and args.eval_split_fraction is None:
            eval_name = _pick_split(list(dsd), args.eval_split, "--eval_split", where)
            eval_source = _HubSource(
                dsd[eval_name], args.image_column, args.label_column, args.name_column, f"{where}, split '{eval_name}'"
            )
            if len(eval_source) == 0:
                raise ValueError(f"Split '{eval_name}' of {where} is empty.")
        if intrinsic_id2label is None:
            class_label = _find_class_label(train_source.features[args.label_column])
            if class_label is not None:
                intrinsic_id2label = dict(enumerate(class_label.names))
    elif kind == "folder":
        train_source, train_unmatched = _folder_source(
            args.image_dir, args.mask_dir, "train", args.skip_bad_examples, ("--image_dir", "--mask_dir")
        )
        if args.eval_image_dir is not None:
            eval_source, eval_unmatched = _folder_source(
                args.eval_image_dir, args.eval_mask_dir, "eval", args.skip_bad_examples,
                ("--eval_image_dir", "--eval_mask_dir"),
            )
        elif args.eval_split_fraction is None and args.eval_split is not None:
            logger.info("Folder data without --eval_image_dir/--eval_split_fraction: no evaluation set.")
        where = f"--image_dir {args.image_dir!r}"
    else:  # cityscapes
        if void_labels or reduce_labels:
            raise ValueError(
                "--void_labels/--reduce_labels do not apply to --cityscapes_root: labelIds are mapped with the "
                "official trainId table (19 classes, everything else ignored)."
            )
        train_source, train_unmatched = _cityscapes_source(
            args.cityscapes_root, args.train_split, args.ignore_index, args.skip_bad_examples
        )
        if args.eval_split is not None and args.eval_split_fraction is None:
            eval_source, eval_unmatched = _cityscapes_source(
                args.cityscapes_root, args.eval_split, args.ignore_index, args.skip_bad_examples
            )
        intrinsic_id2label = dict(CITYSCAPES_ID2LABEL)
        where = f"Cityscapes in {args.cityscapes_root!r}"

    # Train/eval indices (carving the eval set out of the training source if asked).
    train_indices = list(range(len(train_source)))
    eval_indices: Optional[list[int]] = list(range(len(eval_source))) if eval_source is not None else None
    if args.eval_split_fraction is not None:
        count = len(train_indices)
        num_eval = max(1, int(round(args.eval_split_fraction * count)))
        if num_eval >= count:
            raise ValueError(
                f"--eval_split_fraction {args.eval_split_fraction} leaves no training examples out of {count} "
                f"in {where}."
            )
        order = np.random.default_rng(args.eval_split_seed).permutation(count)
        eval_indices = sorted(order[:num_eval].tolist())
        train_indices = sorted(order[num_eval:].tolist())
        eval_source = train_source
    if args.max_train_samples is not None:
        train_indices = train_indices[: args.max_train_samples]
    if eval_indices is not None and args.max_eval_samples is not None:
        eval_indices = eval_indices[: args.max_eval_samples]

    # Class names.
    id2label: Optional[dict[int, str]] = None
    if args.id2label_file is not None:
        id2label = load_id2label_file(args.id2label_file)
        if intrinsic_id2label is not None and intrinsic_id2label != id2label:
            logger.warning(
                "--id2label_file %s (%d classes) overrides the class names found in %s (%d classes).",
                args.id2label_file, len(id2label), where, len(intrinsic_id2label),
            )
    elif intrinsic_id2label is not None:
        id2label = intrinsic_id2label
    else:
        for candidate in _local_id2label_candidates(args):
            if candidate.is_file():
                id2label = load_id2label_file(candidate)
                logger.info("Class names from %s", candidate)
                break
        if id2label is None and kind == "hub" and not Path(args.dataset_name).exists():
            id2label = _hub_id2label(args.dataset_name)
        if id2label is None:
            scan_mapper = LabelMapper(None, args.ignore_index, void_labels, reduce_labels)
            num_labels = _infer_num_labels(train_source, train_indices, scan_mapper, where)
            id2label = {i: f"class_{i}" for i in range(num_labels)}
    _check_id2label(id2label, f"class names of {where}")
    if kind == "cityscapes" and len(id2label) != len(CITYSCAPES_ID2LABEL):
        raise ValueError(
            f"--id2label_file has {len(id2label)} classes but Cityscapes trainIds have {len(CITYSCAPES_ID2LABEL)}."
        )
    num_labels = len(id2label)

    crop_size = args.resolved_crop_size()
    for name, size in (("crop_size", crop_size), ("eval_size", args.eval_size)):
        if size is not None and any(int(v) % 8 for v in size):
            logger.warning("--%s %s is not a multiple of 8; DSNet needs input sizes divisible by 8.", name, list(size))

    mapper = LabelMapper(num_labels, args.ignore_index, void_labels, reduce_labels)
    train_transform = SegmentationTrainTransform(
        crop_size, args.scale_range, args.scale_step, args.base_size, args.hflip_probability, args.ignore_index
    )
    train = SegmentationDataset(
        train_source, "train", train_transform, mapper,
        indices=train_indices, seed=seed, skip_bad_examples=args.skip_bad_examples,
    )
    train.stats.unmatched_files = train_unmatched
    eval_dataset: Optional[SegmentationDataset] = None
    if eval_source is not None and eval_indices is not None:
        eval_dataset = SegmentationDataset(
            eval_source, "eval",
            SegmentationEvalTransform(
                image_processor or eval_image_processor(args.eval_size, args.ignore_index, reduce_labels)
            ),
            mapper,
            indices=eval_indices, seed=seed, skip_bad_examples=args.skip_bad_examples, replacement="masked",
        )
        eval_dataset.stats.unmatched_files = eval_unmatched
    return SegmentationData(
        train=train,
        eval=eval_dataset,
        id2label=id2label,
        num_labels=num_labels,
        ignore_index=args.ignore_index,
        stats=DataStats(train.stats, eval_dataset.stats if eval_dataset is not None else None),
    )
