"""The model to train and the image processor saved with it."""

from __future__ import annotations

import logging
import os
from typing import Any

from ..configuration_dsnet import DSNetConfig
from ..data import DataArguments, SegmentationData, eval_image_processor
from ..data.class_weights import (
    CLASS_WEIGHT_MAX,
    CLASS_WEIGHT_MIN,
    count_class_frequencies,
    format_weights,
    load_class_weights_file,
    median_frequency_weights,
)
from ..data.label_formats import ColorTable, color_table_from_config
from ..modeling_dsnet import DSNetForSemanticSegmentation
from ..presets import load_preset
from .arguments import ModelArguments

logger = logging.getLogger(__name__)

_ORIGINAL_CHECKPOINT_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar")


def build_model(
    model_args: ModelArguments,
    id2label: dict[int, str],
    ignore_index: int = 255,
    class_weights: list[float] | None = None,
) -> DSNetForSemanticSegmentation:
    """The model to train, with the dataset's label set.

    From scratch (``preset``), from a published-code checkpoint file, or with ``from_pretrained``. A pretrained
    model whose number of classes differs from the dataset's needs ``ignore_mismatched_sizes`` (its classifiers
    are re-initialised); with the same number of classes, the dataset's class names replace the model's.
    ``class_weights`` (from ``--class_weights``) become the config's ``class_weights``.
    """
    overrides = model_args.parsed_config_overrides()
    if class_weights is not None:
        if "class_weights" in overrides:
            raise ValueError("Give class weights either with --class_weights or in --config_overrides, not both.")
        overrides["class_weights"] = list(class_weights)
    label_kwargs = {
        "id2label": {int(k): v for k, v in id2label.items()},
        "label2id": {v: int(k) for k, v in id2label.items()},
        "semantic_loss_ignore_index": ignore_index,
    }
    source = model_args.model_name_or_path
    if source is None:
        config = load_preset(model_args.preset, **label_kwargs, **overrides)
        return DSNetForSemanticSegmentation(config)

    if os.path.isfile(source) and source.endswith(_ORIGINAL_CHECKPOINT_SUFFIXES):
        from ..convert import convert_original_checkpoint, load_original_state_dict

        checkpoint = load_original_state_dict(source)
        classifier = checkpoint.state_dict.get("lastlayer.conv2.weight")
        if classifier is None or classifier.shape[0] == len(id2label):
            model, report = convert_original_checkpoint(
                source, variant=model_args.preset, num_labels=len(id2label), id2label=label_kwargs["id2label"],
                semantic_loss_ignore_index=ignore_index, **overrides,
            )
            logger.info("Converted published checkpoint %s:\n%s", source, report)
            return model
        check_num_labels(int(classifier.shape[0]), len(id2label), source, model_args.ignore_mismatched_sizes)
        # Different label set: convert with the checkpoint's classes, then re-initialise the classifiers below.
        import tempfile

        model, _ = convert_original_checkpoint(source, variant=model_args.preset)
        staging = tempfile.mkdtemp(prefix="msaf-convert-")
        model.save_pretrained(staging)
        source = staging

    config = DSNetConfig.from_pretrained(source, revision=model_args.revision, cache_dir=model_args.cache_dir)
    check_num_labels(config.num_labels, len(id2label), source, model_args.ignore_mismatched_sizes)
    model_names = {int(k): v for k, v in config.id2label.items()}
    if config.num_labels == len(id2label) and model_names != label_kwargs["id2label"]:
        logger.warning(
            "%s was trained with classes %s; using the dataset's class names %s for the same class ids.",
            source, list(config.id2label.values()), list(id2label.values()),
        )
    weights_misfit = config.class_weights is not None and len(config.class_weights) != len(id2label)
    if weights_misfit and "class_weights" not in overrides:
        overrides["class_weights"] = None  # the checkpoint's per-class weights do not fit the new label set
    return DSNetForSemanticSegmentation.from_pretrained(
        source,
        revision=model_args.revision,
        cache_dir=model_args.cache_dir,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        **label_kwargs,
        **overrides,
    )


def model_color_table(model_args: ModelArguments, data_args: DataArguments) -> ColorTable | None:
    """The colour table of ``--label_colors model``: the ``label2color`` of the model being fine-tuned."""
    if (data_args.label_colors or "").strip().lower() != "model":
        return None
    if model_args.model_name_or_path is None or os.path.isfile(model_args.model_name_or_path):
        raise ValueError(
            "--label_colors model needs --model_name_or_path to be a model folder or Hub id whose config has "
            "label2color; pass --label_colors FILE.json otherwise."
        )
    config = DSNetConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.revision,
                                         cache_dir=model_args.cache_dir)
    return color_table_from_config(config, data_args.ignore_index, data_args.unknown_colors_to_ignore)


def resolve_class_weights(
    setting: str | None, data: SegmentationData, show_progress: bool = False
) -> list[float] | None:
    """``--class_weights``: None, 'auto' (median-frequency balancing of the training labels) or a JSON file."""
    if setting is None or str(setting).strip().lower() in ("", "none"):
        return None
    if str(setting).strip().lower() != "auto":
        weights = load_class_weights_file(setting, data.num_labels)
        logger.info("Class weights from %s: %s", setting, format_weights(weights, data.id2label))
        return weights
    from ..data import StreamingSegmentationDataset

    if isinstance(data.train, StreamingSegmentationDataset):
        raise ValueError(
            "--class_weights auto counts the labels of the whole training split, which --streaming does not read up "
            "front: take the weights msaf-hf check-data suggests for this data and pass them with --class_weights "
            "FILE.json."
        )
    from tqdm.auto import tqdm

    indices = tqdm(range(len(data.train)), desc="class frequencies", disable=not show_progress)
    frequencies = count_class_frequencies(data.train, data.num_labels, indices)
    weights = median_frequency_weights(frequencies, id2label=data.id2label)
    logger.info(
        "Class weights (--class_weights auto: median-frequency balancing of %d training label maps, clipped to "
        "[%g, %g]; recorded in config.json): %s", len(data.train), CLASS_WEIGHT_MIN, CLASS_WEIGHT_MAX,
        format_weights(weights, data.id2label),
    )
    return weights


def check_num_labels(model_labels: int, data_labels: int, source: str, ignore_mismatched_sizes: bool) -> None:
    if model_labels != data_labels and not ignore_mismatched_sizes:
        raise ValueError(
            f"The model {source!r} predicts {model_labels} classes but the dataset has {data_labels}. Pass "
            "--ignore_mismatched_sizes to re-initialise its classifiers for the dataset's classes (fine-tuning on a "
            "new label set), or check --id2label_file / the dataset."
        )


def build_image_processor(data_args: DataArguments, ignore_index: int = 255) -> Any:
    """The ``DSNetImageProcessor`` that evaluation runs (``msaf_hf.data.eval_image_processor``), saved with
    checkpoints."""
    return eval_image_processor(data_args.eval_size, ignore_index, bool(data_args.reduce_labels))
