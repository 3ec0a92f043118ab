"""Optimiser and learning-rate schedule (the published recipe: SGD, poly decay per step)."""

from __future__ import annotations

import math

import torch

from .arguments import DSNetTrainingArguments


def create_optimizer(model: torch.nn.Module, args: DSNetTrainingArguments) -> torch.optim.Optimizer:
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


def create_scheduler(
    optimizer: torch.optim.Optimizer, args: DSNetTrainingArguments, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` of :func:`lr_factor`. A closure (not a callable object), so a resumed run's
    schedule comes from its own arguments while the step count comes from the checkpoint."""

    def factor(step: int) -> float:
        return lr_factor(step, max_steps, args.lr_scheduler_type, args.poly_power, args.warmup_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
