"""Where a run starts: claiming the output folder (new run, overwrite or resume), and resuming a checkpoint only
with the settings it was trained with (unless ``--allow_changed_settings``)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from ..data import DataArguments
from .arguments import ModelArguments, TrainingArguments
from .checkpointing import (
    CHECKPOINT_PREFIX,
    TRAINER_STATE_FILE,
    TrainerState,
    checkpoint_run_id,
    clean_stale_staging,
    find_latest_checkpoint,
    list_checkpoints,
)
from .run_folder import (
    OutputDirLockedError,
    RunLock,
    clear_earlier_results,
    describe_folder,
    earlier_results,
    new_run_id,
    read_run_id,
    write_run_file,
)

logger = logging.getLogger(__name__)


def resolve_resume(args: TrainingArguments, owner: str | None) -> Path | None:
    """The checkpoint to resume from: ``latest`` of the run owning output_dir, or the given folder."""
    value = args.resume_from_checkpoint
    if value is None:
        return None
    if value == "latest":
        latest = find_latest_checkpoint(args.output_dir, owner)
        if latest is None:
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


def prepare_output_dir(args: TrainingArguments) -> tuple[Path | None, str]:
    """Decide who owns ``output_dir`` for this run (main process, lock held): (checkpoint to resume, run id).

    A new run needs a folder without earlier results, or ``--overwrite_output_dir`` (which deletes them first); a
    resumed run continues the checkpoint's run id; nothing of another run is ever reused by accident.
    """
    output_dir = Path(args.output_dir)
    owner = read_run_id(output_dir)
    results = earlier_results(output_dir)
    resume_dir = resolve_resume(args, owner)
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
        foreign = [p.name for p in list_checkpoints(output_dir) if checkpoint_run_id(p) not in (None, run_id)]
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


def claim_output_dir(args: TrainingArguments, accelerator: Any) -> tuple[Any, Path | None, str]:
    """Lock ``output_dir`` on the main process and settle its ownership; every process gets the verdict.

    Returns (the lock on the main process, else None; checkpoint to resume; run id). A refusal is raised on every
    process (the others learn it through a broadcast instead of waiting for a main process that has stopped).
    """
    lock, error, verdict = None, None, [None]
    if accelerator.is_main_process:
        try:
            lock = RunLock(args.output_dir).acquire()
            resume_dir, run_id = prepare_output_dir(args)
            lock.set_run_id(run_id)
            clean_stale_staging(Path(args.output_dir))
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


def check_resume_settings(saved: TrainerState, current: TrainerState, args: TrainingArguments,
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


def apply_changed_hyperparameters(optimizer: Any, scheduler: Any, args: TrainingArguments) -> None:
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
