"""``DataArguments``: which data to train and evaluate on and how to augment it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .labels import IGNORE_INDEX, SYNTHETIC_CLASS_NAMES

_NO_EVAL_SPLIT = {"", "none", "null"}


@dataclass
class DataArguments:
    """What data to train and evaluate on and how to augment it (parsable by ``HfArgumentParser``).

    Exactly one source must be chosen: ``dataset_name``, ``image_dir``/``mask_dir``,
    ``cityscapes_root`` or ``synthetic``. Structural mistakes (wrong list lengths, bad ranges) raise in
    ``__post_init__``; the "exactly one source" rule is checked by :meth:`source_kind`, which
    :func:`load_segmentation_data` calls, so a default ``DataArguments()`` can still be built.
    """

    # ---- source: Hub / local Hub-style folder
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A Hub dataset id, or a local folder laid out like a Hub dataset repository (e.g. "
            "train-*.parquet / validation-*.parquet shards), loaded with datasets.load_dataset."
        },
    )
    dataset_config_name: str | None = field(
        default=None, metadata={"help": "The dataset configuration name passed to datasets.load_dataset."}
    )
    dataset_cache_dir: str | None = field(
        default=None, metadata={"help": "Cache directory for datasets.load_dataset (default: the datasets cache)."}
    )
    train_split: str = field(
        default="train",
        metadata={"help": "Training split (a dataset split name, or the Cityscapes split folder)."},
    )
    eval_split: str | None = field(
        default="validation",
        metadata={
            "help": "Evaluation split ('validation' also finds 'val'/'valid'); 'none' for no evaluation data. "
            "Ignored with --eval_split_fraction or --eval_image_dir."
        },
    )
    eval_split_fraction: float | None = field(
        default=None,
        metadata={
            "help": "Carve this fraction (0..1) of the training examples out as the evaluation set "
            "(deterministic, see --eval_split_seed) instead of using a separate evaluation split."
        },
    )
    eval_split_seed: int = field(
        default=42, metadata={"help": "Seed of the shuffle that picks the --eval_split_fraction examples."}
    )
    image_column: str | None = field(
        default=None,
        metadata={"help": "Dataset column holding the images (default: found automatically: image, pixel_values...)."},
    )
    label_column: str | None = field(
        default=None,
        metadata={
            "help": "Dataset column holding the label maps (default: found automatically, e.g. label, annotation, "
            "mask, semantic_segmentation, segmentation, seg_map)."
        },
    )
    name_column: str | None = field(
        default=None,
        metadata={
            "help": "Dataset column naming each example in error messages (default: 'name', 'file_name', "
            "'filename', 'image_id' or 'id' if present, else the image's file path)."
        },
    )
    # ---- source: image / mask folders
    image_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder of training images (matched to --mask_dir files by file stem); without --mask_dir, "
            "a folder of plain images (int8 calibration, prediction)."
        },
    )
    mask_dir: str | None = field(
        default=None, metadata={"help": "Folder of training label maps (single-channel class ids, e.g. PNG)."}
    )
    eval_image_dir: str | None = field(default=None, metadata={"help": "Folder of evaluation images."})
    eval_mask_dir: str | None = field(default=None, metadata={"help": "Folder of evaluation label maps."})
    # ---- label formats: colour masks, COCO annotations (see msaf_hf.data.label_formats / msaf_hf.data.coco)
    label_colors: str | None = field(
        default=None,
        metadata={
            "help": "Masks are colour-coded: a JSON file mapping class ids to colours ({\"0\": [r, g, b], ...} or "
            "[{\"id\": 0, \"name\": \"sky\", \"color\": [r, g, b]}, ...]; names there name the classes; an id equal "
            "to --ignore_index marks a colour that is not trained on), or 'model' for the label2color of the model "
            "being fine-tuned. Palette PNGs need no table: their indices are the class ids (with --label_colors "
            "they are read by their colours)."
        },
    )
    unknown_colors_to_ignore: bool = field(
        default=False,
        metadata={
            "help": "Map colours that are not in --label_colors to --ignore_index (counted and logged) instead of "
            "treating the mask as a bad example."
        },
    )
    coco_annotations: str | None = field(
        default=None,
        metadata={
            "help": "COCO JSON of the training images (polygons or RLE; needs pycocotools) with --image_dir holding "
            "the images (no --mask_dir). Categories in id order become class ids 0.. and the class names; pixels no "
            "annotation covers get --ignore_index; where annotations overlap the smaller one wins (equal areas: "
            "the later annotation id); iscrowd regions count as their category."
        },
    )
    eval_coco_annotations: str | None = field(
        default=None,
        metadata={"help": "COCO JSON of the evaluation images (in --eval_image_dir, else --image_dir)."},
    )
    coco_background_class: str | None = field(
        default=None,
        metadata={
            "help": "With COCO annotations: name a background class 0 for the pixels no annotation covers (the "
            "categories then start at class 1) instead of ignoring them."
        },
    )
    # ---- source: Cityscapes
    cityscapes_root: str | None = field(
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
    id2label_file: str | None = field(
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
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training examples (debugging, quick runs)."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N evaluation examples."}
    )
    # ---- augmentation (training)
    crop_size: list[int] | None = field(
        default=None,
        metadata={
            "help": "Training crop: height width (or one value for a square). Default: the synthetic image "
            "size with --synthetic, else 512 512. DSNet needs multiples of 8."
        },
    )
    base_size: int | None = field(
        default=None,
        metadata={
            "help": "Long side the random scale is relative to (e.g. 2048 for Cityscapes); default: each "
            "image's own long side."
        },
    )
    scale_range: list[float] = field(
        default_factory=lambda: [0.5, 2.0], metadata={"help": "Random scale factor range: min max."}
    )
    scale_step: float | None = field(
        default=None,
        metadata={
            "help": "If set, scale factors are min + k*step (discrete, as the published code does with 0.1); "
            "default: continuous uniform in the range."
        },
    )
    hflip_probability: float = field(default=0.5, metadata={"help": "Probability of a horizontal flip."})
    # ---- evaluation
    eval_size: list[int] | None = field(
        default=None,
        metadata={
            "help": "Evaluation input size: height width, or one value for the long side (aspect kept). "
            "Default: the whole image at native size. Labels always stay at native size."
        },
    )
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    # ---- streaming (msaf_hf.data.streaming)
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream the training split of --dataset_name (a Hub dataset or a local parquet folder) instead "
            "of downloading it first: sharded across processes, shuffled with a buffer, resumed exactly. The "
            "evaluation split is read into memory (map-style)."
        },
    )
    shuffle_buffer_size: int = field(
        default=1000,
        metadata={"help": "With --streaming: examples held in the shuffle buffer (larger: closer to a full shuffle)."},
    )

    def __post_init__(self) -> None:
        # Normalise the 'no eval split' spellings once so the rest of the code checks for None only.
        if isinstance(self.eval_split, str) and self.eval_split.strip().lower() in _NO_EVAL_SPLIT:
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
        self._check_label_formats()
        if self.mask_dir is not None and self.image_dir is None:
            raise ValueError("DataArguments: --mask_dir needs --image_dir (the images its label maps belong to).")
        if self.coco_annotations is None and (self.eval_image_dir is None) != (self.eval_mask_dir is None):
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
        if self.shuffle_buffer_size < 1:
            raise ValueError(f"DataArguments.shuffle_buffer_size must be >= 1, got {self.shuffle_buffer_size}.")
        if self.streaming:
            self.check_streaming()

    def check_streaming(self) -> None:
        """``--streaming`` reads a dataset as a stream: refuse the sources and options that need random access."""
        others = [flag for flag, given in (("--coco_annotations", self.coco_annotations is not None),
                                           ("--image_dir", self.image_dir is not None),
                                           ("--cityscapes_root", self.cityscapes_root is not None),
                                           ("--synthetic", bool(self.synthetic))) if given]
        if others:
            raise ValueError(
                f"DataArguments: --streaming reads --dataset_name (a Hub dataset or a local parquet folder); "
                f"{others[0]} data is read from local files with random access: drop --streaming."
            )
        if self.eval_split_fraction is not None:
            raise ValueError(
                "DataArguments: --eval_split_fraction needs random access to the training split, which --streaming "
                "does not have: use the dataset's evaluation split (--eval_split) or drop --streaming."
            )

    def _check_label_formats(self) -> None:
        coco = self.coco_annotations is not None
        if coco and (self.mask_dir is not None or self.eval_mask_dir is not None):
            raise ValueError(
                "DataArguments: --coco_annotations takes the labels from the JSON file: give --image_dir (and "
                "--eval_image_dir) without --mask_dir/--eval_mask_dir."
            )
        if coco and self.image_dir is None:
            raise ValueError("DataArguments: --coco_annotations needs --image_dir (the folder of its images).")
        if not coco and (self.eval_coco_annotations is not None or self.coco_background_class is not None):
            raise ValueError(
                "DataArguments: --eval_coco_annotations/--coco_background_class need --coco_annotations."
            )
        if coco and self.eval_split_fraction is not None and self.eval_coco_annotations is not None:
            raise ValueError(
                "DataArguments: give either --eval_coco_annotations or --eval_split_fraction, not both."
            )
        if self.label_colors is not None and (coco or self.cityscapes_root is not None or self.synthetic):
            raise ValueError(
                "DataArguments: --label_colors applies to colour-coded masks of --dataset_name or --image_dir/"
                "--mask_dir data, not to COCO annotations, Cityscapes or the synthetic set."
            )
        if self.unknown_colors_to_ignore and self.label_colors is None:
            raise ValueError("DataArguments: --unknown_colors_to_ignore needs --label_colors.")

    def source_kind(self) -> str:
        """Return which source is selected: 'hub', 'folder', 'coco', 'cityscapes' or 'synthetic'.

        Raises ``ValueError`` unless exactly one source is given.
        """
        chosen = [
            kind
            for kind, given in (
                ("hub", self.dataset_name is not None),
                ("folder", self.image_dir is not None and self.coco_annotations is None),
                ("coco", self.coco_annotations is not None),
                ("cityscapes", self.cityscapes_root is not None),
                ("synthetic", bool(self.synthetic)),
            )
            if given
        ]
        if len(chosen) != 1:
            raise ValueError(
                "DataArguments: choose exactly one data source: --dataset_name, --image_dir/--mask_dir, "
                f"--coco_annotations/--image_dir, --cityscapes_root or --synthetic (got {chosen or 'none'})."
            )
        return chosen[0]

    def resolved_crop_size(self) -> tuple[int, int]:
        """The training crop (height, width), applying the documented default."""
        if self.crop_size is not None:
            return size_pair(self.crop_size)
        if self.synthetic:
            return size_pair(self.synthetic_image_size)
        return (512, 512)


def size_pair(values: Sequence[int]) -> tuple[int, int]:
    """One value -> (v, v); two values -> (h, w)."""
    values = [int(v) for v in values]
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
