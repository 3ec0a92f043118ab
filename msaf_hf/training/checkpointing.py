"""Checkpoints: ``TrainerState``, atomic saves of the full training state and of model folders, rotation, and
loading with clear errors for damaged checkpoints or another architecture. Finding checkpoints (and which one a run
resumes) is :mod:`msaf_hf.training.run_folder`."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .run_folder import CHECKPOINT_PREFIX, TRAINER_STATE_FILE, checkpoint_run_id, checkpoint_step, list_checkpoints

logger = logging.getLogger(__name__)


@dataclass
class TrainerState:
    """Counters saved with every checkpoint (``trainer_state.json``) besides Accelerate's state."""

    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of `epoch` each process has consumed (0 = epoch not started)
    best_metric: float | None = None
    best_step: int | None = None
    num_processes: int = 1
    per_device_train_batch_size: int = 0
    gradient_accumulation_steps: int = 1
    seed: int = 0
    max_steps: int = 0
    run_id: str | None = None  # the run that wrote this state (msaf_hf.training.run_folder); None: before run ids
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


def replace_dir(source: Path, target: Path) -> None:
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
    if accelerator.is_main_process and final.is_dir() and checkpoint_run_id(final) not in (None, state.run_id):
        raise FileExistsError(  # never replace another run's checkpoint (the folder is locked and owned by this run)
            f"{final} belongs to another run ({checkpoint_run_id(final)}, this run is {state.run_id}); move it away."
        )
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging), safe_serialization=True)
    if accelerator.is_main_process:
        state.save(staging)  # written last: its presence marks a complete checkpoint
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_dir(staging, final)
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
    replace_dir(staging, folder)
    return folder


# --------------------------------------------------------------------------------------------------

def load_checkpoint(
    accelerator: Any, checkpoint: Path, run_id: str | None, model: torch.nn.Module | None = None
) -> None:
    """``accelerator.load_state`` with clear errors: weights of another architecture than ``model`` (the unwrapped
    model being trained) get one short message instead of a page of size mismatches; a damaged file is named (and the
    previous checkpoint offered)."""
    mismatch = None if model is None else architecture_mismatch(model, checkpoint)
    if mismatch is not None:
        raise ValueError(
            f"Checkpoint {checkpoint} holds a model of another architecture than this run builds ({mismatch}). Resume "
            "with the model settings it was trained with (--preset, --config_overrides, --model_name_or_path), or "
            "start a new run."
        )
    try:
        accelerator.load_state(str(checkpoint))
    except Exception:
        damaged = damaged_files(checkpoint)
        if not damaged:
            raise
        step = checkpoint_step(checkpoint) or 0
        earlier = [p for p in list_checkpoints(checkpoint.parent, run_id) if (checkpoint_step(p) or 0) < step]
        offer = (f"Resume from the previous checkpoint instead: --resume_from_checkpoint {earlier[-1]}"
                 if earlier else "There is no earlier checkpoint of this run to fall back to.")
        raise RuntimeError(
            f"Checkpoint {checkpoint} is damaged: {checkpoint / damaged[0][0]} cannot be read ({damaged[0][1]}). "
            f"{offer}"
        ) from None


def architecture_mismatch(model: torch.nn.Module, checkpoint: Path) -> str | None:
    """How the checkpoint's model weights (``model.safetensors``, read from its header only) differ from ``model``'s
    tensors in name or shape, in a few words; None when they fit (or the file is missing or unreadable: loading
    reports that)."""
    from safetensors import safe_open

    try:
        with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as weights:
            saved = {name.removeprefix("module."): tuple(weights.get_slice(name).get_shape())
                     for name in weights.keys()}
    except Exception:  # noqa: BLE001 - missing or damaged: accelerator.load_state says which
        return None
    current = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    shapes = [(name, saved[name], shape) for name, shape in current.items() if name in saved and saved[name] != shape]
    if shapes:
        name, old, new = shapes[0]
        return (f"{len(shapes)} tensors differ in shape, e.g. {name}: {list(old)} in the checkpoint, {list(new)} in "
                "this model")
    unknown = sorted(set(saved) - set(current))
    if unknown:  # (names the model has but the file lacks may be tied weights that safetensors stores once)
        return f"its parameter names differ from this model's, e.g. {unknown[0]}"
    return None


def damaged_files(checkpoint: Path) -> list[tuple[str, str]]:
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
