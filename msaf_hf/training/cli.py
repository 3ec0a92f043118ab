"""``msaf-hf train``: parse the arguments, train, then reload the saved model and score it again."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from ..data import DataArguments
from ..evaluation.evaluator import evaluate
from ..modeling_dsnet import DSNetForSemanticSegmentation
from .arguments import DSNetTrainingArguments, parse_args
from .pushing import HubPushError
from .trainer import DSNetTrainer, TrainOutput

logger = logging.getLogger(__name__)

__all__ = ["main", "reload_and_report"]


def main(argv: Sequence[str] | None = None) -> TrainOutput:
    """``msaf-hf train``: parse arguments (and ``--config``), train, then reload the saved final model with
    ``from_pretrained`` and evaluate it again (main process), proving the folder is self-contained."""
    model_args, data_args, training_args = parse_args(argv)
    trainer = DSNetTrainer(model_args, data_args, training_args)
    try:
        try:
            output = trainer.train()
        except HubPushError as err:
            logger.error("%s", err)
            raise SystemExit(f"error: {err}") from None
        # The lock is held until the saved model has been reloaded and scored: no other run may replace it.
        reload_and_report(output, data_args, training_args)
    finally:
        trainer.release()
    return output


def reload_and_report(output: TrainOutput, data_args: DataArguments, training_args: DSNetTrainingArguments) -> None:
    """Reload ``final/`` with ``from_pretrained``, evaluate it on the evaluation set and print its mIoU (main
    process only)."""
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
