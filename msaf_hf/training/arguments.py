"""The arguments of a training run: ``ModelArguments`` (which model) and ``TrainingArguments`` (optimisation,
checkpoints, logging; ours, not transformers'). The data's are ``msaf_hf.data.DataArguments``."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..configuration_dsnet import CITYSCAPES_CLASS_WEIGHTS, DSNetConfig
from ..data import DataArguments
from ..presets import list_presets
from ..recipes import check_field_types, parse_command_line

_OPTIMIZERS = ("sgd", "adamw")
_SCHEDULERS = ("poly", "cosine", "constant")
_TRACKERS = ("tensorboard", "trackio", "wandb", "all", "none")
_HUB_STRATEGIES = ("end", "every_save", "checkpoint", "all_checkpoints")
_SYNC_BN = ("auto", "true", "false")


@dataclass
class ModelArguments:
    """Which model to train: a preset built from scratch, or any ``from_pretrained`` source."""

    model_name_or_path: str | None = field(
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
    config_overrides: str | None = field(
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
    cache_dir: str | None = field(default=None, metadata={"help": "Where to cache models downloaded from the Hub."})

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
    class_weights: str | None = field(
        default=None,
        metadata={
            "help": "Per-class loss weights: 'auto' computes them from the training labels (median-frequency "
            "balancing, clipped to [0.1, 10]; see msaf_hf.data.class_weights), or a JSON file with a list of one "
            "weight per class. Recorded in the model's config.json and the model card."
        },
    )
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
    max_grad_norm: float | None = field(
        default=None, metadata={"help": "Clip the gradient norm to this value (default: no clipping, as published)."}
    )
    mixed_precision: str | None = field(
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
    checkpointing_steps: str | None = field(
        default=None,
        metadata={"help": "Save the full training state every N optimiser steps, or 'epoch' (default: never)."},
    )
    checkpoints_total_limit: int | None = field(
        default=3, metadata={"help": "Keep only the last K checkpoints (None: keep all)."}
    )
    resume_from_checkpoint: str | None = field(
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
    eval_steps: str | None = field(
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
    hub_model_id: str | None = field(
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
    hub_private_repo: bool | None = field(
        default=None, metadata={"help": "Create the Hub repository as private (an existing repo keeps its visibility)."}
    )
    hub_revision: str | None = field(default=None, metadata={"help": "Hub branch to push to."})

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "logging_steps", "num_train_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainingArguments.{name} must be a positive integer, got {value!r}.")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(
                f"TrainingArguments.max_steps must be > 0 (or -1 to use num_train_epochs), got {self.max_steps}."
            )
        for name, choices in (("optimizer", _OPTIMIZERS), ("lr_scheduler_type", _SCHEDULERS),
                              ("hub_strategy", _HUB_STRATEGIES), ("sync_batchnorm", _SYNC_BN)):
            value = str(getattr(self, name)).lower()
            if value not in choices:
                raise ValueError(
                    f"TrainingArguments.{name} must be one of {list(choices)}, got {getattr(self, name)!r}."
                )
            setattr(self, name, value)
        if self.mixed_precision is not None and self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(
                f"TrainingArguments.mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}."
            )
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
            raise ValueError(
                f"TrainingArguments.report_to: unknown tracker(s) {unknown}; choose from {list(_TRACKERS)}."
            )

    def trackers(self) -> list[str]:
        """``report_to`` as a list ([] for none)."""
        names = [t.strip().lower() for t in str(self.report_to or "none").split(",") if t.strip()]
        return [] if names in ([], ["none"]) else names

    def interval(self, name: str) -> int | str | None:
        """``checkpointing_steps`` / ``eval_steps`` as an int, ``"epoch"`` or None."""
        value = getattr(self, name)
        return None if value is None else ("epoch" if value == "epoch" else int(value))


def _normalise_interval(value: Any, name: str) -> str | None:
    if value is None or str(value).strip().lower() in ("", "none", "no"):
        return None
    text = str(value).strip().lower()
    if text == "epoch":
        return text
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"TrainingArguments.{name} must be a positive number of steps or 'epoch', got {value!r}.")
    return str(int(text))


# --------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> tuple[ModelArguments, DataArguments, TrainingArguments]:
    """Parse the training command line (``--config recipe.yaml`` supplying defaults; see
    :func:`msaf_hf.recipes.parse_command_line`)."""
    return parse_command_line(argv, (ModelArguments, DataArguments, TrainingArguments))
