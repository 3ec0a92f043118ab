"""Fine-tuning and training DSNet with Accelerate.

The command line (``scripts/train.py``) is a thin wrapper around :func:`main`::

    python scripts/train.py --config configuration/quickstart.yaml
    accelerate launch --config_file configuration/accelerate/cpu_2proc.yaml scripts/train.py --config ...

Arguments are three dataclasses parsed by transformers' ``HfArgumentParser``: :class:`ModelArguments`
(which model), :class:`msaf_hf.data.DataArguments` (which data, augmentation) and
:class:`TrainingArguments` (optimisation, checkpoints, logging; ours, not transformers'). A recipe file
(``--config x.yaml``, flat ``name: value`` pairs) sets any of them; flags given on the command line win.

What :func:`train` guarantees:

* **Exact resume.** A checkpoint (``output_dir/checkpoint-<step>``) holds the whole state:
  model, optimiser, LR scheduler, every process's RNG states (``accelerator.save_state``) and
  ``trainer_state.json`` (step, epoch, batches consumed in the epoch, best metric). The data order is a
  pure function of ``(seed, epoch)`` (:class:`EpochShuffleSampler`) and the augmentation of
  ``(seed, epoch, index)`` (``msaf_hf.data``), so ``--resume_from_checkpoint latest`` skips the consumed
  batches and ends with exactly the weights of an uninterrupted run.
* **Atomic checkpoints.** A checkpoint is written to ``checkpoint-<step>.tmp`` and renamed when complete:
  a crash while writing never replaces (or hides) the last good one; only the last
  ``checkpoints_total_limit`` are kept.
* **One run per output folder** (:mod:`msaf_hf.run_folder`). The main process locks ``output_dir`` for the whole
  run (a second run stops at once, naming the holder; a killed run's lock is taken over); the run's id is in
  ``run.json`` and in every checkpoint, so another run's checkpoints are never rotated, replaced or resumed. Earlier
  results are reused only with ``--resume_from_checkpoint`` or deleted first with ``--overwrite_output_dir``.
* **Checked resume.** Every setting that changes the result is saved with each checkpoint; resuming with another
  value is an error unless ``--allow_changed_settings`` (the new values are then used and recorded).
* **Exact distributed evaluation.** See :mod:`msaf_hf.evaluation`: every evaluation image is scored
  once, whatever the number of processes.
* **Model folders.** ``output_dir/best`` (highest validation mIoU) and ``output_dir/final`` (the last
  weights) are ``save_pretrained`` folders (safetensors, ``config.json`` with the dataset's
  ``id2label``, ``preprocessor_config.json``, ``eval_results.json``, ``training_hyperparameters.json``)
  ready for ``from_pretrained`` and the Hub.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Sampler

from .configuration_dsnet import CITYSCAPES_CLASS_WEIGHTS, DSNetConfig
from .data import DataArguments, SegmentationData, collate_fn, load_segmentation_data
from .modeling_dsnet import DSNetForSemanticSegmentation
from .presets import list_presets, load_preset

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_PREFIX",
    "EpochShuffleSampler",
    "HubPushError",
    "ModelArguments",
    "TrainOutput",
    "TrainerState",
    "TrainingArguments",
    "build_image_processor",
    "build_model",
    "create_accelerator",
    "create_optimizer",
    "create_scheduler",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_recipe",
    "main",
    "parse_args",
    "save_checkpoint",
    "save_model_folder",
    "train",
]

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE_FILE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
_OPTIMIZERS = ("sgd", "adamw")
_SCHEDULERS = ("poly", "cosine", "constant")
_TRACKERS = ("tensorboard", "trackio", "wandb", "all", "none")
_HUB_STRATEGIES = ("end", "every_save", "checkpoint", "all_checkpoints")
_SYNC_BN = ("auto", "true", "false")


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------
@dataclass
class ModelArguments:
    """Which model to train: a preset built from scratch, or any ``from_pretrained`` source."""

    model_name_or_path: Optional[str] = field(
        default=None,
        metadata={
            "help": "Start from this model: a save_pretrained folder, a Hub model id, or a checkpoint file of the "
            "published code (.pth/.pth.tar/.pt, e.g. an ImageNet-pretrained encoder; converted on the fly). "
            "Default: build --preset from scratch."
        },
    )
    preset: str = field(
        default="dsnet",
        metadata={
            "help": f"Architecture preset when training from scratch ({', '.join(list_presets())}); also the variant "
            "assumed for published-code checkpoint files."
        },
    )
    config_overrides: Optional[str] = field(
        default=None,
        metadata={
            "help": "DSNetConfig values to override, 'key=value,key=value' (values parsed as JSON, e.g. "
            "'ohem_min_kept=50000,base_channels=16'; class_weights=cityscapes gives the published Cityscapes "
            "weights). In a recipe file this may be a mapping."
        },
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={
            "help": "Allow a pretrained model whose number of classes differs from the dataset's: its classifiers "
            "are re-initialised for the new label set."
        },
    )
    revision: str = field(default="main", metadata={"help": "Hub revision (branch, tag or commit) of the model."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Where to cache models downloaded from the Hub."})

    def parsed_config_overrides(self) -> dict[str, Any]:
        """``config_overrides`` as a dict (validated against :class:`DSNetConfig`'s fields)."""
        raw = self.config_overrides
        if raw is None or raw == "":
            values: dict[str, Any] = {}
        elif isinstance(raw, dict):
            values = dict(raw)
        else:
            values = {}
            # Split on commas that start a new "key=": values may be JSON lists holding commas.
            for item in re.split(r",(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)", str(raw)):
                if not item.strip():
                    continue
                if "=" not in item:
                    raise ValueError(
                        f"--config_overrides: {item!r} is not 'key=value' (got {raw!r}); example: "
                        "'ohem_min_kept=50000,base_channels=16'."
                    )
                key, value = (part.strip() for part in item.split("=", 1))
                try:
                    values[key] = json.loads(value)
                except json.JSONDecodeError:
                    values[key] = value  # a bare string such as head_type=head64
        known = {f.name for f in dataclasses.fields(DSNetConfig)} | {"num_labels"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"--config_overrides: unknown DSNetConfig field(s) {unknown}; valid fields: {sorted(known)}."
            )
        for key in ("id2label", "label2id", "num_labels"):
            if key in values:
                raise ValueError(
                    f"--config_overrides: {key} comes from the dataset (its class names); do not override it here. "
                    "Use --id2label_file to name the classes."
                )
        if values.get("class_weights") == "cityscapes":
            values["class_weights"] = list(CITYSCAPES_CLASS_WEIGHTS)
        return values


@dataclass
class TrainingArguments:
    """Optimisation, checkpointing and logging options of :func:`train` (not transformers' TrainingArguments)."""

    output_dir: str = field(
        default="outputs/dsnet",
        metadata={"help": "Where checkpoints, the best/ and final/ model folders and the logs go."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start from scratch even if output_dir holds results of an earlier run (checkpoints, final/, "
            "best/, all_results.json): they are deleted first. Ignored with --resume_from_checkpoint."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed of model initialisation, data order and augmentation."})
    num_train_epochs: int = field(default=100, metadata={"help": "Training epochs (ignored when max_steps > 0)."})
    max_steps: int = field(
        default=-1, metadata={"help": "Total optimiser steps; overrides num_train_epochs when > 0."}
    )
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Images per process per micro-batch (>= 2 unless BatchNorms are synchronised)."}
    )
    per_device_eval_batch_size: int = field(
        default=1, metadata={"help": "Images per process per evaluation batch (whole images of one size)."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches accumulated into one optimiser step."}
    )
    optimizer: str = field(default="sgd", metadata={"help": "Optimiser.", "choices": list(_OPTIMIZERS)})
    learning_rate: float = field(default=0.01, metadata={"help": "Peak learning rate (published: 0.01 with SGD)."})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum."})
    weight_decay: float = field(default=5e-4, metadata={"help": "Weight decay (published: 5e-4)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-8, metadata={"help": "AdamW epsilon."})
    lr_scheduler_type: str = field(
        default="poly",
        metadata={
            "help": "poly: lr * (1 - step/max_steps)^poly_power per step (published); cosine; constant.",
            "choices": list(_SCHEDULERS),
        },
    )
    poly_power: float = field(default=0.9, metadata={"help": "Exponent of the poly schedule."})
    warmup_steps: int = field(
        default=0, metadata={"help": "Linear warmup: step s < warmup_steps uses lr * (s+1)/(warmup_steps+1)."}
    )
    max_grad_norm: Optional[float] = field(
        default=None, metadata={"help": "Clip the gradient norm to this value (default: no clipping, as published)."}
    )
    mixed_precision: Optional[str] = field(
        default=None,
        metadata={
            "help": "no, fp16 or bf16 (through Accelerate). Default: the accelerate config / launch flag, else no.",
            "choices": ["no", "fp16", "bf16"],
        },
    )
    sync_batchnorm: str = field(
        default="auto",
        metadata={
            "help": "Convert BatchNorms to SyncBatchNorm. auto: when training on several GPUs (published recipe).",
            "choices": list(_SYNC_BN),
        },
    )
    channels_last: bool = field(default=False, metadata={"help": "Use channels-last memory format (faster on GPUs)."})
    use_cpu: bool = field(
        default=False,
        metadata={"help": "Train on the CPU even if an accelerator is present (chosen automatically without one)."},
    )
    checkpointing_steps: Optional[str] = field(
        default=None,
        metadata={"help": "Save the full training state every N optimiser steps, or 'epoch' (default: never)."},
    )
    checkpoints_total_limit: Optional[int] = field(
        default=3, metadata={"help": "Keep only the last K checkpoints (None: keep all)."}
    )
    resume_from_checkpoint: Optional[str] = field(
        default=None,
        metadata={
            "help": "'latest' (the newest complete checkpoint of the run that owns output_dir; an error if there is "
            "none) or a checkpoint folder."
        },
    )
    allow_changed_settings: bool = field(
        default=False,
        metadata={
            "help": "Resume even though settings that change the result (optimiser, schedule, learning rate, batch, "
            "accumulation, data, augmentation, model config) differ from the checkpoint's; the new values are used "
            "from the resume point on and recorded."
        },
    )
    eval_steps: Optional[str] = field(
        default=None,
        metadata={
            "help": "Evaluate every N optimiser steps, or 'epoch'. Training always ends with an evaluation when "
            "there is evaluation data."
        },
    )
    eval_on_start: bool = field(
        default=False, metadata={"help": "Also evaluate before the first step (a baseline for the curves)."}
    )
    save_best_model: bool = field(
        default=True, metadata={"help": "Keep the model with the highest validation mIoU in output_dir/best."}
    )
    logging_steps: int = field(default=10, metadata={"help": "Log losses, learning rate and images/s every N steps."})
    report_to: str = field(
        default="none",
        metadata={"help": "Trackers through Accelerate: tensorboard, trackio, wandb, all or none (comma-separated)."},
    )
    project_name: str = field(default="msaf_hf", metadata={"help": "Tracker project name."})
    dataloader_pin_memory: bool = field(
        default=True, metadata={"help": "Pin host memory of batches (only used when training on a GPU)."}
    )
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the final model folder to the Hub."})
    hub_model_id: Optional[str] = field(
        default=None, metadata={"help": "Hub repository (namespace/name); default: the output_dir's name."}
    )
    hub_strategy: str = field(
        default="end",
        metadata={
            "help": "end: push the final model; every_save: also at every checkpoint; checkpoint: also upload the "
            "latest checkpoint to last-checkpoint/; all_checkpoints: every checkpoint in its own folder.",
            "choices": list(_HUB_STRATEGIES),
        },
    )
    hub_private_repo: Optional[bool] = field(
        default=None, metadata={"help": "Create the Hub repository as private (an existing repo keeps its visibility)."}
    )
    hub_revision: Optional[str] = field(default=None, metadata={"help": "Hub branch to push to."})

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "logging_steps", "num_train_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainingArguments.{name} must be a positive integer, got {value!r}.")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"TrainingArguments.max_steps must be > 0 (or -1 to use num_train_epochs), got {self.max_steps}.")
        for name, choices in (("optimizer", _OPTIMIZERS), ("lr_scheduler_type", _SCHEDULERS),
                              ("hub_strategy", _HUB_STRATEGIES), ("sync_batchnorm", _SYNC_BN)):
            value = str(getattr(self, name)).lower()
            if value not in choices:
                raise ValueError(f"TrainingArguments.{name} must be one of {list(choices)}, got {getattr(self, name)!r}.")
            setattr(self, name, value)
        if self.mixed_precision is not None and self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"TrainingArguments.mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}.")
        if self.learning_rate <= 0:
            raise ValueError(f"TrainingArguments.learning_rate must be > 0, got {self.learning_rate}.")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError("TrainingArguments: weight_decay must be >= 0 and momentum in [0, 1).")
        if self.warmup_steps < 0:
            raise ValueError(f"TrainingArguments.warmup_steps must be >= 0, got {self.warmup_steps}.")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            self.max_grad_norm = None  # 0 conventionally means "off"
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(
                f"TrainingArguments.checkpoints_total_limit must be >= 1 (or None), got {self.checkpoints_total_limit}."
            )
        self.checkpointing_steps = _normalise_interval(self.checkpointing_steps, "checkpointing_steps")
        self.eval_steps = _normalise_interval(self.eval_steps, "eval_steps")
        trackers = self.trackers()
        unknown = [t for t in trackers if t not in _TRACKERS]
        if unknown:
            raise ValueError(f"TrainingArguments.report_to: unknown tracker(s) {unknown}; choose from {list(_TRACKERS)}.")

    def trackers(self) -> list[str]:
        """``report_to`` as a list ([] for none)."""
        names = [t.strip().lower() for t in str(self.report_to or "none").split(",") if t.strip()]
        return [] if names in ([], ["none"]) else names

    def interval(self, name: str) -> int | str | None:
        """``checkpointing_steps`` / ``eval_steps`` as an int, ``"epoch"`` or None."""
        value = getattr(self, name)
        return None if value is None else ("epoch" if value == "epoch" else int(value))


_SCALAR_TYPES = {"int": int, "float": float, "bool": bool, "str": str}
_MAPPING_FIELDS = {"config_overrides"}  # a string on the command line, a mapping in a recipe


def check_field_types(arguments: Any, names: Optional[Iterable[str]] = None) -> None:
    """Check that scalar fields (``int``, ``float``, ``bool``, ``str``, optionally ``Optional``) hold their type.

    Recipe values reach the dataclasses without argparse's conversion, so ``seed: [1, 2]`` or ``max_steps: 2.5``
    would otherwise fail much later, or be truncated silently. Integral floats (``max_steps: 300.0``) become ints.
    """
    for f in dataclasses.fields(arguments):
        if names is not None and f.name not in names:
            continue
        expected, optional = _scalar_type(f.type)
        optional = optional or f.default is None  # (HfArgumentParser strips Optional[...] from the field types)
        value = getattr(arguments, f.name)
        if expected is None or (value is None and optional) or (f.name in _MAPPING_FIELDS and isinstance(value, dict)):
            continue
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            setattr(arguments, f.name, float(value))
            continue
        if expected is int and isinstance(value, float) and value.is_integer():
            setattr(arguments, f.name, int(value))
            continue
        if expected is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            setattr(arguments, f.name, str(value))  # e.g. eval_steps: 100 (the command line gives "100")
            continue
        if isinstance(value, expected) and (expected is bool or not isinstance(value, bool)):
            continue
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[expected]
        raise ValueError(
            f"{type(arguments).__name__}.{f.name} must be {kind}{' (or None)' if optional else ''}, got {value!r} "
            f"({type(value).__name__})."
        )


def _scalar_type(annotation: Any) -> tuple[Optional[type], bool]:
    """(int/float/bool/str or None, whether None is allowed) of a field annotation, a string or resolved (as
    ``HfArgumentParser`` leaves it)."""
    import typing

    if isinstance(annotation, str):
        text = annotation.replace(" ", "")
        optional = text.startswith("Optional[") and text.endswith("]")
        return _SCALAR_TYPES.get(text[len("Optional["):-1] if optional else text), optional
    if annotation in _SCALAR_TYPES.values():
        return annotation, False
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(members) == 1 and len(typing.get_args(annotation)) == 2 and members[0] in _SCALAR_TYPES.values():
        return members[0], True
    return None, False


def _normalise_interval(value: Any, name: str) -> Optional[str]:
    if value is None or str(value).strip().lower() in ("", "none", "no"):
        return None
    text = str(value).strip().lower()
    if text == "epoch":
        return text
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"TrainingArguments.{name} must be a positive number of steps or 'epoch', got {value!r}.")
    return str(int(text))


# --------------------------------------------------------------------------------------------------
# Command line and recipes
# --------------------------------------------------------------------------------------------------
def load_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe: a YAML (or JSON) mapping of flat ``argument: value`` pairs."""
    file = Path(path)
    if not file.is_file():
        from .presets import configuration_dir

        packaged = configuration_dir() / file.name
        if file.parent == Path(".") and packaged.is_file():
            file = packaged  # a bare name such as quickstart.yaml also finds the packaged recipe
        else:
            raise FileNotFoundError(f"Recipe file {str(path)!r} not found.")
    try:
        values = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"Recipe {str(file)!r} is not valid YAML: {err}") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"Recipe {str(file)!r} must be a mapping of 'argument: value' pairs, got {type(values).__name__}.")
    return values


def _build_parser(dataclass_types: Sequence[type]) -> Any:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(list(dataclass_types))
    parser.add_argument(
        "--config",
        default=None,
        help="Recipe file (YAML, flat 'argument: value' pairs) providing defaults; command-line flags override it.",
    )
    return parser


def parse_args(
    argv: Sequence[str] | None = None,
    dataclass_types: Sequence[type] = (ModelArguments, DataArguments, TrainingArguments),
    *,
    ignore_unknown_recipe_keys: bool = False,
    recipe_exclude: Sequence[str] = (),
) -> tuple[Any, ...]:
    """Parse the command line into the dataclasses, with ``--config recipe.yaml`` supplying defaults.

    The recipe's values become the parser's defaults, so any flag given on the command line wins.
    Unknown recipe keys and invalid choices are errors naming the key (unknown keys are skipped with
    ``ignore_unknown_recipe_keys``, e.g. to reuse a training recipe for evaluation); keys in ``recipe_exclude`` are
    never taken from the recipe.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    parser = _build_parser(dataclass_types)
    if known.config is not None:
        recipe = {k: v for k, v in load_recipe(known.config).items() if k not in recipe_exclude}
        actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
        unknown = sorted(set(recipe) - set(actions))
        if unknown and ignore_unknown_recipe_keys:
            recipe = {k: v for k, v in recipe.items() if k in actions}
        elif unknown:
            raise ValueError(
                f"Recipe {known.config!r}: unknown argument(s) {unknown}. Valid arguments are the command-line flags "
                "without dashes (see --help)."
            )
        for key, value in recipe.items():
            choices = actions[key].choices
            if choices is not None and value is not None and value not in choices:
                raise ValueError(f"Recipe {known.config!r}: {key}={value!r} is not one of {list(choices)}.")
        # Defaults bypass argparse's type conversion for non-strings: lists/bools/numbers from YAML keep their types.
        parser.set_defaults(**recipe)
    outputs = tuple(o for o in parser.parse_args_into_dataclasses(args=argv) if dataclasses.is_dataclass(o))
    for output in outputs:  # recipe values skip argparse's type conversion: seed: [1, 2] is an error here
        check_field_types(output)
    return outputs


# --------------------------------------------------------------------------------------------------
# Model, optimiser, schedule
# --------------------------------------------------------------------------------------------------
_ORIGINAL_CHECKPOINT_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar")


def build_model(model_args: ModelArguments, id2label: dict[int, str], ignore_index: int = 255) -> DSNetForSemanticSegmentation:
    """The model to train, with the dataset's label set.

    From scratch (``preset``), from a published-code checkpoint file, or with ``from_pretrained``. A pretrained
    model whose number of classes differs from the dataset's needs ``ignore_mismatched_sizes`` (its classifiers
    are re-initialised); with the same number of classes, the dataset's class names replace the model's.
    """
    overrides = model_args.parsed_config_overrides()
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
        from .convert import convert_original_checkpoint, load_original_state_dict

        checkpoint = load_original_state_dict(source)
        classifier = checkpoint.state_dict.get("lastlayer.conv2.weight")
        if classifier is None or classifier.shape[0] == len(id2label):
            model, report = convert_original_checkpoint(
                source, variant=model_args.preset, num_labels=len(id2label), id2label=label_kwargs["id2label"],
                semantic_loss_ignore_index=ignore_index, **overrides,
            )
            logger.info("Converted published checkpoint %s:\n%s", source, report)
            return model
        _check_num_labels(int(classifier.shape[0]), len(id2label), source, model_args.ignore_mismatched_sizes)
        # Different label set: convert with the checkpoint's classes, then re-initialise the classifiers below.
        import tempfile

        model, _ = convert_original_checkpoint(source, variant=model_args.preset)
        staging = tempfile.mkdtemp(prefix="msaf-convert-")
        model.save_pretrained(staging)
        source = staging

    config = DSNetConfig.from_pretrained(source, revision=model_args.revision, cache_dir=model_args.cache_dir)
    _check_num_labels(config.num_labels, len(id2label), source, model_args.ignore_mismatched_sizes)
    if config.num_labels == len(id2label) and {int(k): v for k, v in config.id2label.items()} != label_kwargs["id2label"]:
        logger.warning(
            "%s was trained with classes %s; using the dataset's class names %s for the same class ids.",
            source, list(config.id2label.values()), list(id2label.values()),
        )
    if config.class_weights is not None and len(config.class_weights) != len(id2label) and "class_weights" not in overrides:
        overrides["class_weights"] = None  # the checkpoint's per-class weights do not fit the new label set
    return DSNetForSemanticSegmentation.from_pretrained(
        source,
        revision=model_args.revision,
        cache_dir=model_args.cache_dir,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
        **label_kwargs,
        **overrides,
    )


def _check_num_labels(model_labels: int, data_labels: int, source: str, ignore_mismatched_sizes: bool) -> None:
    if model_labels != data_labels and not ignore_mismatched_sizes:
        raise ValueError(
            f"The model {source!r} predicts {model_labels} classes but the dataset has {data_labels}. Pass "
            "--ignore_mismatched_sizes to re-initialise its classifiers for the dataset's classes (fine-tuning on a "
            "new label set), or check --id2label_file / the dataset."
        )


def build_image_processor(data_args: DataArguments, ignore_index: int = 255) -> Any:
    """The ``DSNetImageProcessor`` that evaluation runs (``msaf_hf.data.eval_image_processor``), saved with checkpoints."""
    from .data import eval_image_processor

    return eval_image_processor(data_args.eval_size, ignore_index, bool(data_args.reduce_labels))


def create_optimizer(model: torch.nn.Module, args: TrainingArguments) -> torch.optim.Optimizer:
    """SGD with momentum (published) or AdamW; weight decay on every parameter, as the published code does."""
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.learning_rate, momentum=args.momentum, weight_decay=args.weight_decay)
    return torch.optim.AdamW(
        params, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
        weight_decay=args.weight_decay,
    )


def lr_factor(step: int, max_steps: int, kind: str = "poly", power: float = 0.9, warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate used for optimiser step ``step`` (0-based)."""
    progress = min(step, max_steps) / max_steps
    if kind == "poly":
        factor = (1.0 - progress) ** power
    elif kind == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        factor = 1.0
    if step < warmup_steps:
        factor *= (step + 1) / (warmup_steps + 1)
    return factor


def create_scheduler(optimizer: torch.optim.Optimizer, args: TrainingArguments, max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` of :func:`lr_factor`. A closure (not a callable object), so a resumed run's
    schedule comes from its own arguments while the step count comes from the checkpoint."""

    def factor(step: int) -> float:
        return lr_factor(step, max_steps, args.lr_scheduler_type, args.poly_power, args.warmup_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------------------------------
# Data order
# --------------------------------------------------------------------------------------------------
class EpochShuffleSampler(Sampler[int]):
    """A shuffle that is a pure function of ``(seed, epoch)``, truncated to ``num_used`` indices.

    Truncating to a multiple of (global batch x accumulation steps) gives every process the same number of
    whole optimiser steps per epoch, so nothing is padded or repeated and the epoch ends on an optimiser step.
    """

    def __init__(self, num_samples: int, seed: int, num_used: int | None = None) -> None:
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.num_used = self.num_samples if num_used is None else int(num_used)
        if not 0 < self.num_used <= self.num_samples:
            raise ValueError(f"EpochShuffleSampler: num_used must be in 1..{self.num_samples}, got {self.num_used}.")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def permutation(self, epoch: int | None = None) -> list[int]:
        """The indices of one epoch, in order."""
        epoch = self.epoch if epoch is None else int(epoch)
        # SeedSequence decorrelates neighbouring (seed, epoch) pairs; a private generator keeps global RNGs untouched.
        key = int(np.random.SeedSequence([self.seed, epoch, 0x5EED]).generate_state(1, np.uint64)[0] >> 1)
        generator = torch.Generator().manual_seed(key)
        return torch.randperm(self.num_samples, generator=generator)[: self.num_used].tolist()

    def __iter__(self):
        return iter(self.permutation())

    def __len__(self) -> int:
        return self.num_used


# --------------------------------------------------------------------------------------------------
# State and checkpoints
# --------------------------------------------------------------------------------------------------
@dataclass
class TrainerState:
    """Counters saved with every checkpoint (``trainer_state.json``) besides Accelerate's state."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of `epoch` each process has consumed (0 = epoch not started)
    best_metric: Optional[float] = None
    best_step: Optional[int] = None
    num_processes: int = 1
    per_device_train_batch_size: int = 0
    gradient_accumulation_steps: int = 1
    seed: int = 0
    max_steps: int = 0
    run_id: Optional[str] = None  # the run that wrote this state (msaf_hf.run_folder); None: before run ids
    settings: dict[str, Any] = field(default_factory=dict)  # what changes the result (compared on resume)
    log_history: list[dict[str, Any]] = field(default_factory=list)

    def save(self, folder: str | os.PathLike) -> None:
        path = Path(folder) / TRAINER_STATE_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2, allow_nan=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> TrainerState:
        path = Path(folder) / TRAINER_STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {folder} is not a complete checkpoint of msaf_hf.training.")
        values = json.loads(path.read_text(encoding="utf-8"))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def list_checkpoints(output_dir: str | os.PathLike, run_id: Optional[str] = None) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first. Unfinished ``*.tmp`` folders are not listed.

    With ``run_id``, only that run's checkpoints (and those written before runs had ids).
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _CHECKPOINT_RE.match(path.name)
        if match and path.is_dir() and (path / TRAINER_STATE_FILE).is_file():
            if run_id is not None and _checkpoint_run_id(path) not in (None, run_id):
                continue
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def _checkpoint_run_id(checkpoint: Path) -> Optional[str]:
    try:
        return json.loads((checkpoint / TRAINER_STATE_FILE).read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def find_latest_checkpoint(output_dir: str | os.PathLike, run_id: Optional[str] = None) -> Optional[Path]:
    """The newest complete checkpoint in ``output_dir`` (of run ``run_id`` when given), or None."""
    checkpoints = list_checkpoints(output_dir, run_id)
    return checkpoints[-1] if checkpoints else None


def _replace_dir(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target`` atomically; an existing ``target`` is moved aside first, then removed."""
    stale = None
    if target.exists():
        stale = target.with_name(f"{target.name}.old-{os.getpid()}")
        os.replace(target, stale)
    os.replace(source, target)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def save_checkpoint(accelerator: Any, output_dir: str | os.PathLike, state: TrainerState,
                    total_limit: int | None = None) -> Path:
    """Write the full training state to ``output_dir/checkpoint-<step>`` atomically; keep the last ``total_limit``.

    Every process takes part (Accelerate writes the model and optimiser on the main process and one RNG file per
    process). Everything goes to ``checkpoint-<step>.tmp`` first; only when all of it is written does the main
    process rename the folder, so an interrupted save leaves the previous checkpoint as the latest one.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"{CHECKPOINT_PREFIX}{state.global_step}"
    staging = output_dir / f"{final.name}.tmp"
    if accelerator.is_main_process and staging.exists():
        shutil.rmtree(staging)  # leftovers of a save that crashed
    if accelerator.is_main_process and final.is_dir() and _checkpoint_run_id(final) not in (None, state.run_id):
        raise FileExistsError(  # never replace another run's checkpoint (the folder is locked and owned by this run)
            f"{final} belongs to another run ({_checkpoint_run_id(final)}, this run is {state.run_id}); move it away."
        )
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging), safe_serialization=True)
    if accelerator.is_main_process:
        state.save(staging)  # written last: its presence marks a complete checkpoint
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _replace_dir(staging, final)
        if total_limit is not None:  # rotate this run's checkpoints only
            for old in list_checkpoints(output_dir, state.run_id)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def save_model_folder(model: torch.nn.Module, image_processor: Any, folder: str | os.PathLike,
                      extra_files: dict[str, Any] | None = None) -> Path:
    """``save_pretrained`` the model and its image processor to ``folder`` atomically (write aside, then rename),
    plus JSON ``extra_files`` (e.g. ``eval_results.json``). Call on the main process only."""
    folder = Path(folder)
    staging = folder.with_name(f"{folder.name}.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(staging, safe_serialization=True)
    image_processor.save_pretrained(staging)
    for name, content in (extra_files or {}).items():
        (staging / name).write_text(json.dumps(content, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    _replace_dir(staging, folder)
    return folder


def _clean_stale_staging(output_dir: Path) -> None:
    for path in output_dir.glob(f"{CHECKPOINT_PREFIX}*.tmp"):
        logger.warning("Removing %s: an unfinished checkpoint of an interrupted run.", path)
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
@dataclass
class TrainOutput:
    """What :func:`train` returns (on every process)."""

    global_step: int
    metrics: dict[str, Any]  # the last evaluation (empty without evaluation data)
    model: torch.nn.Module  # the trained model, unwrapped
    confusion_matrix: Optional[torch.Tensor]  # of the last evaluation, summed over processes
    final_dir: Optional[Path]
    best_dir: Optional[Path]
    best_metric: Optional[float]
    train_loss: Optional[float]  # mean loss of the last logging window
    stopped_early: bool = False
    eval_dataset: Optional[torch.utils.data.Dataset] = None


StepCallback = Callable[[TrainerState], Optional[bool]]


def _any_accelerator_available() -> bool:
    accelerator_api = getattr(torch, "accelerator", None)
    if accelerator_api is not None and hasattr(accelerator_api, "is_available"):
        return bool(accelerator_api.is_available())
    return torch.cuda.is_available()


def create_accelerator(args: TrainingArguments) -> Any:
    """The ``Accelerator`` for these arguments (CPU when no GPU is present, so that ``accelerate launch`` with
    several processes trains on CPU through gloo)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    trackers = args.trackers()
    _check_trackers_installed(trackers)
    return Accelerator(
        cpu=args.use_cpu or not _any_accelerator_available(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        # The schedule counts optimiser steps: stepped by hand once per optimiser step, never per process.
        step_scheduler_with_optimizer=False,
        log_with=(trackers if trackers != ["all"] else "all") or None,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "runs")),
        # Training batches are even by construction (EpochShuffleSampler); evaluation shards by itself, unpadded.
        dataloader_config=DataLoaderConfiguration(even_batches=True),
    )


_TRACKER_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "trackio": ("trackio",)}


def _check_trackers_installed(trackers: Sequence[str]) -> None:
    import importlib.util

    for name in trackers:
        modules = _TRACKER_MODULES.get(name, ())
        if modules and not any(importlib.util.find_spec(m) is not None for m in modules):
            raise ImportError(
                f"--report_to {name} needs the {modules[0]} package: pip install {modules[0]} (or --report_to none)."
            )


def _flat_hparams(*argument_objects: Any) -> dict[str, Any]:
    """Flat, tracker-friendly {name: value} of the argument dataclasses (lists and None as strings)."""
    out: dict[str, Any] = {}
    for obj in argument_objects:
        for key, value in dataclasses.asdict(obj).items():
            if key.startswith("hub_") or key in ("push_to_hub", "output_dir", "overwrite_output_dir", "disable_tqdm"):
                continue
            if value is None or isinstance(value, (list, tuple, dict)):
                value = json.dumps(value) if value is not None else "None"
            out[key] = value
    return out


def _card_hyperparameters(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments,
                          accelerator: Any, max_steps: int, changed_on_resume: Optional[dict[str, tuple]] = None,
                          resume_step: int = 0) -> dict[str, Any]:
    """The hyperparameters written to ``training_hyperparameters.json`` for the model card."""
    source = model_args.model_name_or_path or f"preset {model_args.preset} (from scratch)"
    values = {
        "initialisation": source,
        "optimizer": args.optimizer,
        "learning_rate": args.learning_rate,
        "lr_scheduler": f"{args.lr_scheduler_type} (power {args.poly_power})" if args.lr_scheduler_type == "poly"
        else args.lr_scheduler_type,
        "warmup_steps": args.warmup_steps,
        "weight_decay": args.weight_decay,
        "momentum": args.momentum if args.optimizer == "sgd" else None,
        "max_steps": max_steps,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "num_processes": accelerator.num_processes,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "total_train_batch_size": args.per_device_train_batch_size * accelerator.num_processes
        * args.gradient_accumulation_steps,
        "mixed_precision": accelerator.mixed_precision,
        "max_grad_norm": args.max_grad_norm,
        "seed": args.seed,
        "crop_size": list(data_args.resolved_crop_size()),
        "scale_range": list(data_args.scale_range),
        "hflip_probability": data_args.hflip_probability,
        "eval_size": data_args.eval_size or "native",
    }
    overrides = model_args.parsed_config_overrides()
    if overrides:
        values["config_overrides"] = json.dumps(overrides)
    if changed_on_resume:  # --allow_changed_settings: the values above apply from the resume step on
        values["changed_on_resume"] = f"at step {resume_step}: " + ", ".join(
            f"{k} {a} -> {b}" for k, (a, b) in changed_on_resume.items())
    return {k: v for k, v in values.items() if v is not None}


def _dataset_description(data_args: DataArguments) -> dict[str, Any]:
    if data_args.synthetic:
        name = "synthetic shapes (msaf_hf.data)"
    elif data_args.dataset_name is not None:
        name = data_args.dataset_name
    elif data_args.cityscapes_root is not None:
        name = "Cityscapes"
    else:
        name = data_args.image_dir
    out = {"dataset_name": os.path.basename(str(name).rstrip("/")) if name and os.path.isdir(str(name)) else name,
           "dataset_split": data_args.eval_split if data_args.eval_split_fraction is None else
           f"{data_args.eval_split_fraction:g} of {data_args.train_split}"}
    if data_args.dataset_name is not None and not os.path.exists(data_args.dataset_name):
        out["dataset_id"] = data_args.dataset_name
    if data_args.dataset_config_name:
        out["dataset_config"] = data_args.dataset_config_name
    return out


def _eval_results_file(metrics: dict[str, Any], id2label: dict[int, str], step: int, dataset: dict[str, Any]) -> dict[str, Any]:
    """``eval_results.json`` content, in the keys ``msaf_hf.hub`` reads (lists in class-id order)."""
    names = [id2label[i] for i in range(len(id2label))]
    out = {
        "mean_iou": metrics["mean_iou"],
        "pixel_accuracy": metrics["pixel_accuracy"],
        "mean_class_accuracy": metrics["mean_class_accuracy"],
        "per_class_iou": [_nan_to_none(v) for v in metrics["per_class_iou"]],
        "per_class_accuracy": [_nan_to_none(v) for v in metrics["per_class_accuracy"]],
        "class_names": names,
        "step": step,
    }
    out.update(dataset)
    return out


def _nan_to_none(value: Any) -> Any:
    value = float(value)
    return None if math.isnan(value) else value


def _plan_steps(num_examples: int, args: TrainingArguments, num_processes: int) -> tuple[int, int, int, int]:
    """(optimiser steps per epoch, examples used per epoch, max_steps, number of epochs)."""
    per_step = args.per_device_train_batch_size * num_processes * args.gradient_accumulation_steps
    steps_per_epoch = num_examples // per_step
    if steps_per_epoch == 0:
        raise ValueError(
            f"The training set has {num_examples} examples, fewer than one optimiser step needs "
            f"(per_device_train_batch_size {args.per_device_train_batch_size} x {num_processes} processes x "
            f"gradient_accumulation_steps {args.gradient_accumulation_steps} = {per_step}). Lower the batch size or "
            "use more data."
        )
    if args.max_steps > 0:
        max_steps = args.max_steps
        num_epochs = math.ceil(max_steps / steps_per_epoch)
    else:
        num_epochs = args.num_train_epochs
        max_steps = num_epochs * steps_per_epoch
    return steps_per_epoch, steps_per_epoch * per_step, max_steps, num_epochs


def _resolve_resume(args: TrainingArguments, owner: Optional[str]) -> Optional[Path]:
    """The checkpoint to resume from: ``latest`` of the run owning output_dir, or the given folder."""
    value = args.resume_from_checkpoint
    if value is None:
        return None
    if value == "latest":
        latest = find_latest_checkpoint(args.output_dir, owner)
        if latest is None:
            from .run_folder import describe_folder

            raise FileNotFoundError(
                f"--resume_from_checkpoint latest: there is no complete checkpoint to resume in output_dir "
                f"{args.output_dir!r} ({describe_folder(args.output_dir)}). Check --output_dir, pass a "
                f"{CHECKPOINT_PREFIX}<step> folder, or drop --resume_from_checkpoint to start a new run."
            )
        return latest
    path = Path(value)
    if not (path / TRAINER_STATE_FILE).is_file():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {value!r} is not a complete checkpoint (no {TRAINER_STATE_FILE}); pass a "
            f"{CHECKPOINT_PREFIX}<step> folder written by this trainer, or 'latest'."
        )
    return path


def _prepare_output_dir(args: TrainingArguments) -> tuple[Optional[Path], str]:
    """Decide who owns ``output_dir`` for this run (main process, lock held): (checkpoint to resume, run id).

    A new run needs a folder without earlier results, or ``--overwrite_output_dir`` (which deletes them first); a
    resumed run continues the checkpoint's run id; nothing of another run is ever reused by accident.
    """
    from .run_folder import clear_earlier_results, earlier_results, new_run_id, read_run_id, write_run_file

    output_dir = Path(args.output_dir)
    owner = read_run_id(output_dir)
    results = earlier_results(output_dir)
    resume_dir = _resolve_resume(args, owner)
    if resume_dir is not None:
        if args.overwrite_output_dir:
            logger.warning("--overwrite_output_dir is ignored: resuming %s.", resume_dir)
        run_id = TrainerState.load(resume_dir).run_id or owner or new_run_id()
        inside = resume_dir.resolve().parent == output_dir.resolve()
        if not inside and results and owner != run_id:
            raise FileExistsError(
                f"output_dir {str(output_dir)!r} holds the results of another run ({', '.join(results[:8])}); "
                f"continuing {resume_dir} there would mix the two. Choose an empty --output_dir (or delete them)."
            )
        foreign = [p.name for p in list_checkpoints(output_dir) if _checkpoint_run_id(p) not in (None, run_id)]
        if foreign:
            raise FileExistsError(
                f"output_dir {str(output_dir)!r} also holds checkpoints of another run ({', '.join(foreign)}); "
                f"continuing run {run_id} there could replace them. Move them away or resume into another --output_dir."
            )
    else:
        if results and not args.overwrite_output_dir:
            hint = ("--resume_from_checkpoint latest to continue it, " if list_checkpoints(output_dir) else "")
            raise FileExistsError(
                f"output_dir {str(output_dir)!r} holds the results of an earlier run ({', '.join(results[:8])}"
                f"{', ...' if len(results) > 8 else ''}). Pass {hint}--overwrite_output_dir to delete them and start "
                "again, or choose another --output_dir."
            )
        if args.overwrite_output_dir:
            removed = clear_earlier_results(output_dir)
            if removed:
                logger.warning("--overwrite_output_dir: deleted the earlier run's %s from %s.", ", ".join(removed),
                               output_dir)
        run_id = new_run_id()
    write_run_file(output_dir, run_id)
    return resume_dir, run_id


def _claim_output_dir(args: TrainingArguments, accelerator: Any) -> tuple[Any, Optional[Path], str]:
    """Lock ``output_dir`` on the main process and settle its ownership; every process gets the verdict.

    Returns (the lock on the main process, else None; checkpoint to resume; run id). A refusal is raised on every
    process (the others learn it through a broadcast instead of waiting for a main process that has stopped).
    """
    from .run_folder import OutputDirLockedError, RunLock

    lock, error, verdict = None, None, [None]
    if accelerator.is_main_process:
        try:
            lock = RunLock(args.output_dir).acquire()
            resume_dir, run_id = _prepare_output_dir(args)
            lock.set_run_id(run_id)
            _clean_stale_staging(Path(args.output_dir))
            verdict = [("ok", None if resume_dir is None else str(resume_dir), run_id)]
        except Exception as err:  # noqa: BLE001 - passed on to every process, then raised
            if lock is not None:
                lock.release()
            error, verdict = err, [("error", type(err).__name__, str(err))]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        verdict = broadcast_object_list(verdict, from_process=0)
    if error is not None:
        raise error
    kind, first, second = verdict[0]
    if kind == "error":
        types = {t.__name__: t for t in (OutputDirLockedError, FileExistsError, FileNotFoundError, ValueError)}
        raise types.get(first, RuntimeError)(second)
    return lock, (None if first is None else Path(first)), second


@dataclass
class _Run:
    """Everything one training run holds, built by :func:`_set_up` (the loop itself lives in :func:`train`)."""

    model_args: ModelArguments
    data_args: DataArguments
    args: TrainingArguments
    accelerator: Any
    data: SegmentationData
    model: torch.nn.Module  # prepared (DDP-wrapped when distributed)
    image_processor: Any
    optimizer: Any
    scheduler: Any
    train_loader: Any
    steps_per_epoch: int
    max_steps: int
    state: TrainerState
    output_dir: Path
    hyperparameters: dict[str, Any]
    dataset_info: dict[str, Any]
    pusher: Any = None
    lock: Any = None  # msaf_hf.run_folder.RunLock on the main process
    metrics: dict[str, Any] = field(default_factory=dict)  # of the last evaluation
    confusion: Optional[torch.Tensor] = None
    last_eval_step: int = -1
    best_dir: Optional[Path] = None
    last_loss: Optional[float] = None
    last_checkpoint_step: int = -1

    @property
    def batches_per_epoch(self) -> int:
        """Micro-batches per epoch on each process."""
        return self.steps_per_epoch * self.args.gradient_accumulation_steps

    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)


def train(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: TrainingArguments,
    callbacks: Iterable[StepCallback] = (),
) -> TrainOutput:
    """Train (or fine-tune) DSNet; see the module docstring for what is guaranteed.

    ``callbacks`` are called on every process after each optimiser step (after any evaluation and checkpoint of
    that step) with the :class:`TrainerState`; returning True stops training early (the final model is still
    evaluated and saved). Exceptions they raise propagate (e.g. to simulate a crash in tests).
    """
    output, lock = _train(model_args, data_args, args, callbacks)
    if lock is not None:
        lock.release()
    return output


def _train(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments,
           callbacks: Iterable[StepCallback] = ()) -> tuple[TrainOutput, Any]:
    """:func:`train`, returning the output folder's lock still held (main process) when training succeeded."""
    from tqdm.auto import tqdm

    run = _set_up(model_args, data_args, args)
    accelerator, model, optimizer, scheduler, state = run.accelerator, run.model, run.optimizer, run.scheduler, run.state
    eval_every = args.interval("eval_steps") if run.data.eval is not None else None
    checkpoint_every = args.interval("checkpointing_steps")
    window = _LossWindow()
    progress = tqdm(total=run.max_steps, initial=state.global_step, desc="training", dynamic_ncols=True,
                    disable=args.disable_tqdm or not accelerator.is_local_main_process)
    stopped_early = succeeded = False
    try:
        if args.eval_on_start and run.data.eval is not None and state.global_step == 0:
            _evaluate_and_keep_best(run, keep_best=False)
        model.train()
        while state.global_step < run.max_steps and not stopped_early:
            run.data.train.set_epoch(state.epoch)  # augmentation key (in shared memory: workers see it)
            run.train_loader.set_epoch(state.epoch)  # data order: reaches EpochShuffleSampler through Accelerate
            loader = run.train_loader
            if state.batches_in_epoch > 0:  # resumed mid-epoch: the same order, without what was consumed
                loader = accelerator.skip_first_batches(run.train_loader, state.batches_in_epoch)
            for batch in loader:
                if args.channels_last:
                    batch["pixel_values"] = batch["pixel_values"].contiguous(memory_format=torch.channels_last)
                with accelerator.accumulate(model):
                    outputs = model(pixel_values=batch["pixel_values"], labels=batch["labels"])
                    accelerator.backward(outputs.loss)
                    if accelerator.sync_gradients and args.max_grad_norm is not None:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                window.add(outputs)  # on the device: no host synchronisation
                state.batches_in_epoch += 1
                if not accelerator.sync_gradients:
                    continue  # accumulating

                step_lr = optimizer.param_groups[0]["lr"]  # the rate this step used (a Python float)
                scheduler.step()
                state.global_step += 1
                progress.update(1)
                if state.batches_in_epoch >= run.batches_per_epoch:
                    state.epoch, state.batches_in_epoch = state.epoch + 1, 0  # a checkpoint now starts the next epoch
                epoch_done = state.batches_in_epoch == 0
                if state.global_step % args.logging_steps == 0 or state.global_step == run.max_steps:
                    _log_window(run, window, step_lr, progress)
                if _is_due(eval_every, state.global_step, epoch_done):
                    _evaluate_and_keep_best(run)
                if _is_due(checkpoint_every, state.global_step, epoch_done):
                    _checkpoint(run)
                stopped_early = any([bool(callback(state)) for callback in callbacks])
                if stopped_early or state.global_step >= run.max_steps:
                    break
            else:
                if state.batches_in_epoch:  # the loader ran out early (resumed with other settings): next epoch
                    state.epoch, state.batches_in_epoch = state.epoch + 1, 0
        progress.close()
        final_dir = _finish(run)
        succeeded = True
    finally:
        progress.close()
        if run.pusher is not None:
            run.pusher.close(wait=False)
        # Let go of the DDP wrapper while the process group is still registered. Otherwise its Reducer holds the
        # last reference to the group, and destroys it (waiting for the Gloo worker threads) while holding the
        # GIL, which a worker thread releasing a finished work's tensors needs: an occasional hang at exit.
        run.model = run.unwrapped()
        del model
        accelerator.free_memory()  # it also keeps the prepared (wrapped) model
        gc.collect()
        accelerator.end_training()
        if not succeeded and run.lock is not None:
            run.lock.release()  # failed: let go at once (success: the caller releases it)

    output = TrainOutput(
        global_step=state.global_step,
        metrics=run.metrics,
        model=run.unwrapped(),
        confusion_matrix=run.confusion,
        final_dir=final_dir,
        best_dir=run.best_dir,
        best_metric=state.best_metric,
        train_loss=run.last_loss,
        stopped_early=stopped_early,
        eval_dataset=run.data.eval,
    )
    return output, run.lock


def _is_due(interval: int | str | None, global_step: int, epoch_done: bool) -> bool:
    if interval is None:
        return False
    return epoch_done if interval == "epoch" else global_step % interval == 0


def _set_up(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments) -> _Run:
    """Accelerator, data, model, optimiser, schedule and loader, prepared; the state resumed if asked."""
    from accelerate.utils import set_seed

    accelerator = create_accelerator(args)
    _setup_logging(accelerator)
    output_dir = Path(args.output_dir)
    lock, resume_dir, run_id = _claim_output_dir(args, accelerator)
    try:
        return _set_up_locked(model_args, data_args, args, accelerator, output_dir, lock, resume_dir, run_id)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _set_up_locked(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments, accelerator: Any,
                   output_dir: Path, lock: Any, resume_dir: Optional[Path], run_id: str) -> _Run:
    from accelerate.utils import set_seed

    set_seed(args.seed)  # model initialisation; data order and augmentation have their own keyed generators
    with accelerator.main_process_first():  # the main process fills the datasets cache first
        data: SegmentationData = load_segmentation_data(data_args, seed=args.seed)
    model = build_model(model_args, data.id2label, data.ignore_index)
    image_processor = build_image_processor(data_args, data.ignore_index)

    use_sync_bn = args.sync_batchnorm == "true" or (
        args.sync_batchnorm == "auto" and accelerator.num_processes > 1 and accelerator.device.type == "cuda"
    )
    if use_sync_bn:
        if accelerator.num_processes == 1:
            logger.warning("--sync_batchnorm true with a single process: SyncBatchNorm behaves like BatchNorm.")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif args.per_device_train_batch_size < 2:
        raise ValueError(
            "per_device_train_batch_size must be >= 2: DSNet's pooled BatchNorms need 2 images per batch (or train on "
            "several GPUs with --sync_batchnorm true, which pools the statistics across processes)."
        )
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model, args)

    steps_per_epoch, used_per_epoch, max_steps, _ = _plan_steps(len(data.train), args, accelerator.num_processes)
    scheduler = create_scheduler(optimizer, args, max_steps)
    train_loader = DataLoader(
        data.train,
        batch_size=args.per_device_train_batch_size,
        sampler=EpochShuffleSampler(len(data.train), args.seed, used_per_epoch),
        drop_last=True,
        collate_fn=collate_fn,
        num_workers=data_args.num_workers,
        pin_memory=args.dataloader_pin_memory and accelerator.device.type != "cpu",
        persistent_workers=data_args.num_workers > 0,
        generator=torch.Generator(),  # the loader's base-seed draw must not consume the global RNG
    )
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)

    state = TrainerState(
        num_processes=accelerator.num_processes, per_device_train_batch_size=args.per_device_train_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps, seed=args.seed, max_steps=max_steps,
        run_id=run_id, settings=result_settings(model_args, data_args, args, accelerator, max_steps,
                                                accelerator.unwrap_model(model).config),
    )
    changed: dict[str, tuple[Any, Any]] = {}
    if resume_dir is not None:
        saved = TrainerState.load(resume_dir)
        changed = _check_resume_settings(saved, state, args, resume_dir)
        _load_checkpoint(accelerator, resume_dir, run_id)
        if changed:
            _apply_changed_hyperparameters(optimizer, scheduler, args)
        state = _resumed_state(saved, state)
        logger.info("Resumed from %s at step %d (epoch %d, batch %d).", resume_dir, state.global_step, state.epoch,
                    state.batches_in_epoch)

    run = _Run(
        model_args=model_args, data_args=data_args, args=args, accelerator=accelerator, data=data, model=model,
        image_processor=image_processor, optimizer=optimizer, scheduler=scheduler, train_loader=train_loader,
        steps_per_epoch=steps_per_epoch, max_steps=max_steps, state=state, output_dir=output_dir,
        hyperparameters=_card_hyperparameters(model_args, data_args, args, accelerator, max_steps, changed,
                                              state.global_step),
        dataset_info=_dataset_description(data_args),
        best_dir=output_dir / "best" if (output_dir / "best").is_dir() else None,
        last_checkpoint_step=state.global_step if resume_dir is not None else -1, lock=lock,
    )
    if accelerator.is_main_process:
        (output_dir / "training_args.json").write_text(json.dumps(
            {"model": dataclasses.asdict(model_args), "data": dataclasses.asdict(data_args),
             "training": dataclasses.asdict(args)}, indent=2, default=str) + "\n", encoding="utf-8")
        run.pusher = _make_pusher(args, output_dir)
    if args.trackers():
        accelerator.init_trackers(args.project_name, config=_flat_hparams(model_args, data_args, args))
    logger.info(
        "Training %s on %d examples (%d classes), %d process(es) x %d images x %d accumulation = %d per step; "
        "%d steps per epoch, %d steps.", type(run.unwrapped()).__name__, len(data.train), data.num_labels,
        accelerator.num_processes, args.per_device_train_batch_size, args.gradient_accumulation_steps,
        run.hyperparameters["total_train_batch_size"], steps_per_epoch, max_steps,
    )
    return run


def _resumed_state(saved: TrainerState, current: TrainerState) -> TrainerState:
    """The checkpoint's counters, adapted to the current run's settings (with a warning when they differ)."""
    names = ("num_processes", "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "max_steps")
    changed = [n for n in names if getattr(saved, n) != getattr(current, n)]
    if changed:  # (accepted by _check_resume_settings with --allow_changed_settings)
        # Skip the same number of examples of the epoch, rounded down to whole optimiser steps of the new setting.
        consumed = saved.batches_in_epoch * saved.per_device_train_batch_size * saved.num_processes
        per_step = current.per_device_train_batch_size * current.num_processes * current.gradient_accumulation_steps
        saved.batches_in_epoch = consumed // per_step * current.gradient_accumulation_steps
    for name in (*names, "run_id", "settings"):
        setattr(saved, name, getattr(current, name))
    return saved


# Arguments that do not change the trained weights (where things go, how often to save or log, speed-only options).
_NOT_RESULT_SETTINGS = {
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "allow_changed_settings", "checkpointing_steps",
    "checkpoints_total_limit", "eval_steps", "eval_on_start", "save_best_model", "logging_steps", "report_to",
    "project_name", "dataloader_pin_memory", "disable_tqdm", "push_to_hub", "hub_model_id", "hub_strategy",
    "hub_private_repo", "hub_revision", "per_device_eval_batch_size", "use_cpu", "channels_last",
    "num_train_epochs", "max_steps",  # compared as the resolved max_steps
    "num_workers", "dataset_cache_dir", "cache_dir", "revision", "ignore_mismatched_sizes", "eval_size",
    "max_eval_samples",
}
_NOT_CONFIG_SETTINGS = {"transformers_version", "_name_or_path", "architectures", "auto_map", "torch_dtype", "dtype",
                        "label2id"}


def result_settings(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments, accelerator: Any,
                    max_steps: int, config: Any) -> dict[str, Any]:
    """Every setting that changes the trained weights, flat and JSON-ready: training and data arguments, the
    process count, mixed precision, the resolved number of steps and the model config (as ``config.<name>``)."""
    values: dict[str, Any] = {}
    for arguments in (model_args, data_args, args):
        values.update({k: v for k, v in dataclasses.asdict(arguments).items() if k not in _NOT_RESULT_SETTINGS})
    values.update(max_steps=max_steps, num_processes=accelerator.num_processes,
                  mixed_precision=str(accelerator.mixed_precision))
    values.update({f"config.{k}": v for k, v in config.to_dict().items() if k not in _NOT_CONFIG_SETTINGS})
    return json.loads(json.dumps(values, sort_keys=True, default=str))  # as read back from trainer_state.json


# Settings whose saved state cannot be carried over to another value (the checkpoint's tensors would not fit).
_UNCHANGEABLE_SETTINGS = {"optimizer": "the optimiser state of one optimiser cannot continue another"}


def _check_resume_settings(saved: TrainerState, current: TrainerState, args: TrainingArguments,
                           checkpoint: Path) -> dict[str, tuple[Any, Any]]:
    """{name: (checkpoint's value, this run's value)} of the settings that differ; an error unless
    ``--allow_changed_settings``."""
    if saved.settings:
        old, new = saved.settings, current.settings
    else:  # a checkpoint written before settings were recorded: the counters it has
        names = ("num_processes", "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "max_steps")
        old, new = ({n: getattr(state, n) for n in names} for state in (saved, current))
    changed = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
    if not changed:
        return {}
    listing = "\n".join(f"  {k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
    blocked = [f"{k} ({why})" for k, why in _UNCHANGEABLE_SETTINGS.items() if k in changed]
    if blocked:
        raise ValueError(f"Cannot resume {checkpoint} with these settings changed:\n{listing}\n{'; '.join(blocked)}. "
                         "Resume with the checkpoint's value, or start a new run.")
    if not args.allow_changed_settings:
        raise ValueError(
            f"Resuming {checkpoint} with settings that differ from the ones it was trained with (checkpoint -> "
            f"now):\n{listing}\nThe result would match neither run. Resume with the checkpoint's settings, or pass "
            "--allow_changed_settings to continue with the new values (they are then recorded as used from step "
            f"{saved.global_step})."
        )
    logger.warning("Resuming %s with changed settings (--allow_changed_settings); from step %d on the run uses:\n%s",
                   checkpoint, saved.global_step, listing)
    return changed


def _apply_changed_hyperparameters(optimizer: Any, scheduler: Any, args: TrainingArguments) -> None:
    """After ``load_state`` restored the checkpoint's optimiser and schedule: use this run's hyperparameters, so
    that what is recorded is what is used."""
    inner = getattr(scheduler, "scheduler", scheduler)  # Accelerate's AcceleratedScheduler wraps the LambdaLR
    inner.base_lrs = [args.learning_rate for _ in inner.base_lrs]
    values: dict[str, Any] = {"weight_decay": args.weight_decay, "initial_lr": args.learning_rate}
    if args.optimizer == "sgd":
        values["momentum"] = args.momentum
    else:
        values.update(betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    step = inner.last_epoch
    for group, lr_lambda in zip(optimizer.param_groups, inner.lr_lambdas):
        group.update(values)
        group["lr"] = args.learning_rate * lr_lambda(step)
    inner._last_lr = [group["lr"] for group in optimizer.param_groups]


def _load_checkpoint(accelerator: Any, checkpoint: Path, run_id: Optional[str]) -> None:
    """``accelerator.load_state`` with clear errors: a damaged file is named (and the previous checkpoint offered);
    weights of another architecture get one short message instead of a page of size mismatches."""
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as err:  # noqa: BLE001 - re-raised below, explained
        damaged = _damaged_files(checkpoint)
        if damaged:
            earlier = [p for p in list_checkpoints(checkpoint.parent, run_id)
                       if _step_of(p) is not None and _step_of(p) < (_step_of(checkpoint) or 0)]
            offer = (f"Resume from the previous checkpoint instead: --resume_from_checkpoint {earlier[-1]}"
                     if earlier else "There is no earlier checkpoint of this run to fall back to.")
            raise RuntimeError(
                f"Checkpoint {checkpoint} is damaged: {checkpoint / damaged[0][0]} cannot be read ({damaged[0][1]}). "
                f"{offer}"
            ) from None
        mismatches = re.findall(r"size mismatch for ([\w.]+): copying a param with shape (torch\.Size\(\[[^\]]*\]\)) "
                                r"from checkpoint, the shape in current model is (torch\.Size\(\[[^\]]*\]\))", str(err))
        missing = "Missing key(s)" in str(err) or "Unexpected key(s)" in str(err)
        if mismatches or missing:
            example = (f" ({len(mismatches)} tensors differ in shape, e.g. {mismatches[0][0]}: {mismatches[0][1]} in the "
                       f"checkpoint, {mismatches[0][2]} in this model)" if mismatches else
                       " (its parameter names differ from this model's)")
            raise ValueError(
                f"Checkpoint {checkpoint} holds a model of another architecture than this run builds{example}. Resume "
                "with the model settings it was trained with (--preset, --config_overrides, --model_name_or_path), or "
                "start a new run."
            ) from None
        raise


def _step_of(checkpoint: Path) -> Optional[int]:
    match = _CHECKPOINT_RE.match(checkpoint.name)
    return int(match.group(1)) if match else None


def _damaged_files(checkpoint: Path) -> list[tuple[str, str]]:
    """(file name, reason) of the checkpoint's files that cannot be read."""
    from safetensors.torch import load_file

    damaged = []
    for path in sorted(p for p in checkpoint.iterdir() if p.is_file()):
        try:
            if path.suffix == ".safetensors":
                load_file(str(path))
            elif path.suffix in (".bin", ".pt", ".pth", ".pkl"):  # torch.save files (the RNG states too)
                torch.load(path, map_location="cpu", weights_only=False)
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
        except Exception as err:  # noqa: BLE001 - any failure to read means damaged
            damaged.append((path.name, f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"))
    return damaged


class _LossWindow:
    """Sums of the loss terms since the last log, kept on the device so that training never waits for the host."""

    def __init__(self) -> None:
        self.sums: Optional[torch.Tensor] = None
        self.batches = 0
        self.start = time.perf_counter()

    def add(self, outputs: Any) -> None:
        terms = torch.stack([t.detach().float() for t in (outputs.loss, outputs.main_loss, *(outputs.auxiliary_losses or ()))])
        self.sums = terms if self.sums is None else self.sums + terms
        self.batches += 1

    def flush(self, accelerator: Any) -> tuple[list[float], int, float]:
        """(mean of each term over all processes, micro-batches, seconds) since the last flush; then reset."""
        means = (accelerator.reduce(self.sums, reduction="mean") / self.batches).tolist()  # the one host sync
        result = (means, self.batches, time.perf_counter() - self.start)
        self.sums, self.batches, self.start = None, 0, time.perf_counter()
        return result


def _log_window(run: _Run, window: _LossWindow, step_lr: float, progress: Any) -> None:
    means, batches, seconds = window.flush(run.accelerator)
    state, args = run.state, run.args
    images_per_second = batches * args.per_device_train_batch_size * run.accelerator.num_processes / max(seconds, 1e-9)
    log = {"train/loss": means[0], "train/main_loss": means[1], "train/learning_rate": step_lr,
           "train/images_per_second": images_per_second, "train/epoch": state.epoch}
    log.update({f"train/aux{index + 1}_loss": value for index, value in enumerate(means[2:])})
    run.accelerator.log(log, step=state.global_step)
    state.log_history.append({"step": state.global_step, **{k.split("/")[1]: v for k, v in log.items()}})
    run.last_loss = means[0]
    progress.set_postfix(loss=f"{means[0]:.4f}", lr=f"{step_lr:.2e}", img_s=f"{images_per_second:.1f}")
    if progress.disable:  # no bar (e.g. output to a log file): one line per window instead
        logger.info("step %d/%d: loss %.4f (main %.4f), lr %.3e, %.1f images/s", state.global_step, run.max_steps,
                    means[0], means[1], step_lr, images_per_second)


def _evaluate_and_keep_best(run: _Run, keep_best: bool = True) -> None:
    """Evaluate on every process; log; save ``best/`` when the mIoU improved (and ``keep_best``)."""
    from .evaluation import evaluate

    accelerator, state, data = run.accelerator, run.state, run.data
    _broadcast_buffers(accelerator, run.model)
    result = evaluate(
        run.unwrapped(), data.eval, accelerator=accelerator, batch_size=run.args.per_device_eval_batch_size,
        num_workers=run.data_args.num_workers, channels_last=run.args.channels_last, id2label=data.id2label,
        ignore_index=data.ignore_index, show_progress=not run.args.disable_tqdm,
    )
    run.metrics, run.confusion, run.last_eval_step = result.metrics, result.confusion_matrix, state.global_step
    metrics = result.metrics
    log = {"eval/mean_iou": metrics["mean_iou"], "eval/pixel_accuracy": metrics["pixel_accuracy"],
           "eval/mean_class_accuracy": metrics["mean_class_accuracy"]}
    accelerator.log(log, step=state.global_step)
    state.log_history.append({"step": state.global_step, **{k.split("/")[1]: v for k, v in log.items()}})
    logger.info("step %d: eval mIoU %.4f, pixel accuracy %.4f, mean class accuracy %.4f", state.global_step,
                metrics["mean_iou"], metrics["pixel_accuracy"], metrics["mean_class_accuracy"])
    if keep_best and not math.isnan(metrics["mean_iou"]) and (
        state.best_metric is None or metrics["mean_iou"] > state.best_metric
    ):
        state.best_metric, state.best_step = metrics["mean_iou"], state.global_step
        if run.args.save_best_model and accelerator.is_main_process:
            run.best_dir = save_model_folder(
                run.unwrapped(), run.image_processor, run.output_dir / "best",
                {"eval_results.json": _eval_results_file(metrics, data.id2label, state.global_step, run.dataset_info),
                 "training_hyperparameters.json": run.hyperparameters},
            )
    accelerator.wait_for_everyone()
    run.model.train()


def _checkpoint(run: _Run) -> None:
    """Save the full training state; with a Hub strategy other than ``end``, push a model snapshot too."""
    _broadcast_buffers(run.accelerator, run.model)
    path = save_checkpoint(run.accelerator, run.output_dir, run.state, run.args.checkpoints_total_limit)
    run.last_checkpoint_step = run.state.global_step
    if run.pusher is not None and run.args.hub_strategy != "end":
        # A checkpoint holds Accelerate's state, not a from_pretrained folder: push a model snapshot beside it.
        snapshot = save_model_folder(run.unwrapped(), run.image_processor, run.output_dir / "last-model",
                                     {"training_hyperparameters.json": run.hyperparameters})
        run.pusher.on_save(snapshot, checkpoint_dir=path, step=run.state.global_step)


def _finish(run: _Run) -> Path:
    """Evaluate the last weights (unless just done), save ``final/`` and the results, a last checkpoint, push."""
    accelerator, state, output_dir = run.accelerator, run.state, run.output_dir
    _broadcast_buffers(accelerator, run.model)
    if run.data.eval is not None and run.last_eval_step != state.global_step:
        _evaluate_and_keep_best(run)
    final_dir = output_dir / "final"
    if accelerator.is_main_process:
        extra: dict[str, Any] = {
            "training_hyperparameters.json": run.hyperparameters,
            "train_results.json": {"global_step": state.global_step, "train_loss": run.last_loss, "epoch": state.epoch},
        }
        if run.metrics:
            extra["eval_results.json"] = _eval_results_file(run.metrics, run.data.id2label, state.global_step,
                                                            run.dataset_info)
        save_model_folder(run.unwrapped(), run.image_processor, final_dir, extra)
        all_results = {"train_loss": run.last_loss, "global_step": state.global_step,
                       **{f"eval_{k}": v for k, v in (extra.get("eval_results.json") or {}).items()}}
        (output_dir / "all_results.json").write_text(json.dumps(all_results, indent=2) + "\n", encoding="utf-8")
        state.save(output_dir)
    if run.args.checkpointing_steps is not None and run.last_checkpoint_step != state.global_step:
        save_checkpoint(accelerator, output_dir, state, run.args.checkpoints_total_limit)
    accelerator.wait_for_everyone()
    if run.pusher is not None:
        run.pusher.on_train_end(final_dir)
        url = run.pusher.wait()  # retries a failed final push once
        if url is None:
            last = run.pusher.last_result
            raise HubPushError(final_dir, _push_command(run.args, final_dir, output_dir),
                               last.error if last is not None else "no push result (timed out?)")
        logger.info("Pushed %s to the Hub: %s", final_dir, url)
    return final_dir


class HubPushError(RuntimeError):
    """Training finished and saved its model, but the final Hub push failed (after the pusher's retry)."""

    def __init__(self, final_dir: Path, retry_command: str, error: Any) -> None:
        self.final_dir, self.retry_command = final_dir, retry_command
        super().__init__(
            f"The final push to the Hub failed: {error}. The trained model is saved in {final_dir}; push just it "
            f"with:\n    {retry_command}"
        )


def _push_command(args: TrainingArguments, final_dir: Path, output_dir: Path) -> str:
    import shlex

    repo_id = args.hub_model_id or output_dir.resolve().name
    script = Path(__file__).resolve().parents[1] / "scripts" / "push_to_hub.py"  # in a source checkout
    relative = os.path.relpath(script) if script.is_file() else "scripts/push_to_hub.py"
    words = ["python", relative if not relative.startswith("..") else str(script), str(final_dir), repo_id]
    if args.hub_revision:
        words += ["--branch", args.hub_revision]
    if args.hub_private_repo:
        words.append("--private")
    words += ["--commit-message", "End of training"]
    return " ".join(shlex.quote(w) for w in words)


def _broadcast_buffers(accelerator: Any, model: torch.nn.Module) -> None:
    """Give every process the main process's BatchNorm statistics.

    Without SyncBatchNorm each process updates its running statistics from its own images; DDP copies the main
    process's buffers to the others at the start of every forward, so the main process's model is the one being
    trained. Doing the same before evaluating and saving makes every process evaluate (and end with) that very model;
    it does not change training, whose next forward would copy them anyway.
    """
    if accelerator.num_processes > 1 and torch.distributed.is_initialized():
        for buffer in accelerator.unwrap_model(model).buffers():
            torch.distributed.broadcast(buffer, src=0)


def _make_pusher(args: TrainingArguments, output_dir: Path) -> Any:
    if not args.push_to_hub:
        return None
    from .hub import BackgroundPusher

    repo_id = args.hub_model_id or output_dir.resolve().name
    return BackgroundPusher(repo_id, private=bool(args.hub_private_repo), revision=args.hub_revision,
                            strategy=args.hub_strategy)


def _setup_logging(accelerator: Any) -> None:
    level = logging.INFO if accelerator.is_main_process else logging.WARNING
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level)
    logger.setLevel(level)
    try:
        import datasets
        import transformers

        if not accelerator.is_main_process:
            datasets.utils.logging.set_verbosity_error()
            transformers.utils.logging.set_verbosity_error()
    except ImportError:
        pass


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> TrainOutput:
    """``scripts/train.py``: parse arguments (and ``--config``), train, then reload the saved final model with
    ``from_pretrained`` and evaluate it again (main process), proving the folder is self-contained."""
    model_args, data_args, training_args = parse_args(argv)
    try:
        output, lock = _train(model_args, data_args, training_args)
    except HubPushError as err:
        logger.error("%s", err)
        raise SystemExit(f"error: {err}") from None
    try:  # the lock is held until the saved model has been reloaded and scored: no other run may replace it
        _reload_and_report(output, data_args, training_args)
    finally:
        if lock is not None:
            lock.release()
    return output


def _reload_and_report(output: TrainOutput, data_args: DataArguments, training_args: TrainingArguments) -> None:
    from .evaluation import evaluate

    if output.final_dir is None or output.eval_dataset is None or not _is_main_process():
        return
    device = next(output.model.parameters()).device
    reloaded = DSNetForSemanticSegmentation.from_pretrained(output.final_dir).to(device)
    if training_args.channels_last:
        reloaded = reloaded.to(memory_format=torch.channels_last)
    result = evaluate(reloaded, output.eval_dataset, batch_size=training_args.per_device_eval_batch_size,
                      num_workers=data_args.num_workers, channels_last=training_args.channels_last,
                      show_progress=False)
    name = Path(training_args.output_dir).name
    print(f"{name} mIoU: {result.metrics['mean_iou']:.4f} (reloaded from {output.final_dir}; "
          f"{result.num_images} validation images, step {output.global_step})", flush=True)


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process
