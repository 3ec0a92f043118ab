"""Fine-tuning and training DSNet with Accelerate.

The command line (``msaf-hf train``) is a thin wrapper around :func:`main`::

    msaf-hf train --config quickstart
    accelerate launch --config_file "$(msaf-hf config-path cpu_2proc)" -m msaf_hf train --config ...

Arguments are three dataclasses parsed by transformers' ``HfArgumentParser``: :class:`ModelArguments`
(which model), :class:`msaf_hf.data.DataArguments` (which data, augmentation) and
:class:`DSNetTrainingArguments` (optimisation, checkpoints, logging; ours, not transformers'). A recipe file
(``--config x.yaml``, flat ``name: value`` pairs) sets any of them; flags given on the command line win.

Modules: :mod:`.arguments` (the argument dataclasses), :mod:`.models` (the model to train), :mod:`.optim`
(optimiser, schedule), :mod:`.sampler` (data order), :mod:`.checkpointing` (``TrainerState``, checkpoint I/O),
:mod:`.run_folder` (the output folder's life: lock, run ids, reuse rules, which checkpoint to resume), :mod:`.resume`
(checked resume settings),
:mod:`.accelerator` (Accelerator, trackers), :mod:`.card_data` (hyperparameters for the card), :mod:`.pushing`
(Hub pushes), :mod:`.streaming_state` (``--streaming``: the stream's loader, its positions in checkpoints),
:mod:`.trainer` (the loop: :class:`~msaf_hf.training.trainer.DSNetTrainer`) and :mod:`.cli` (:func:`main`).
Names are imported on first use.

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
* **One run per output folder** (:mod:`msaf_hf.training.run_folder`). The main process locks ``output_dir`` for the
  whole run (a second run stops at once, naming the holder; a killed run's lock is taken over); the run's id is in
  ``run.json`` and in every checkpoint, so another run's checkpoints are never rotated, replaced or resumed. Earlier
  results are reused only with ``--resume_from_checkpoint`` or deleted first with ``--overwrite_output_dir``.
* **Checked resume.** Every setting that changes the result is saved with each checkpoint; resuming with another
  value is an error unless ``--allow_changed_settings`` (the new values are then used and recorded).
* **Exact distributed evaluation.** See :mod:`msaf_hf.evaluation.evaluator`: every evaluation image is scored
  once, whatever the number of processes.
* **Model folders.** ``output_dir/best`` (highest validation mIoU) and ``output_dir/final`` (the last
  weights) are ``save_pretrained`` folders (safetensors, ``config.json`` with the dataset's
  ``id2label``, ``preprocessor_config.json``, ``eval_results.json``, ``training_hyperparameters.json``)
  ready for ``from_pretrained`` and the Hub.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelArguments": ".arguments",
    "DSNetTrainingArguments": ".arguments",
    "parse_args": ".arguments",
    "build_model": ".models",
    "build_image_processor": ".models",
    "create_optimizer": ".optim",
    "create_scheduler": ".optim",
    "lr_factor": ".optim",
    "EpochShuffleSampler": ".sampler",
    "CHECKPOINT_PREFIX": ".run_folder",
    "TrainerState": ".checkpointing",
    "find_latest_checkpoint": ".run_folder",
    "list_checkpoints": ".run_folder",
    "save_checkpoint": ".checkpointing",
    "save_model_folder": ".checkpointing",
    "create_accelerator": ".accelerator",
    "HubPushError": ".pushing",
    "TrainOutput": ".trainer",
    "DSNetTrainer": ".trainer",
    "train": ".trainer",
    "main": ".cli",
    "load_recipe": "..recipes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
