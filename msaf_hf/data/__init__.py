"""Segmentation data for training and evaluating DSNet: sources, label handling, augmentation, batching.

One split of any source, for any step, with the model's classes and image processor given directly::

    dataset = load_split(data_args_or_source, "validation", "evaluation", id2label=model.config.id2label,
                         image_processor=processor)            # also "train", "calibration", "prediction"

The training script only needs three things from this module::

    data = load_segmentation_data(data_args, seed=training_seed)   # SegmentationData
    data.train.set_epoch(epoch)                                      # before every epoch (and on resume)
    loader = make_dataloader(data.train, batch_size, shuffle=True, seed=training_seed, drop_last=True)

Every example comes out as ``{"pixel_values": float32 (3, H, W), "labels": int64 (H, W)}`` and
:func:`collate_fn` stacks them.

Sources (pick exactly one in :class:`DataArguments`):

* ``dataset_name``: a Hub dataset id or a local folder laid out like a Hub dataset repository
  (e.g. parquet shards ``train-*.parquet``), read with ``datasets.load_dataset``;
* ``image_dir`` + ``mask_dir``: a folder of images and a folder of label maps, matched by file stem (class-id or
  palette PNGs, or colour masks with ``label_colors``: :mod:`.label_formats`);
* ``coco_annotations`` + ``image_dir``: a COCO annotation file (polygons/RLE, :mod:`.coco`);
* ``cityscapes_root``: the official Cityscapes layout, labelIds mapped to the 19 trainIds;
* ``synthetic``: a generated, learnable toy set (:func:`make_synthetic_segmentation_dataset`);
* ``image_dir`` alone: a folder of plain images, for int8 calibration and prediction (no labels).

Design notes (why things are the way they are):

* Nothing is decoded up front. Each example is decoded, label-mapped and validated when it is read.
* Augmentation randomness comes only from ``(seed, epoch, index)`` (see :func:`example_rng`), never
  from global RNG state, so an example looks the same whatever the number of DataLoader workers,
  the process it runs in, or whether the run was resumed.
* Bad examples (unreadable file, image/label size mismatch, label values out of range) raise
  :class:`BadExampleError` naming the split, index and file. With ``skip_bad_examples`` the dataset
  instead serves the next good example (index + 1, + 2, ... wrapping around), which is a pure function
  of the data, so the data order stays deterministic; see :class:`SegmentationDataset`.

Modules: :mod:`.arguments` (``DataArguments``), :mod:`.sources` (Hub, folder and Cityscapes sources),
:mod:`.labels` (class names, label decoding and mapping), :mod:`.images` (image decoding), :mod:`.transforms`
(training augmentation, evaluation preprocessing), :mod:`.dataset` (``SegmentationDataset``, batching),
:mod:`.bad_examples` (errors, skip statistics), :mod:`.synthetic` (the toy set), :mod:`.streaming` (``--streaming``:
the training split as a sharded, shuffled, resumable stream), :mod:`.image_dataset` (images without needed labels:
calibration and prediction) and :mod:`.loading` (``load_split`` and ``load_segmentation_data``, which put them
together).
"""

from .arguments import DataArguments
from .bad_examples import SKIP_REASONS, BadExampleError, DataStats, SkipStats
from .class_weights import median_frequency_weights
from .dataset import SegmentationDataset, collate_fn, make_dataloader
from .image_dataset import ImageDataset
from .images import to_rgb
from .label_formats import ColorTable, color_table_from_config
from .labels import (
    CITYSCAPES_ID2LABEL,
    CITYSCAPES_LABELID_TO_TRAINID,
    IGNORE_INDEX,
    LabelMapper,
    load_id2label_file,
    synthetic_id2label,
)
from .loading import PURPOSES, SegmentationData, data_arguments_for, load_segmentation_data, load_split
from .streaming import StreamingSegmentationDataset, load_streaming_splits
from .synthetic import make_synthetic_segmentation_dataset
from .transforms import (
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    eval_image_processor,
    example_rng,
    normalization_from_processor,
)

__all__ = [
    "CITYSCAPES_ID2LABEL",
    "CITYSCAPES_LABELID_TO_TRAINID",
    "IGNORE_INDEX",
    "PURPOSES",
    "SKIP_REASONS",
    "BadExampleError",
    "ColorTable",
    "DataArguments",
    "DataStats",
    "ImageDataset",
    "LabelMapper",
    "SegmentationData",
    "SegmentationDataset",
    "SegmentationEvalTransform",
    "SegmentationTrainTransform",
    "SkipStats",
    "StreamingSegmentationDataset",
    "collate_fn",
    "color_table_from_config",
    "data_arguments_for",
    "eval_image_processor",
    "example_rng",
    "load_id2label_file",
    "load_segmentation_data",
    "load_split",
    "load_streaming_splits",
    "make_dataloader",
    "make_synthetic_segmentation_dataset",
    "median_frequency_weights",
    "normalization_from_processor",
    "synthetic_id2label",
    "to_rgb",
]
