"""The training loop: :class:`Trainer` (one run) and :func:`train`.

``Trainer(model_args, data_args, args)`` claims the output folder and builds everything the run needs, prepared by
Accelerate and resumed from a checkpoint if asked; :meth:`Trainer.train` runs the loop, evaluates, checkpoints,
saves ``final/`` (and ``best/``) and pushes. See :mod:`msaf_hf.training` for what is guaranteed.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..data import DataArguments, SegmentationData, collate_fn, load_segmentation_data
from ..evaluation import evaluator
from ..evaluation.results import (
    ALL_RESULTS_FILE,
    EVAL_RESULTS_FILE,
    HYPERPARAMETERS_FILE,
    TRAIN_RESULTS_FILE,
    all_results,
    dataset_description,
    eval_results,
    write_results_file,
)
from .accelerator import broadcast_buffers, create_accelerator, setup_logging
from .arguments import ModelArguments, TrainingArguments
from .card_data import card_hyperparameters, flat_hparams
from .checkpointing import TrainerState, load_checkpoint, save_checkpoint, save_model_folder
from .models import build_image_processor, build_model, model_color_table, resolve_class_weights
from .optim import create_optimizer, create_scheduler
from .pushing import HubPushError, make_pusher, push_command
from .resume import (
    apply_changed_hyperparameters,
    check_resume_settings,
    claim_output_dir,
    result_settings,
    resumed_state,
)
from .sampler import EpochShuffleSampler
from .streaming_state import is_streaming, streaming_loader

logger = logging.getLogger(__name__)

__all__ = ["StepCallback", "TrainOutput", "Trainer", "plan_steps", "train"]

StepCallback = Callable[[TrainerState], bool | None]


@dataclass
class TrainOutput:
    """What :func:`train` returns (on every process)."""

    global_step: int
    metrics: dict[str, Any]  # the last evaluation (empty without evaluation data)
    model: torch.nn.Module  # the trained model, unwrapped
    confusion_matrix: torch.Tensor | None  # of the last evaluation, summed over processes
    final_dir: Path | None
    best_dir: Path | None
    best_metric: float | None
    train_loss: float | None  # mean loss of the last logging window
    stopped_early: bool = False
    eval_dataset: torch.utils.data.Dataset | None = None


def train(
    model_args: ModelArguments,
    data_args: DataArguments,
    args: TrainingArguments,
    callbacks: Iterable[StepCallback] = (),
) -> TrainOutput:
    """Train (or fine-tune) DSNet; see :mod:`msaf_hf.training` for what is guaranteed.

    ``callbacks`` are called on every process after each optimiser step (after any evaluation and checkpoint of
    that step) with the :class:`TrainerState`; returning True stops training early (the final model is still
    evaluated and saved). Exceptions they raise propagate (e.g. to simulate a crash in tests).
    """
    trainer = Trainer(model_args, data_args, args)
    try:
        return trainer.train(callbacks)
    finally:
        trainer.release()


def plan_steps(num_examples: int, args: TrainingArguments, num_processes: int) -> tuple[int, int, int, int]:
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


class Trainer:
    """One training run. The output folder stays locked (main process) from construction until :meth:`release`.

    Attributes after construction: ``accelerator``, ``data`` (``SegmentationData``), ``model`` (prepared: DDP-wrapped
    when distributed), ``image_processor``, ``optimizer``, ``scheduler``, ``train_loader``, ``state``
    (:class:`TrainerState`, resumed if asked), ``steps_per_epoch``, ``max_steps``, ``output_dir``. After evaluations:
    ``metrics`` and ``confusion`` of the last one, ``best_dir``.
    """

    def __init__(self, model_args: ModelArguments, data_args: DataArguments, args: TrainingArguments) -> None:
        self.model_args, self.data_args, self.args = model_args, data_args, args
        self.accelerator = create_accelerator(args)
        setup_logging(self.accelerator)
        self.output_dir = Path(args.output_dir)
        self.lock, resume_dir, run_id = claim_output_dir(args, self.accelerator)
        self.pusher: Any = None
        self.metrics: dict[str, Any] = {}
        self.confusion: torch.Tensor | None = None
        self.last_eval_step = self.last_checkpoint_step = -1
        self.last_loss: float | None = None
        try:
            self._set_up(resume_dir, run_id)
        except BaseException:
            self.release()
            raise

    # ---- set-up
    def _set_up(self, resume_dir: Path | None, run_id: str) -> None:
        """Data, model, optimiser, schedule and loader, prepared; the state resumed if asked."""
        from accelerate.utils import set_seed

        accelerator, args = self.accelerator, self.args
        set_seed(args.seed)  # model initialisation; data order and augmentation have their own keyed generators
        # The processor saved with the checkpoints: evaluation runs it, and the augmentation takes its mean and std.
        self.image_processor = build_image_processor(self.data_args, self.data_args.ignore_index)
        with accelerator.main_process_first():  # the main process fills the datasets cache first
            self.data: SegmentationData = load_segmentation_data(
                self.data_args, seed=args.seed, image_processor=self.image_processor,
                color_table=model_color_table(self.model_args, self.data_args),
            )
        model = self._build_model()
        optimizer = create_optimizer(model, args)
        self.steps_per_epoch, used_per_epoch, self.max_steps, _ = plan_steps(
            len(self.data.train), args, accelerator.num_processes
        )
        scheduler = create_scheduler(optimizer, args, self.max_steps)
        if is_streaming(self.data.train):  # each process reads its own share: not re-split by prepare
            self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
            self.train_loader = streaming_loader(self.data.train, accelerator, args.per_device_train_batch_size,
                                                 self.batches_per_epoch, self.data_args.num_workers)
        else:
            self.model, self.optimizer, self.train_loader, self.scheduler = accelerator.prepare(
                model, optimizer, self._train_loader(used_per_epoch), scheduler
            )
        self.state = TrainerState(
            num_processes=accelerator.num_processes, per_device_train_batch_size=args.per_device_train_batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps, seed=args.seed, max_steps=self.max_steps,
            run_id=run_id, settings=result_settings(self.model_args, self.data_args, args, accelerator, self.max_steps,
                                                    self.unwrapped().config),
        )
        changed = self._resume(resume_dir, run_id) if resume_dir is not None else {}
        self.last_checkpoint_step = self.state.global_step if resume_dir is not None else -1
        self.hyperparameters = card_hyperparameters(self.model_args, self.data_args, args, accelerator,
                                                    self.max_steps, changed, self.state.global_step)
        self.dataset_info = dataset_description(self.data_args)
        self.best_dir = self.output_dir / "best" if (self.output_dir / "best").is_dir() else None
        if accelerator.is_main_process:
            (self.output_dir / "training_args.json").write_text(json.dumps(
                {"model": dataclasses.asdict(self.model_args), "data": dataclasses.asdict(self.data_args),
                 "training": dataclasses.asdict(args)}, indent=2, default=str) + "\n", encoding="utf-8")
            self.pusher = make_pusher(args, self.output_dir)
        if args.trackers():
            accelerator.init_trackers(args.project_name, config=flat_hparams(self.model_args, self.data_args, args))
        logger.info(
            "Training %s on %d examples (%d classes), %d process(es) x %d images x %d accumulation = %d per step; "
            "%d steps per epoch, %d steps.", type(self.unwrapped()).__name__, len(self.data.train),
            self.data.num_labels, accelerator.num_processes, args.per_device_train_batch_size,
            args.gradient_accumulation_steps, self.hyperparameters["total_train_batch_size"], self.steps_per_epoch,
            self.max_steps,
        )

    def _build_model(self) -> torch.nn.Module:
        args = self.args
        class_weights = resolve_class_weights(args.class_weights, self.data,
                                              not args.disable_tqdm and self.accelerator.is_local_main_process)
        model = build_model(self.model_args, self.data.id2label, self.data.ignore_index, class_weights)
        use_sync_bn = args.sync_batchnorm == "true" or (
            args.sync_batchnorm == "auto" and self.accelerator.num_processes > 1
            and self.accelerator.device.type == "cuda"
        )
        if use_sync_bn:
            if self.accelerator.num_processes == 1:
                logger.warning("--sync_batchnorm true with a single process: SyncBatchNorm behaves like BatchNorm.")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif args.per_device_train_batch_size < 2:
            raise ValueError(
                "per_device_train_batch_size must be >= 2: DSNet's pooled BatchNorms need 2 images per batch (or train "
                "on several GPUs with --sync_batchnorm true, which pools the statistics across processes)."
            )
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _train_loader(self, used_per_epoch: int) -> DataLoader:
        num_workers = self.data_args.num_workers
        return DataLoader(
            self.data.train,
            batch_size=self.args.per_device_train_batch_size,
            sampler=EpochShuffleSampler(len(self.data.train), self.args.seed, used_per_epoch),
            drop_last=True,
            collate_fn=collate_fn,
            num_workers=num_workers,
            pin_memory=self.args.dataloader_pin_memory and self.accelerator.device.type != "cpu",
            persistent_workers=num_workers > 0,
            generator=torch.Generator(),  # the loader's base-seed draw must not consume the global RNG
        )

    def _resume(self, resume_dir: Path, run_id: str) -> dict[str, tuple[Any, Any]]:
        """Load the checkpoint's state (after checking its settings); returns the settings changed on resume."""
        saved = TrainerState.load(resume_dir)
        changed = check_resume_settings(saved, self.state, self.args, resume_dir)
        load_checkpoint(self.accelerator, resume_dir, run_id)
        if changed:
            apply_changed_hyperparameters(self.optimizer, self.scheduler, self.args)
        self.state = resumed_state(saved, self.state)
        logger.info("Resumed from %s at step %d (epoch %d, batch %d).", resume_dir, self.state.global_step,
                    self.state.epoch, self.state.batches_in_epoch)
        return changed

    # ---- the loop
    @property
    def batches_per_epoch(self) -> int:
        """Micro-batches per epoch on each process."""
        return self.steps_per_epoch * self.args.gradient_accumulation_steps

    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def train(self, callbacks: Iterable[StepCallback] = ()) -> TrainOutput:
        """Run the loop to ``max_steps`` (or until a callback returns True), then :meth:`finish`. The output folder
        stays locked: call :meth:`release` (on failure it is released here)."""
        from tqdm.auto import tqdm

        accelerator, args, state, model, optimizer = self.accelerator, self.args, self.state, self.model, self.optimizer
        callbacks = list(callbacks)
        window = _LossWindow()
        progress = tqdm(total=self.max_steps, initial=state.global_step, desc="training", dynamic_ncols=True,
                        disable=args.disable_tqdm or not accelerator.is_local_main_process)
        stopped_early = succeeded = False
        try:
            if args.eval_on_start and self.data.eval is not None and state.global_step == 0:
                self.evaluate(keep_best=False)
            model.train()
            while state.global_step < self.max_steps and not stopped_early:
                self.data.train.set_epoch(state.epoch)  # augmentation key (in shared memory: workers see it)
                self.train_loader.set_epoch(state.epoch)  # data order: reaches EpochShuffleSampler through Accelerate
                loader = self.train_loader
                if state.batches_in_epoch > 0 and not is_streaming(self.data.train):  # (a stream resumes itself)
                    # resumed mid-epoch: the same order, without what was consumed
                    loader = accelerator.skip_first_batches(self.train_loader, state.batches_in_epoch)
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
                    stopped_early = self._after_optimizer_step(window, progress, callbacks)
                    if stopped_early or state.global_step >= self.max_steps:
                        break
                else:
                    if state.batches_in_epoch:  # the loader ran out early (resumed with other settings): next epoch
                        state.epoch, state.batches_in_epoch = state.epoch + 1, 0
            progress.close()
            final_dir = self.finish()
            succeeded = True
        finally:
            progress.close()
            del model
            self._close(succeeded)
        return TrainOutput(
            global_step=state.global_step, metrics=self.metrics, model=self.unwrapped(),
            confusion_matrix=self.confusion, final_dir=final_dir, best_dir=self.best_dir,
            best_metric=state.best_metric, train_loss=self.last_loss, stopped_early=stopped_early,
            eval_dataset=self.data.eval,
        )

    def _after_optimizer_step(self, window: _LossWindow, progress: Any, callbacks: list[StepCallback]) -> bool:
        """Advance the schedule and the counters; log, evaluate and checkpoint when due. True: a callback stops."""
        state, args = self.state, self.args
        step_lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used (a Python float)
        self.scheduler.step()
        state.global_step += 1
        progress.update(1)
        if state.batches_in_epoch >= self.batches_per_epoch:
            state.epoch, state.batches_in_epoch = state.epoch + 1, 0  # a checkpoint now starts the next epoch
        epoch_done = state.batches_in_epoch == 0
        if state.global_step % args.logging_steps == 0 or state.global_step == self.max_steps:
            self.log(window, step_lr, progress)
        if self.data.eval is not None and _is_due(args.interval("eval_steps"), state.global_step, epoch_done):
            self.evaluate()
        if _is_due(args.interval("checkpointing_steps"), state.global_step, epoch_done):
            self.save_checkpoint()
        return any([bool(callback(state)) for callback in callbacks])

    def _close(self, succeeded: bool) -> None:
        if self.pusher is not None:
            self.pusher.close(wait=False)
        # Let go of the DDP wrapper while the process group is still registered. Otherwise its Reducer holds the
        # last reference to the group, and destroys it (waiting for the Gloo worker threads) while holding the
        # GIL, which a worker thread releasing a finished work's tensors needs: an occasional hang at exit.
        self.model = self.unwrapped()
        self.accelerator.free_memory()  # it also keeps the prepared (wrapped) model
        gc.collect()
        self.accelerator.end_training()
        if not succeeded:
            self.release()  # failed: let go at once (success: the caller releases it)

    def release(self) -> None:
        """Unlock the output folder (main process; a no-op elsewhere and when already released)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # ---- what happens at some steps
    def log(self, window: _LossWindow, step_lr: float, progress: Any) -> None:
        """Log the loss terms of the window (the loop's one host synchronisation), the learning rate and speed."""
        means, batches, seconds = window.flush(self.accelerator)
        state, args = self.state, self.args
        images = batches * args.per_device_train_batch_size * self.accelerator.num_processes
        images_per_second = images / max(seconds, 1e-9)
        log = {"train/loss": means[0], "train/main_loss": means[1], "train/learning_rate": step_lr,
               "train/images_per_second": images_per_second, "train/epoch": state.epoch}
        log.update({f"train/aux{index + 1}_loss": value for index, value in enumerate(means[2:])})
        self.accelerator.log(log, step=state.global_step)
        state.log_history.append({"step": state.global_step, **{k.split("/")[1]: v for k, v in log.items()}})
        self.last_loss = means[0]
        progress.set_postfix(loss=f"{means[0]:.4f}", lr=f"{step_lr:.2e}", img_s=f"{images_per_second:.1f}")
        if progress.disable:  # no bar (e.g. output to a log file): one line per window instead
            logger.info("step %d/%d: loss %.4f (main %.4f), lr %.3e, %.1f images/s", state.global_step, self.max_steps,
                        means[0], means[1], step_lr, images_per_second)

    def evaluate(self, keep_best: bool = True) -> None:
        """Evaluate on every process; log; save ``best/`` when the mIoU improved (and ``keep_best``)."""
        accelerator, state, data = self.accelerator, self.state, self.data
        broadcast_buffers(accelerator, self.model)
        result = evaluator.evaluate(
            self.unwrapped(), data.eval, accelerator=accelerator, batch_size=self.args.per_device_eval_batch_size,
            num_workers=self.data_args.num_workers, channels_last=self.args.channels_last, id2label=data.id2label,
            ignore_index=data.ignore_index, show_progress=not self.args.disable_tqdm,
        )
        self.metrics, self.confusion, self.last_eval_step = result.metrics, result.confusion_matrix, state.global_step
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
            if self.args.save_best_model and accelerator.is_main_process:
                self.best_dir = save_model_folder(
                    self.unwrapped(), self.image_processor, self.output_dir / "best",
                    {EVAL_RESULTS_FILE: self.eval_results(), HYPERPARAMETERS_FILE: self.hyperparameters},
                )
                self.write_figures(self.best_dir)
        accelerator.wait_for_everyone()
        self.model.train()

    def eval_results(self) -> dict[str, Any]:
        """The ``eval_results.json`` content of the last evaluation (:mod:`msaf_hf.evaluation.results`)."""
        return eval_results(self.metrics, self.data.id2label, step=self.state.global_step, **self.dataset_info)

    def write_figures(self, folder: Path, results: dict[str, Any] | None = None) -> None:
        """Evaluation figures and training curves into a saved model folder (the model card embeds them)."""
        from ..visualization.figures import write_result_figures

        if results is None and self.metrics:
            results = self.eval_results()
        write_result_figures(folder / EVAL_RESULTS_FILE, results, confusion_matrix=self.confusion,
                             log_history=self.state.log_history)

    def save_checkpoint(self) -> None:
        """Save the full training state; with a Hub strategy other than ``end``, push a model snapshot too."""
        broadcast_buffers(self.accelerator, self.model)
        path = save_checkpoint(self.accelerator, self.output_dir, self.state, self.args.checkpoints_total_limit)
        self.last_checkpoint_step = self.state.global_step
        if self.pusher is not None and self.args.hub_strategy != "end":
            # A checkpoint holds Accelerate's state, not a from_pretrained folder: push a model snapshot beside it.
            snapshot = save_model_folder(self.unwrapped(), self.image_processor, self.output_dir / "last-model",
                                         {HYPERPARAMETERS_FILE: self.hyperparameters})
            self.pusher.on_save(snapshot, checkpoint_dir=path, step=self.state.global_step)

    def finish(self) -> Path:
        """Evaluate the last weights (unless just done), save ``final/`` and the results, a last checkpoint, push."""
        accelerator, state, output_dir = self.accelerator, self.state, self.output_dir
        broadcast_buffers(accelerator, self.model)
        if self.data.eval is not None and self.last_eval_step != state.global_step:
            self.evaluate()
        final_dir = output_dir / "final"
        if accelerator.is_main_process:
            evaluation_results = self.eval_results() if self.metrics else None
            extra: dict[str, Any] = {
                HYPERPARAMETERS_FILE: self.hyperparameters,
                TRAIN_RESULTS_FILE: {"global_step": state.global_step, "train_loss": self.last_loss,
                                     "epoch": state.epoch},
            }
            if evaluation_results is not None:
                extra[EVAL_RESULTS_FILE] = evaluation_results
            save_model_folder(self.unwrapped(), self.image_processor, final_dir, extra)
            self.write_figures(final_dir, evaluation_results)
            write_results_file(output_dir / ALL_RESULTS_FILE,
                               all_results(self.last_loss, state.global_step, evaluation_results))
            state.save(output_dir)
        if self.args.checkpointing_steps is not None and self.last_checkpoint_step != state.global_step:
            save_checkpoint(accelerator, output_dir, state, self.args.checkpoints_total_limit)
        accelerator.wait_for_everyone()
        if self.pusher is not None:
            self.pusher.on_train_end(final_dir)
            url = self.pusher.wait()  # retries a failed final push once
            if url is None:
                last = self.pusher.last_result
                raise HubPushError(final_dir, push_command(self.args, final_dir, output_dir),
                                   last.error if last is not None else "no push result (timed out?)")
            logger.info("Pushed %s to the Hub: %s", final_dir, url)
        return final_dir


class _LossWindow:
    """Sums of the loss terms since the last log, kept on the device so that training never waits for the host."""

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None
        self.batches = 0
        self.start = time.perf_counter()

    def add(self, outputs: Any) -> None:
        losses = (outputs.loss, outputs.main_loss, *(outputs.auxiliary_losses or ()))
        terms = torch.stack([t.detach().float() for t in losses])
        self.sums = terms if self.sums is None else self.sums + terms
        self.batches += 1

    def flush(self, accelerator: Any) -> tuple[list[float], int, float]:
        """(mean of each term over all processes, micro-batches, seconds) since the last flush; then reset."""
        means = (accelerator.reduce(self.sums, reduction="mean") / self.batches).tolist()  # the one host sync
        result = (means, self.batches, time.perf_counter() - self.start)
        self.sums, self.batches, self.start = None, 0, time.perf_counter()
        return result


def _is_due(interval: int | str | None, global_step: int, epoch_done: bool) -> bool:
    if interval is None:
        return False
    return epoch_done if interval == "epoch" else global_step % interval == 0
