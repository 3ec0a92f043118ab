"""What a run tells the model card and the trackers about itself: its hyperparameters, flat."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from ..data import DataArguments
from .arguments import ModelArguments, TrainingArguments


def flat_hparams(*argument_objects: Any) -> dict[str, Any]:
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


def card_hyperparameters(model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments,
                          accelerator: Any, max_steps: int, changed_on_resume: dict[str, tuple] | None = None,
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
    if args.class_weights:  # the weights themselves are in config.json
        values["class_weights"] = (
            "auto: median-frequency balancing of the training labels (clipped to [0.1, 10])"
            if str(args.class_weights).strip().lower() == "auto" else f"from {args.class_weights}")
    overrides = model_args.parsed_config_overrides()
    if overrides:
        values["config_overrides"] = json.dumps(overrides)
    if changed_on_resume:  # --allow_changed_settings: the values above apply from the resume step on
        values["changed_on_resume"] = f"at step {resume_step}: " + ", ".join(
            f"{k} {a} -> {b}" for k, (a, b) in changed_on_resume.items())
    return {k: v for k, v in values.items() if v is not None}
