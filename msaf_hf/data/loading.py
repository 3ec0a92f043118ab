"""The data entry points: :func:`load_split` (one split of any source, for training, evaluation, int8 calibration or
prediction) and :func:`load_segmentation_data` (the training and evaluation splits ``DataArguments`` describe, for
``msaf-hf train``). Both open a source with :func:`_open_split` (step 1), choose the examples (step 2), resolve the
class names (step 3) and build the dataset of the purpose."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .arguments import DataArguments
from .bad_examples import DataStats, ExampleProblem
from .coco import CocoSource, coco_id2label, read_coco_file
from .dataset import SegmentationDataset
from .image_dataset import HubImageSource, ImageDataset, ImageFolderSource, PairImageSource
from .label_formats import ColorTable, color_table_for_flag, find_columns
from .labels import (
    CITYSCAPES_ID2LABEL,
    IGNORE_INDEX,
    LabelMapper,
    check_id2label,
    find_class_label,
    hub_id2label,
    load_id2label_file,
    synthetic_id2label,
)
from .sources import HubSource, cityscapes_source, folder_source, pick_split
from .streaming import load_streaming_splits
from .synthetic import make_synthetic_segmentation_dataset
from .transforms import (
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    eval_image_processor,
    normalization_from_processor,
)

logger = logging.getLogger(__name__)

# Inferring num_labels means decoding every training label map once: only done for small sets.
MAX_LABEL_SCAN_EXAMPLES = 500


@dataclass
class SegmentationData:
    """What :func:`load_segmentation_data` returns."""

    train: SegmentationDataset
    eval: SegmentationDataset | None
    id2label: dict[int, str]
    num_labels: int
    ignore_index: int
    stats: DataStats

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in self.id2label.items()}


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
        except ExampleProblem:
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
    args: DataArguments,
    *,
    seed: int = 0,
    image_processor: Any = None,
    id2label: Mapping[int, str] | None = None,
    color_table: ColorTable | None = None,
) -> SegmentationData:
    """Build the training and evaluation datasets described by ``args`` (what ``msaf-hf train`` trains on).

    ``seed`` seeds the augmentation (pass the training seed). ``image_processor`` is the ``DSNetImageProcessor`` the
    model's inputs are prepared with (the one training saves beside its checkpoints): evaluation images go through
    it, and the training augmentation normalises with its mean and std (default: :func:`eval_image_processor` of
    ``args.eval_size``). Both splits are built as :func:`load_split` builds one; class names are resolved in this
    order: ``--id2label_file``; the source's own names (synthetic names, a ``ClassLabel`` feature in the label
    column, the Cityscapes table); an ``id2label.json`` in the local data folder (or at the root of the Hub dataset
    repository); finally, for small datasets only, generic names ``class_<i>`` with the count inferred from a label
    scan. ``id2label`` given here wins over all of them (the model's label set). ``color_table`` decodes colour
    masks (``--label_colors model``: training passes the model's table). Errors name the source/split at fault.
    """
    kind = args.source_kind()
    if seed < 0:
        raise ValueError(f"load_segmentation_data: seed must be >= 0, got {seed}.")
    if args.streaming:  # the training split read as a stream: msaf_hf.data.streaming
        train, eval_data, id2label = load_streaming_splits(args, seed=seed, image_processor=image_processor,
                                                           id2label=id2label, color_table=color_table)
        return SegmentationData(train=train, eval=eval_data, id2label=id2label, num_labels=len(id2label),
                                ignore_index=args.ignore_index,
                                stats=DataStats(train.stats, eval_data.stats if eval_data is not None else None))
    sources = _open_sources(args, kind)
    _apply_label_format(args, [sources.train, sources.eval], color_table)
    train_indices, eval_indices = _split_indices(args, sources)
    if id2label is not None:
        id2label = _given_id2label(id2label, sources.train.where)
    else:
        id2label = _resolve_id2label(args, kind, sources.train, train_indices)
    _warn_about_sizes(args)
    processor = _processor_or_default(args, image_processor)
    train = _labelled_dataset(args, sources.train, "train", "train", train_indices, id2label, processor, seed)
    eval_dataset: SegmentationDataset | None = None
    if sources.eval is not None and eval_indices is not None:
        eval_dataset = _labelled_dataset(args, sources.eval, "eval", "evaluation", eval_indices, id2label, processor,
                                         seed)
    return SegmentationData(
        train=train,
        eval=eval_dataset,
        id2label=id2label,
        num_labels=len(id2label),
        ignore_index=args.ignore_index,
        stats=DataStats(train.stats, eval_dataset.stats if eval_dataset is not None else None),
    )


PURPOSES = ("train", "evaluation", "calibration", "prediction")
"""What :func:`load_split` prepares a split for."""


def load_split(
    source: DataArguments | str | os.PathLike,
    split: str,
    purpose: str,
    *,
    id2label: Mapping[int, str] | None = None,
    image_processor: Any = None,
    seed: int = 0,
    max_samples: int | None = None,
    split_flag: str = "--split",
    color_table: ColorTable | None = None,
) -> SegmentationDataset | ImageDataset:
    """Load ONE split of any source, prepared for ``purpose``.

    Args:
        source: a :class:`DataArguments` (any of its sources; its label options such as ``void_labels`` apply), or
            a string: ``"synthetic"``, a folder of plain images (searched recursively; no labels), or a Hub dataset
            id / local Hub-style folder (e.g. ``train-*.parquet`` shards).
        split: the split's name (``"validation"`` also finds ``val``/``valid``). Image/mask folders: ``train_split``
            is ``--image_dir``/``--mask_dir`` and the evaluation split ``--eval_image_dir``/``--eval_mask_dir`` (or
            the part of the training folder ``--eval_split_fraction`` carves out). A plain image folder is one
            split, whatever its name.
        purpose: one of :data:`PURPOSES`:

            * ``"train"``: labels required; the training augmentation (normalised with ``image_processor``'s
              mean and std) -> :class:`SegmentationDataset`;
            * ``"evaluation"``: labels required; images through ``image_processor``, labels at native size ->
              :class:`SegmentationDataset`;
            * ``"calibration"``: images only (any label column or mask folder is not read) through
              ``image_processor`` -> :class:`ImageDataset` of ``{"pixel_values"}``;
            * ``"prediction"``: images through ``image_processor`` with their ``name`` and ``original_size``, and
              their ``labels`` when the source has them and ``id2label`` is given -> :class:`ImageDataset`.
        id2label: the model's classes. Given, they are the label set (labels outside it are bad examples); else
            (train/evaluation) they are resolved as :func:`load_segmentation_data` does.
        image_processor: the checkpoint's ``DSNetImageProcessor`` (default: :func:`eval_image_processor` of
            ``eval_size`` for a :class:`DataArguments`, DSNet's default otherwise).
        seed: augmentation seed (``"train"``).
        max_samples: use only the first N examples (default: ``max_train_samples``/``max_eval_samples``).
        split_flag: the option that chose ``split``, named in errors (e.g. ``"--calibration_split"``).
        color_table: decodes colour masks (default: ``--label_colors FILE`` of a :class:`DataArguments`).

    The returned dataset carries the class names as ``dataset.id2label`` (``None`` when not known).
    """
    if purpose not in PURPOSES:
        raise ValueError(f"load_split: purpose must be one of {PURPOSES}, got {purpose!r}.")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"load_split: max_samples must be a positive integer (or None), got {max_samples}.")
    args = source if isinstance(source, DataArguments) else data_arguments_for(source)
    if args.streaming:
        # One split for evaluation, calibration or prediction is read map-style (a sized dataset that the
        # evaluator can shard); only training streams (load_segmentation_data).
        logger.warning("--streaming applies to training only: the %s split %r is read map-style.", purpose, split)
    kind = args.source_kind()
    needs_labels = purpose in ("train", "evaluation")
    role = "train" if split == args.train_split else "eval"
    carve = args.eval_split_fraction is not None
    opened = _open_split(args, kind, args.train_split if carve else split, role if not carve else "train",
                         split_flag, labels=needs_labels)
    if needs_labels or (purpose == "prediction" and id2label is not None):
        _apply_label_format(args, [opened], color_table)
    indices = list(range(len(opened.source)))
    if carve:  # the evaluation part and the training part of one source, as load_segmentation_data splits them
        train_part, eval_part = _carve(args, len(indices), opened.where)
        indices = train_part if role == "train" else eval_part
    limit = max_samples or (args.max_train_samples if purpose == "train" else args.max_eval_samples)
    if limit is not None:
        indices = indices[:limit]
    processor = _processor_or_default(args, image_processor)
    if id2label is not None:
        id2label = _given_id2label(id2label, opened.where)
    elif needs_labels:
        id2label = _resolve_id2label(args, kind, opened, indices)
    if needs_labels:
        dataset = _labelled_dataset(args, opened, role, purpose, indices, id2label, processor, seed)
    else:
        mapper = None
        if purpose == "prediction" and id2label is not None:
            mapper = LabelMapper(len(id2label), args.ignore_index, opened.void_labels, args.reduce_labels)
        dataset = ImageDataset(opened.source, opened.split, processor, indices=indices, label_mapper=mapper,
                               with_metadata=purpose == "prediction")
    dataset.id2label = id2label if id2label is not None else opened.id2label
    return dataset


def data_arguments_for(source: str | os.PathLike) -> DataArguments:
    """The :class:`DataArguments` of a source given as one string: ``"synthetic"``; a folder without dataset files
    (parquet, arrow, csv, json, ...) is a folder of plain images; anything else a Hub dataset id or Hub-style folder
    (read with ``datasets.load_dataset``)."""
    text = os.fspath(source)
    if text == "synthetic":
        return DataArguments(synthetic=True)
    folder = Path(text)
    if folder.is_dir() and not any(
        p.suffix.lower() in _DATASET_FILE_SUFFIXES for p in folder.rglob("*") if not p.name.startswith(".")
    ):
        return DataArguments(image_dir=text)  # (a folder without images is an error naming it when it is read)
    return DataArguments(dataset_name=text)


_DATASET_FILE_SUFFIXES = (".parquet", ".arrow", ".csv", ".json", ".jsonl", ".tsv")


def _given_id2label(id2label: Mapping[int, str], where: str) -> dict[int, str]:
    """The model's class names as ``{int: str}`` in id order, checked."""
    id2label = {int(k): str(v) for k, v in sorted(id2label.items(), key=lambda item: int(item[0]))}
    check_id2label(id2label, f"the id2label given for {where}")
    return id2label


def _processor_or_default(args: DataArguments, image_processor: Any) -> Any:
    if image_processor is not None:
        return image_processor
    return eval_image_processor(args.eval_size, args.ignore_index, args.reduce_labels)


def _labelled_dataset(
    args: DataArguments, opened: OpenedSplit, split: str, purpose: str, indices: Sequence[int],
    id2label: dict[int, str], image_processor: Any, seed: int,
) -> SegmentationDataset:
    """A training (augmented) or evaluation (``image_processor``) dataset of a labelled split."""
    mapper = LabelMapper(len(id2label), args.ignore_index, opened.void_labels, args.reduce_labels)
    if purpose == "train":
        mean, std = normalization_from_processor(image_processor)
        transform = SegmentationTrainTransform(
            args.resolved_crop_size(), args.scale_range, args.scale_step, args.base_size, args.hflip_probability,
            args.ignore_index, image_mean=mean, image_std=std,
        )
        replacement = "duplicate"
    else:
        transform, replacement = SegmentationEvalTransform(image_processor), "masked"
    dataset = SegmentationDataset(
        opened.source, split, transform, mapper,
        indices=indices, seed=seed, skip_bad_examples=args.skip_bad_examples, replacement=replacement,
    )
    dataset.stats.unmatched_files = opened.unmatched
    dataset.id2label = id2label
    return dataset


@dataclass
class OpenedSplit:
    """One split of a source, opened (nothing decoded yet): its raw source and what it says about its labels."""

    source: Any  # labelled (HubSource, PairSource) or images only (ImageFolderSource, HubImageSource, ...)
    split: str  # the split's name as found (e.g. 'val' for a requested 'validation')
    where: str  # names the source in messages
    unmatched: int = 0  # image files without a label file (skipped with --skip_bad_examples)
    id2label: dict[int, str] | None = None  # the source's own class names, if it has any
    void_labels: tuple[int, ...] = ()


@dataclass
class _Sources:
    """What :func:`_open_sources` finds: the training split and (unless carved from it) the evaluation split."""

    train: OpenedSplit
    eval: OpenedSplit | None = None


def _open_sources(args: DataArguments, kind: str) -> _Sources:
    """Step 1: open the chosen source's training and (unless carved from training) evaluation splits."""
    hub = _open_hub_dataset(args, kind) if kind in ("hub", "synthetic") else None
    sources = _Sources(_open_split(args, kind, args.train_split, "train", "--train_split", hub=hub))
    if args.eval_split_fraction is None:
        if kind == "folder" and args.eval_image_dir is None:
            if args.eval_split is not None:
                logger.info("Folder data without --eval_image_dir/--eval_split_fraction: no evaluation set.")
        elif kind == "coco" and args.eval_coco_annotations is None:
            if args.eval_split is not None:
                logger.info("COCO data without --eval_coco_annotations/--eval_split_fraction: no evaluation set.")
        elif args.eval_split is not None:
            sources.eval = _open_split(args, kind, args.eval_split, "eval", "--eval_split", hub=hub)
    return sources


def _open_split(
    args: DataArguments, kind: str, split: str, role: str, flag: str, *, labels: bool = True, hub: Any = None
) -> OpenedSplit:
    """Open split ``split`` of the source (``role``: 'train' or 'eval', which folders a folder source uses);
    ``labels=False`` opens its images only (a label column or mask folder is then neither needed nor read)."""
    if kind in ("hub", "synthetic"):
        return _hub_split(args, hub or _open_hub_dataset(args, kind), split, flag, labels)
    if kind == "folder":
        return _folder_split(args, role, labels)
    if kind == "coco":
        return _coco_split(args, role, labels)
    return _cityscapes_split(args, split, labels)


@dataclass
class _HubDataset:
    splits: Any  # datasets.DatasetDict
    where: str
    id2label: dict[int, str] | None
    void_labels: tuple[int, ...]


def _open_hub_dataset(args: DataArguments, kind: str) -> _HubDataset:
    void_labels = tuple(args.void_labels)
    id2label: dict[int, str] | None = None
    if kind == "synthetic":
        dsd = make_synthetic_segmentation_dataset(
            args.synthetic_num_train, args.synthetic_num_eval, args.synthetic_image_size,
            args.synthetic_num_labels, args.synthetic_seed,
        )
        where = "the synthetic dataset"
        id2label = synthetic_id2label(args.synthetic_num_labels)
        void_labels = tuple(sorted(set(void_labels) | {IGNORE_INDEX}))  # its void value is 255
    else:
        import datasets

        where = f"dataset {args.dataset_name!r}"
        try:
            dsd = datasets.load_dataset(args.dataset_name, args.dataset_config_name, cache_dir=args.dataset_cache_dir)
        except Exception as err:
            raise ValueError(
                f"Could not load {where} with datasets.load_dataset ({type(err).__name__}: {err}). "
                "--dataset_name must be a Hub dataset id or a local folder laid out like a Hub dataset "
                "repository (e.g. train-*.parquet and validation-*.parquet shards)."
            ) from err
        if not isinstance(dsd, datasets.DatasetDict):
            dsd = datasets.DatasetDict({args.train_split: dsd})
    return _HubDataset(dsd, where, id2label, void_labels)


def _hub_split(args: DataArguments, hub: _HubDataset, requested: str, flag: str, labels: bool) -> OpenedSplit:
    name = pick_split(list(hub.splits), requested, flag, hub.where)
    description = f"{hub.where}, split '{name}'"
    features = hub.splits[name].features
    image_column, label_column = find_columns(features, args.image_column, args.label_column, description,
                                              labels=labels)
    if labels:
        source = HubSource(hub.splits[name], image_column, label_column, args.name_column, description)
    else:
        source = HubImageSource(hub.splits[name], image_column, label_column, description, args.name_column)
    if len(source) == 0:
        raise ValueError(f"Split '{name}' of {hub.where} is empty.")
    id2label = hub.id2label
    if id2label is None and label_column is not None and label_column in features:
        class_label = find_class_label(features[label_column])
        if class_label is not None:
            id2label = dict(enumerate(class_label.names))
    return OpenedSplit(source, name, hub.where, id2label=id2label, void_labels=hub.void_labels)


def _folder_split(args: DataArguments, role: str, labels: bool) -> OpenedSplit:
    if args.mask_dir is None and args.eval_image_dir is None:
        role = "train"  # a folder of plain images is one split, whatever its name
    if role == "eval" and args.eval_image_dir is None:
        raise ValueError(
            f"--image_dir {args.image_dir!r}: folder data has no evaluation split; pass --eval_image_dir/"
            "--eval_mask_dir (or --eval_split_fraction to carve one from the training folder)."
        )
    image_dir, mask_dir = (args.image_dir, args.mask_dir) if role == "train" else (args.eval_image_dir,
                                                                                   args.eval_mask_dir)
    flags = ("--image_dir", "--mask_dir") if role == "train" else ("--eval_image_dir", "--eval_mask_dir")
    where = f"{flags[0]} {image_dir!r}"
    if mask_dir is None:  # a folder of plain images
        if labels:
            raise ValueError(
                f"{where} has no labels: training and evaluation need label maps; pass {flags[1]} FOLDER (class-id "
                "masks matched to the images by file stem)."
            )
        source = ImageFolderSource(image_dir, "the image folder")  # (also given as a string: no flag to name)
        return OpenedSplit(source, role, f"the image folder {image_dir!r}", void_labels=tuple(args.void_labels))
    source, unmatched = folder_source(image_dir, mask_dir, role, args.skip_bad_examples, flags)
    if not labels:
        source = PairImageSource(source)
    return OpenedSplit(source, role, where, unmatched=unmatched, void_labels=tuple(args.void_labels))


def _coco_split(args: DataArguments, role: str, labels: bool) -> OpenedSplit:
    """A COCO annotation file's images with label maps rasterised from its annotations (:mod:`.coco`)."""
    if role == "eval" and args.eval_coco_annotations is None:
        raise ValueError(
            f"--coco_annotations {args.coco_annotations!r} has no evaluation split; pass --eval_coco_annotations "
            "FILE.json (or --eval_split_fraction to carve one from the training file)."
        )
    annotations, flag = ((args.coco_annotations, "--coco_annotations") if role == "train"
                         else (args.eval_coco_annotations, "--eval_coco_annotations"))
    image_dir = args.image_dir if role == "train" else (args.eval_image_dir or args.image_dir)
    if not labels:  # images only: the annotation file is not read
        return OpenedSplit(ImageFolderSource(image_dir, "--image_dir"), role, f"--image_dir {image_dir!r}")
    data = read_coco_file(annotations, flag)
    if role == "eval":
        train_data = read_coco_file(args.coco_annotations, "--coco_annotations")
        background = args.coco_background_class
        if coco_id2label(data, background) != coco_id2label(train_data, background):
            raise ValueError(
                f"--eval_coco_annotations {annotations!r} has other categories (ids or names) than "
                f"--coco_annotations {args.coco_annotations!r}; both files must list the same categories."
            )
    source = CocoSource(annotations, image_dir, flag, data=data, background=args.coco_background_class,
                        ignore_index=args.ignore_index)
    return OpenedSplit(source, role, source.description, id2label=source.id2label,
                       void_labels=tuple(args.void_labels))


def _apply_label_format(
    args: DataArguments, opened: Sequence[OpenedSplit | None], color_table: ColorTable | None
) -> None:
    """Colour masks: decode every label of the opened splits through the colour table (``--label_colors``)."""
    color_table = color_table_for_flag(args.label_colors, color_table, ignore_index=args.ignore_index,
                                       unknown_to_ignore=args.unknown_colors_to_ignore)
    if color_table is None:
        return
    for split in opened:
        if split is None:
            continue
        source = getattr(split.source, "labelled", split.source)  # images-only wrappers read their labelled source
        source.label_decoder = color_table.decode
        if split.id2label is None and color_table.names is not None:
            split.id2label = {i: color_table.names.get(i, f"class_{i}") for i in color_table.class_ids}
    logger.info("Colour masks: %d colours from %s.", len(color_table.keys), color_table.origin)


def _cityscapes_split(args: DataArguments, split: str, labels: bool) -> OpenedSplit:
    if args.void_labels or args.reduce_labels:
        raise ValueError(
            "--void_labels/--reduce_labels do not apply to --cityscapes_root: labelIds are mapped with the "
            "official trainId table (19 classes, everything else ignored)."
        )
    source, unmatched = cityscapes_source(args.cityscapes_root, split, args.ignore_index, args.skip_bad_examples)
    if not labels:
        source = PairImageSource(source)
    return OpenedSplit(source, split, f"Cityscapes in {args.cityscapes_root!r}", unmatched=unmatched,
                       id2label=dict(CITYSCAPES_ID2LABEL))


def _carve(args: DataArguments, count: int, where: str) -> tuple[list[int], list[int]]:
    """The training and evaluation indices ``--eval_split_fraction`` divides ``count`` training examples into."""
    num_eval = max(1, int(round(args.eval_split_fraction * count)))
    if num_eval >= count:
        raise ValueError(
            f"--eval_split_fraction {args.eval_split_fraction} leaves no training examples out of {count} in {where}."
        )
    order = np.random.default_rng(args.eval_split_seed).permutation(count)
    return sorted(order[num_eval:].tolist()), sorted(order[:num_eval].tolist())


def _split_indices(args: DataArguments, sources: _Sources) -> tuple[list[int], list[int] | None]:
    """Step 2: the training and evaluation indices, carving the evaluation set out of the training source when
    ``--eval_split_fraction`` asks for it (then ``sources.eval`` becomes the training source)."""
    train_indices = list(range(len(sources.train.source)))
    eval_indices = list(range(len(sources.eval.source))) if sources.eval is not None else None
    if args.eval_split_fraction is not None:
        train_indices, eval_indices = _carve(args, len(train_indices), sources.train.where)
        sources.eval = sources.train
    if args.max_train_samples is not None:
        train_indices = train_indices[: args.max_train_samples]
    if eval_indices is not None and args.max_eval_samples is not None:
        eval_indices = eval_indices[: args.max_eval_samples]
    return train_indices, eval_indices


def _resolve_id2label(
    args: DataArguments, kind: str, opened: OpenedSplit, indices: Sequence[int]
) -> dict[int, str]:
    """Step 3: the class names, in the order the docstring of :func:`load_segmentation_data` gives (a label scan
    reads the ``indices`` of ``opened``)."""
    where = opened.where
    id2label: dict[int, str] | None = None
    if args.id2label_file is not None:
        id2label = load_id2label_file(args.id2label_file)
        if opened.id2label is not None and opened.id2label != id2label:
            logger.warning(
                "--id2label_file %s (%d classes) overrides the class names found in %s (%d classes).",
                args.id2label_file, len(id2label), where, len(opened.id2label),
            )
    elif opened.id2label is not None:
        id2label = opened.id2label
    else:
        for candidate in _local_id2label_candidates(args):
            if candidate.is_file():
                id2label = load_id2label_file(candidate)
                logger.info("Class names from %s", candidate)
                break
        if id2label is None and kind == "hub" and not Path(args.dataset_name).exists():
            id2label = hub_id2label(args.dataset_name)
        if id2label is None:
            scan_mapper = LabelMapper(None, args.ignore_index, opened.void_labels, args.reduce_labels)
            num_labels = _infer_num_labels(opened.source, indices, scan_mapper, where)
            id2label = {i: f"class_{i}" for i in range(num_labels)}
    check_id2label(id2label, f"class names of {where}")
    if kind == "cityscapes" and len(id2label) != len(CITYSCAPES_ID2LABEL):
        raise ValueError(
            f"--id2label_file has {len(id2label)} classes but Cityscapes trainIds have {len(CITYSCAPES_ID2LABEL)}."
        )
    return id2label


def _warn_about_sizes(args: DataArguments) -> None:
    for name, size in (("crop_size", args.resolved_crop_size()), ("eval_size", args.eval_size)):
        if size is not None and any(int(v) % 8 for v in size):
            logger.warning("--%s %s is not a multiple of 8; DSNet needs input sizes divisible by 8.", name, list(size))
