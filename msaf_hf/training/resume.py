"""Resuming a checkpoint only with the settings it was trained with (unless ``--allow_changed_settings``): the
settings recorded, compared and carried over. Which checkpoint is resumed, and the output folder's lock and reuse
rules, are :mod:`msaf_hf.training.run_folder`."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from ..data import DataArguments
from .arguments import DSNetTrainingArguments, ModelArguments
from .checkpointing import TrainerState

logger = logging.getLogger(__name__)


def resumed_state(saved: TrainerState, current: TrainerState) -> TrainerState:
    """The checkpoint's counters, adapted to the current run's settings (with a warning when they differ)."""
    names = ("num_processes", "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "max_steps")
    changed = [n for n in names if getattr(saved, n) != getattr(current, n)]
    if changed:  # (accepted by check_resume_settings with --allow_changed_settings)
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


def result_settings(model_args: ModelArguments, data_args: DataArguments, args: DSNetTrainingArguments,
                    accelerator: Any, max_steps: int, config: Any) -> dict[str, Any]:
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


def check_resume_settings(saved: TrainerState, current: TrainerState, args: DSNetTrainingArguments,
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


def apply_changed_hyperparameters(optimizer: Any, scheduler: Any, args: DSNetTrainingArguments) -> None:
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
    for group, lr_lambda in zip(optimizer.param_groups, inner.lr_lambdas, strict=False):
        group.update(values)
        group["lr"] = args.learning_rate * lr_lambda(step)
    inner._last_lr = [group["lr"] for group in optimizer.param_groups]
