"""The ``Accelerator`` of a run, its trackers and logging, and the buffers processes share."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

from ..evaluation.evaluator import accelerator_available
from .arguments import DSNetTrainingArguments

logger = logging.getLogger(__name__)


def create_accelerator(args: DSNetTrainingArguments) -> Any:
    """The ``Accelerator`` for these arguments (CPU when no GPU is present, so that ``accelerate launch`` with
    several processes trains on CPU through gloo)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

    trackers = args.trackers()
    check_trackers_installed(trackers)
    return Accelerator(
        cpu=args.use_cpu or not accelerator_available(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        # The schedule counts optimiser steps: stepped by hand once per optimiser step, never per process.
        step_scheduler_with_optimizer=False,
        log_with=(trackers if trackers != ["all"] else "all") or None,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "runs")
        ),
        # Training batches are even by construction (EpochShuffleSampler); evaluation shards by itself, unpadded.
        dataloader_config=DataLoaderConfiguration(even_batches=True),
    )


def check_trackers_installed(trackers: Sequence[str]) -> None:
    """Raise ``ImportError`` naming the package to install for each ``--report_to`` tracker that is missing."""
    from accelerate.utils import is_tensorboard_available, is_trackio_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "trackio": is_trackio_available}
    for name in trackers:
        if name in available and not available[name]():
            raise ImportError(
                f"--report_to {name} needs the {name} package: pip install {name} (or --report_to none)."
            )


def broadcast_buffers(accelerator: Any, model: torch.nn.Module) -> None:
    """Give every process the main process's BatchNorm statistics.

    Without SyncBatchNorm each process updates its running statistics from its own images; DDP copies the main
    process's buffers to the others at the start of every forward, so the main process's model is the one being
    trained. Doing the same before evaluating and saving makes every process evaluate (and end with) that very model;
    it does not change training, whose next forward would copy them anyway.
    """
    if accelerator.num_processes > 1 and torch.distributed.is_initialized():
        for buffer in accelerator.unwrap_model(model).buffers():
            torch.distributed.broadcast(buffer, src=0)


def setup_logging(accelerator: Any) -> None:
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
