"""Evaluating DSNet: mIoU, per-class IoU, pixel accuracy and mean class accuracy, single- or multi-process.

:func:`evaluate` scores a model on a dataset of ``{"pixel_values", "labels"}`` examples (``msaf_hf.data``):
logits are upsampled bilinearly to each label map's size (the native annotation, whatever the input size),
and a confusion matrix (``msaf_hf.metrics.SegmentationConfusionMatrix``) is accumulated on the device and
summed across processes at the end.

**Every image counts once.** With several processes each one takes the indices
``range(rank, len(dataset), world_size)`` (:func:`shard_indices`): shards may differ in size by one, and
nothing is padded or repeated (a ``DistributedSampler`` or Accelerate's even batches would repeat images of
the last shard and count them twice). Summing the integer matrices therefore gives exactly the
single-process matrix.

Test-time augmentation (:func:`predict`): horizontal flip and several input scales; the softmax
probabilities of all views are averaged at the label resolution.

The command line (``scripts/evaluate.py``, :func:`main`) evaluates a ``save_pretrained`` folder or a Hub model
id on a dataset split, prints a per-class table and writes a JSON file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from .data import DataArguments, collate_fn, load_segmentation_data
from .metrics import SegmentationConfusionMatrix

logger = logging.getLogger(__name__)

__all__ = [
    "EvaluationArguments",
    "EvaluationResult",
    "evaluate",
    "format_results_table",
    "main",
    "predict",
    "results_to_json",
    "shard_indices",
]


def shard_indices(num_examples: int, rank: int, world_size: int) -> range:
    """The examples process ``rank`` evaluates: every ``world_size``-th, starting at ``rank``.

    The shards partition ``range(num_examples)`` exactly (sizes differ by at most one; a shard may be empty).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard_indices: need 0 <= rank < world_size, got rank={rank}, world_size={world_size}.")
    return range(rank, num_examples, world_size)


def predict(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    output_size: Sequence[int] | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
) -> torch.Tensor:
    """Class scores ``(N, C, H, W)`` at ``output_size`` (default: the input size), float32.

    Without test-time augmentation these are the model's logits, upsampled bilinearly (``align_corners=False``).
    With ``flip`` and/or several ``scales``, each view's input is resized bilinearly by the scale (and flipped),
    its logits are upsampled to ``output_size`` (and flipped back), and the softmax probabilities of all views
    are averaged. Call under ``torch.no_grad()`` / ``inference_mode()`` with the model in eval mode.
    """
    scales = [float(s) for s in scales] or [1.0]
    if any(s <= 0 for s in scales):
        raise ValueError(f"predict: scales must be positive, got {scales}.")
    height, width = pixel_values.shape[-2:]
    size = tuple(int(v) for v in (output_size if output_size is not None else (height, width)))
    single_view = not flip and scales == [1.0]
    total: torch.Tensor | None = None
    views = 0
    for scale in scales:
        inputs = pixel_values
        if scale != 1.0:
            scaled = (max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5)))
            inputs = F.interpolate(pixel_values, size=scaled, mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            view = inputs.flip(-1) if flipped else inputs
            logits = model(pixel_values=view).logits.float()
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            if flipped:
                logits = logits.flip(-1)
            if single_view:
                return logits
            probabilities = logits.softmax(dim=1)
            total = probabilities if total is None else total + probabilities
            views += 1
    return total / views


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns (the same on every process)."""

    metrics: dict[str, Any]  # mean_iou, per_class_iou, pixel_accuracy, mean_class_accuracy, per_class_accuracy, ...
    confusion_matrix: torch.Tensor  # (C, C) int64 on the CPU, summed over processes; rows: label, columns: prediction
    num_images: int  # images scored over all processes
    id2label: dict[int, str]


def _process_info(accelerator: Any) -> tuple[int, int]:
    if accelerator is not None:
        return accelerator.process_index, accelerator.num_processes
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    *,
    accelerator: Any = None,
    batch_size: int = 1,
    num_workers: int = 0,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    channels_last: bool = False,
    id2label: Optional[dict[int, str]] = None,
    ignore_index: Optional[int] = None,
    show_progress: bool = True,
) -> EvaluationResult:
    """Score ``model`` on ``dataset`` (see the module docstring). Every process must call it.

    ``model`` should be the unwrapped model (``accelerator.unwrap_model``): a DDP wrapper would synchronise
    buffers in each forward, which deadlocks when shards differ in size. Inputs go to ``accelerator.device``
    (or the model's device). ``id2label`` and ``ignore_index`` default to the model config's.
    The model's training/eval mode is restored afterwards.
    """
    from tqdm.auto import tqdm

    config = model.config
    id2label = {int(k): v for k, v in (id2label or config.id2label).items()}
    num_labels = len(id2label)
    if num_labels != config.num_labels:
        raise ValueError(
            f"evaluate: the dataset has {num_labels} classes but the model predicts {config.num_labels}; evaluate "
            "with the label set the model was trained on."
        )
    ignore_index = config.semantic_loss_ignore_index if ignore_index is None else ignore_index
    rank, world_size = _process_info(accelerator)
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    shard = Subset(dataset, shard_indices(len(dataset), rank, world_size))
    loader = DataLoader(
        shard, batch_size=batch_size, shuffle=False, collate_fn=collate_fn, num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    metric = SegmentationConfusionMatrix(num_labels, ignore_index, device=device)
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc="evaluating", leave=False, dynamic_ncols=True,
                          disable=not show_progress or rank != 0):
            pixel_values = batch["pixel_values"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            if channels_last:
                pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
            scores = predict(model, pixel_values, labels.shape[-2:], flip=flip, scales=scales)
            metric.update(scores.argmax(dim=1), labels)
    finally:
        model.train(was_training)
    metric.all_reduce()  # sums over processes (no-op single-process); each image was seen by one process only
    results = metric.compute()
    return EvaluationResult(
        metrics=results,
        confusion_matrix=torch.as_tensor(results["confusion_matrix"], dtype=torch.int64),
        num_images=len(dataset),
        id2label=id2label,
    )


def format_results_table(metrics: dict[str, Any], id2label: dict[int, str]) -> str:
    """A plain-text table: one row per class (IoU, accuracy), then mIoU, pixel accuracy and mean class accuracy."""

    def pct(value: Any) -> str:
        return "   n/a" if value is None or math.isnan(float(value)) else f"{100 * float(value):6.2f}"

    names = [id2label[i] for i in range(len(id2label))]
    width = max([len("class"), len("mean class accuracy")] + [len(n) for n in names])
    lines = [f"{'class':<{width}}  {'IoU %':>6}  {'acc %':>6}", "-" * (width + 16)]
    for index, name in enumerate(names):
        lines.append(f"{name:<{width}}  {pct(metrics['per_class_iou'][index])}  {pct(metrics['per_class_accuracy'][index])}")
    lines.append("-" * (width + 16))
    lines.append(f"{'mIoU':<{width}}  {pct(metrics['mean_iou'])}")
    lines.append(f"{'pixel accuracy':<{width}}  {pct(metrics['pixel_accuracy'])}")
    lines.append(f"{'mean class accuracy':<{width}}  {pct(metrics['mean_class_accuracy'])}")
    return "\n".join(lines)


def _none_if_nan(value: Any) -> Any:
    return None if value is None or math.isnan(float(value)) else float(value)


def results_to_json(result: EvaluationResult, **extra: Any) -> dict[str, Any]:
    """A JSON-ready dict (NaN as null) in the keys ``msaf_hf.hub`` reads, with per-class values by name too."""
    names = [result.id2label[i] for i in range(len(result.id2label))]
    metrics = result.metrics
    out = {
        "mean_iou": _none_if_nan(metrics["mean_iou"]),
        "pixel_accuracy": _none_if_nan(metrics["pixel_accuracy"]),
        "mean_class_accuracy": _none_if_nan(metrics["mean_class_accuracy"]),
        "per_class_iou": [_none_if_nan(v) for v in metrics["per_class_iou"]],
        "per_class_accuracy": [_none_if_nan(v) for v in metrics["per_class_accuracy"]],
        "class_names": names,
        "iou_by_class": {n: _none_if_nan(v) for n, v in zip(names, metrics["per_class_iou"])},
        "num_images": result.num_images,
        "confusion_matrix": result.confusion_matrix.tolist(),
    }
    out.update(extra)
    return out


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
@dataclass
class EvaluationArguments:
    """What to evaluate and how (``scripts/evaluate.py``); the data comes from ``DataArguments``."""

    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "A save_pretrained folder or a Hub model id (required)."}
    )
    revision: str = field(default="main", metadata={"help": "Hub revision of the model."})
    output_file: Optional[str] = field(
        default=None, metadata={"help": "Where to write the JSON results (default: ./eval_results.json)."}
    )
    flip: bool = field(default=False, metadata={"help": "Test-time augmentation: average with the flipped image."})
    scales: list[float] = field(
        default_factory=lambda: [1.0],
        metadata={"help": "Test-time augmentation: input scales whose predictions are averaged, e.g. 0.75 1.0 1.25."},
    )
    per_device_eval_batch_size: int = field(default=1, metadata={"help": "Images per process per batch."})
    mixed_precision: Optional[str] = field(
        default=None, metadata={"help": "no, fp16 or bf16 (default: the accelerate config).", "choices": ["no", "fp16", "bf16"]}
    )
    channels_last: bool = field(default=False, metadata={"help": "Use channels-last memory format."})
    use_cpu: bool = field(default=False, metadata={"help": "Evaluate on the CPU even if an accelerator is present."})


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``scripts/evaluate.py``: evaluate a checkpoint on a dataset split; print a per-class table; write JSON."""
    from accelerate import Accelerator

    from .engines import load_segmenter
    from .training import _any_accelerator_available, parse_args

    # Training recipes may be reused (--config configuration/camvid.yaml): their training-only keys are ignored,
    # and the model always comes from the command line.
    eval_args, data_args = parse_args(
        argv, (EvaluationArguments, DataArguments), ignore_unknown_recipe_keys=True,
        recipe_exclude=("model_name_or_path",),
    )
    if not eval_args.model_name_or_path:
        raise ValueError("scripts/evaluate.py: pass --model_name_or_path (a save_pretrained folder or a Hub model id).")
    accelerator = Accelerator(
        cpu=eval_args.use_cpu or not _any_accelerator_available(), mixed_precision=eval_args.mixed_precision
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if accelerator.is_main_process else logging.WARNING)

    # A folder written by scripts/export.py loads as its engine model (OpenVINO / ONNX Runtime), anything else as
    # the PyTorch model.
    model = load_segmenter(eval_args.model_name_or_path, revision=eval_args.revision)
    model.to(accelerator.device)
    if accelerator.mixed_precision != "no":
        model = accelerator.prepare_model(model, evaluation_mode=True)  # autocast wrapper only
    if eval_args.channels_last:
        model = model.to(memory_format=torch.channels_last)

    data_args, names_file = _evaluation_data_args(data_args, model.config.id2label)
    try:
        with accelerator.main_process_first():
            data = load_segmentation_data(data_args)
    finally:
        if names_file is not None:
            os.unlink(names_file)
    if data.eval is None:
        raise ValueError("scripts/evaluate.py: no evaluation data; pass --eval_split <split> (or --eval_image_dir).")
    if data.num_labels != model.config.num_labels:
        raise ValueError(
            f"The dataset has {data.num_labels} classes but {eval_args.model_name_or_path!r} predicts "
            f"{model.config.num_labels}; pass --id2label_file with the model's classes or check --void_labels."
        )
    result = evaluate(
        model, data.eval, accelerator=accelerator, batch_size=eval_args.per_device_eval_batch_size,
        num_workers=data_args.num_workers, flip=eval_args.flip, scales=eval_args.scales,
        channels_last=eval_args.channels_last, id2label={int(k): v for k, v in model.config.id2label.items()},
        ignore_index=data.ignore_index,
    )
    from .training import _dataset_description

    payload = results_to_json(
        result,
        model=eval_args.model_name_or_path,
        **_dataset_description(data_args),
        eval_size=data_args.eval_size or "native",
        test_time_augmentation={"flip": eval_args.flip, "scales": list(eval_args.scales)},
        num_processes=accelerator.num_processes,
    )
    if accelerator.is_main_process:
        print(format_results_table(result.metrics, result.id2label))
        output_file = Path(eval_args.output_file or "eval_results.json")
        if output_file.parent != Path(""):
            output_file.parent.mkdir(parents=True, exist_ok=True)
        output_file.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"mIoU: {result.metrics['mean_iou']:.4f} on {result.num_images} images; results written to {output_file}")
    return payload


def _evaluation_data_args(data_args: DataArguments, model_id2label: dict[Any, str]) -> tuple[DataArguments, Optional[str]]:
    """Only the evaluation split is needed: read the training side from it too, and name the classes as the model
    does unless --id2label_file says otherwise (the model's class ids are what its logits mean). Returns the
    arguments and the temporary class-name file written for that (to delete after loading), if any."""
    updates: dict[str, Any] = {}
    names_file = None
    if data_args.eval_split is not None and data_args.eval_split_fraction is None and data_args.image_dir is None:
        updates["train_split"] = data_args.eval_split
    if data_args.id2label_file is None:
        handle = tempfile.NamedTemporaryFile("w", suffix="_id2label.json", delete=False, encoding="utf-8")
        with handle:
            json.dump({str(k): v for k, v in model_id2label.items()}, handle)
        updates["id2label_file"] = names_file = handle.name
    return (dataclasses.replace(data_args, **updates) if updates else data_args), names_file
