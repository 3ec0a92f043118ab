"""``load_segmentation_data``: the training and evaluation datasets that ``DataArguments`` describe."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .arguments import DataArguments
from .bad_examples import DataStats, ExampleProblem
from .coco import CocoSource, coco_id2label, read_coco_file
from .dataset import SegmentationDataset
from .label_formats import ColorTable, find_columns
from .labels import (
    CITYSCAPES_ID2LABEL,
    IGNORE_INDEX,
    LabelMapper,
    check_id2label,
    find_class_label,
    load_id2label_file,
    synthetic_id2label,
)
from .sources import HubSource, cityscapes_source, folder_source
from .synthetic import make_synthetic_segmentation_dataset
from .transforms import SegmentationEvalTransform, SegmentationTrainTransform, eval_image_processor

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


def _hub_id2label(dataset_name: str) -> dict[int, str] | None:
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
    id2label: dict[int, str] | None = None,
    color_table: ColorTable | None = None,
) -> SegmentationData:
    """Build the training and evaluation datasets described by ``args``.

    ``seed`` seeds the augmentation (pass the training seed). ``image_processor`` preprocesses evaluation images
    (default: :func:`eval_image_processor` of ``args.eval_size``; ``scripts/evaluate.py`` passes the checkpoint's).
    Class names are resolved in this order: ``--id2label_file``; the source's own names (synthetic names, a
    ``ClassLabel`` feature in the label column, the Cityscapes table); an ``id2label.json`` in the local data folder
    (or at the root of the Hub dataset repository); finally, for small datasets only, generic names ``class_<i>``
    with the count inferred from a label scan. ``id2label`` given here wins over all of them (the model's label
    set). ``color_table`` decodes colour masks (``--label_colors model``: training passes the model's table).
    Errors name the source/split at fault.
    """
    kind = args.source_kind()
    if seed < 0:
        raise ValueError(f"load_segmentation_data: seed must be >= 0, got {seed}.")
    sources = _open_sources(args, kind)
    _apply_label_format(args, sources, color_table)
    train_indices, eval_indices = _split_indices(args, sources)
    id2label = id2label if id2label is not None else _resolve_id2label(args, kind, sources, train_indices)
    _warn_about_sizes(args)

    mapper = LabelMapper(len(id2label), args.ignore_index, sources.void_labels, args.reduce_labels)
    train_transform = SegmentationTrainTransform(
        args.resolved_crop_size(), args.scale_range, args.scale_step, args.base_size, args.hflip_probability,
        args.ignore_index,
    )
    train = SegmentationDataset(
        sources.train, "train", train_transform, mapper,
        indices=train_indices, seed=seed, skip_bad_examples=args.skip_bad_examples,
    )
    train.stats.unmatched_files = sources.train_unmatched
    eval_dataset: SegmentationDataset | None = None
    if sources.eval is not None and eval_indices is not None:
        processor = image_processor or eval_image_processor(args.eval_size, args.ignore_index, args.reduce_labels)
        eval_dataset = SegmentationDataset(
            sources.eval, "eval", SegmentationEvalTransform(processor), mapper,
            indices=eval_indices, seed=seed, skip_bad_examples=args.skip_bad_examples, replacement="masked",
        )
        eval_dataset.stats.unmatched_files = sources.eval_unmatched
    return SegmentationData(
        train=train,
        eval=eval_dataset,
        id2label=id2label,
        num_labels=len(id2label),
        ignore_index=args.ignore_index,
        stats=DataStats(train.stats, eval_dataset.stats if eval_dataset is not None else None),
    )


@dataclass
class _Sources:
    """What :func:`_open_sources` finds: the raw sources of both splits and what they say about their labels."""

    where: str  # names the source in messages
    train: Any
    eval: Any = None
    train_unmatched: int = 0
    eval_unmatched: int = 0
    id2label: dict[int, str] | None = None  # the source's own class names, if it has any
    void_labels: tuple[int, ...] = ()


def _open_sources(args: DataArguments, kind: str) -> _Sources:
    """Step 1: open the chosen source's training and (unless carved from training) evaluation splits."""
    if kind in ("hub", "synthetic"):
        return _hub_sources(args, kind)
    if kind == "folder":
        return _folder_sources(args)
    if kind == "coco":
        return _coco_sources(args)
    return _cityscapes_sources(args)


def _hub_sources(args: DataArguments, kind: str) -> _Sources:
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

    def split_source(requested: str, flag: str) -> HubSource:
        name = _pick_split(list(dsd), requested, flag, where)
        description = f"{where}, split '{name}'"
        image_column, label_column = find_columns(dsd[name].features, args.image_column, args.label_column, description)
        source = HubSource(dsd[name], image_column, label_column, args.name_column, description)
        if len(source) == 0:
            raise ValueError(f"Split '{name}' of {where} is empty.")
        return source

    sources = _Sources(where, split_source(args.train_split, "--train_split"), id2label=id2label,
                       void_labels=void_labels)
    if args.eval_split is not None and args.eval_split_fraction is None:
        sources.eval = split_source(args.eval_split, "--eval_split")
    if sources.id2label is None:
        class_label = find_class_label(sources.train.features[sources.train.label_column])
        if class_label is not None:
            sources.id2label = dict(enumerate(class_label.names))
    return sources


def _folder_sources(args: DataArguments) -> _Sources:
    train, train_unmatched = folder_source(
        args.image_dir, args.mask_dir, "train", args.skip_bad_examples, ("--image_dir", "--mask_dir")
    )
    sources = _Sources(f"--image_dir {args.image_dir!r}", train, train_unmatched=train_unmatched,
                       void_labels=tuple(args.void_labels))
    if args.eval_image_dir is not None:
        sources.eval, sources.eval_unmatched = folder_source(
            args.eval_image_dir, args.eval_mask_dir, "eval", args.skip_bad_examples,
            ("--eval_image_dir", "--eval_mask_dir"),
        )
    elif args.eval_split_fraction is None and args.eval_split is not None:
        logger.info("Folder data without --eval_image_dir/--eval_split_fraction: no evaluation set.")
    return sources


def _cityscapes_sources(args: DataArguments) -> _Sources:
    if args.void_labels or args.reduce_labels:
        raise ValueError(
            "--void_labels/--reduce_labels do not apply to --cityscapes_root: labelIds are mapped with the "
            "official trainId table (19 classes, everything else ignored)."
        )
    train, train_unmatched = cityscapes_source(
        args.cityscapes_root, args.train_split, args.ignore_index, args.skip_bad_examples
    )
    sources = _Sources(f"Cityscapes in {args.cityscapes_root!r}", train, train_unmatched=train_unmatched,
                       id2label=dict(CITYSCAPES_ID2LABEL))
    if args.eval_split is not None and args.eval_split_fraction is None:
        sources.eval, sources.eval_unmatched = cityscapes_source(
            args.cityscapes_root, args.eval_split, args.ignore_index, args.skip_bad_examples
        )
    return sources


# ---- label formats: COCO annotation files, colour masks


def _coco_sources(args: DataArguments) -> _Sources:
    train_data = read_coco_file(args.coco_annotations, "--coco_annotations")
    train = CocoSource(args.coco_annotations, args.image_dir, "--coco_annotations", data=train_data,
                       background=args.coco_background_class, ignore_index=args.ignore_index)
    sources = _Sources(train.description, train, id2label=train.id2label, void_labels=tuple(args.void_labels))
    if args.eval_coco_annotations is not None:
        eval_data = read_coco_file(args.eval_coco_annotations, "--eval_coco_annotations")
        background = args.coco_background_class
        if coco_id2label(eval_data, background) != coco_id2label(train_data, background):
            raise ValueError(
                f"--eval_coco_annotations {args.eval_coco_annotations!r} has other categories (ids or names) than "
                f"--coco_annotations {args.coco_annotations!r}; both files must list the same categories."
            )
        sources.eval = CocoSource(args.eval_coco_annotations, args.eval_image_dir or args.image_dir,
                                  "--eval_coco_annotations", data=eval_data, background=args.coco_background_class,
                                  ignore_index=args.ignore_index)
    elif args.eval_split_fraction is None and args.eval_split is not None:
        logger.info("COCO data without --eval_coco_annotations/--eval_split_fraction: no evaluation set.")
    return sources


def _apply_label_format(args: DataArguments, sources: _Sources, color_table: ColorTable | None) -> None:
    """Colour masks: decode every label of both splits through the colour table (--label_colors)."""
    if args.label_colors is None:
        return
    if color_table is None:
        if args.label_colors.strip().lower() == "model":
            raise ValueError(
                "--label_colors model takes the colours of the model being fine-tuned: it works in training with "
                "--model_name_or_path (a model whose config has label2color); elsewhere pass --label_colors FILE.json."
            )
        color_table = ColorTable.from_file(args.label_colors, ignore_index=args.ignore_index,
                                           unknown_to_ignore=args.unknown_colors_to_ignore)
    for source in (sources.train, sources.eval):
        if source is not None:
            source.label_decoder = color_table.decode
    if sources.id2label is None and color_table.names is not None:
        names = {i: color_table.names.get(i, f"class_{i}") for i in color_table.class_ids}
        sources.id2label = names
    logger.info("Colour masks: %d colours from %s.", len(color_table.keys), color_table.origin)


def _split_indices(args: DataArguments, sources: _Sources) -> tuple[list[int], list[int] | None]:
    """Step 2: the training and evaluation indices, carving the evaluation set out of the training source when
    ``--eval_split_fraction`` asks for it (then ``sources.eval`` becomes the training source)."""
    train_indices = list(range(len(sources.train)))
    eval_indices = list(range(len(sources.eval))) if sources.eval is not None else None
    if args.eval_split_fraction is not None:
        count = len(train_indices)
        num_eval = max(1, int(round(args.eval_split_fraction * count)))
        if num_eval >= count:
            raise ValueError(
                f"--eval_split_fraction {args.eval_split_fraction} leaves no training examples out of {count} "
                f"in {sources.where}."
            )
        order = np.random.default_rng(args.eval_split_seed).permutation(count)
        eval_indices = sorted(order[:num_eval].tolist())
        train_indices = sorted(order[num_eval:].tolist())
        sources.eval = sources.train
    if args.max_train_samples is not None:
        train_indices = train_indices[: args.max_train_samples]
    if eval_indices is not None and args.max_eval_samples is not None:
        eval_indices = eval_indices[: args.max_eval_samples]
    return train_indices, eval_indices


def _resolve_id2label(
    args: DataArguments, kind: str, sources: _Sources, train_indices: Sequence[int]
) -> dict[int, str]:
    """Step 3: the class names, in the order the docstring of :func:`load_segmentation_data` gives."""
    where = sources.where
    id2label: dict[int, str] | None = None
    if args.id2label_file is not None:
        id2label = load_id2label_file(args.id2label_file)
        if sources.id2label is not None and sources.id2label != id2label:
            logger.warning(
                "--id2label_file %s (%d classes) overrides the class names found in %s (%d classes).",
                args.id2label_file, len(id2label), where, len(sources.id2label),
            )
    elif sources.id2label is not None:
        id2label = sources.id2label
    else:
        for candidate in _local_id2label_candidates(args):
            if candidate.is_file():
                id2label = load_id2label_file(candidate)
                logger.info("Class names from %s", candidate)
                break
        if id2label is None and kind == "hub" and not Path(args.dataset_name).exists():
            id2label = _hub_id2label(args.dataset_name)
        if id2label is None:
            scan_mapper = LabelMapper(None, args.ignore_index, sources.void_labels, args.reduce_labels)
            num_labels = _infer_num_labels(sources.train, train_indices, scan_mapper, where)
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
