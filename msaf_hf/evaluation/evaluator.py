"""Evaluating DSNet: mIoU, per-class IoU, pixel accuracy and mean class accuracy, single- or multi-process.

:func:`evaluate` scores a model on a dataset of ``{"pixel_values", "labels"}`` examples (``msaf_hf.data``):
logits are upsampled bilinearly to each label map's size (the native annotation, whatever the input size),
and a confusion matrix (``msaf_hf.evaluation.metrics.SegmentationConfusionMatrix``) is accumulated on the device and
summed across processes at the end.

**Every image counts once.** With several processes each one takes the indices
``range(rank, len(dataset), world_size)`` (:func:`shard_indices`): shards may differ in size by one, and
nothing is padded or repeated (a ``DistributedSampler`` or Accelerate's even batches would repeat images of
the last shard and count them twice). Summing the integer matrices therefore gives exactly the
single-process matrix.

Test-time augmentation (:func:`predict`): horizontal flip and several input scales; the softmax
probabilities of all views are averaged at the label resolution.

The command line (``msaf-hf evaluate``) is :mod:`msaf_hf.evaluation.cli`; the results files are
:mod:`msaf_hf.results`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from ..data import collate_fn
from ..image_processing_dsnet import label_map_from_scores, resize_scores
from ..modeling_dsnet import sliding_window_logits
from ..results import eval_results
from .metrics import SegmentationConfusionMatrix

logger = logging.getLogger(__name__)

__all__ = [
    "EvaluationResult",
    "accelerator_available",
    "evaluate",
    "format_results_table",
    "predict",
    "process_info",
    "results_to_json",
    "shard_indices",
    "window_logits",
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
    sliding_window: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    window_batch_size: int = 4,
) -> torch.Tensor:
    """Class scores ``(N, C, H, W)`` at ``output_size`` (default: the input size), float32.

    Without test-time augmentation these are the model's logits, upsampled bilinearly (``align_corners=False``).
    With ``flip`` and/or several ``scales``, each view's input is resized bilinearly by the scale (and flipped),
    its logits are upsampled to ``output_size`` (and flipped back), and the softmax probabilities of all views
    are averaged; for a binary segmenter (one channel) the sigmoid probabilities are averaged and returned as a
    logit, so that ``> 0`` still means foreground. With ``sliding_window`` ``(H, W)`` each view's logits are
    averaged over overlapping windows of that size every ``stride`` (:func:`window_logits`). Call under
    ``torch.no_grad()`` / ``inference_mode()`` with the model in eval mode.
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
            if sliding_window is None:
                logits = model(pixel_values=view).logits.float()
            else:
                logits = window_logits(model, view, sliding_window, stride, window_batch_size=window_batch_size)
            logits = resize_scores(logits, size)
            if flipped:
                logits = logits.flip(-1)
            if single_view:
                return logits
            # Softmax over a binary segmenter's one channel would be 1 everywhere: its probability is the sigmoid.
            probabilities = logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(dim=1)
            total = probabilities if total is None else total + probabilities
            views += 1
    mean = total / views
    return torch.logit(mean, eps=1e-7) if mean.shape[1] == 1 else mean  # eps: saturated views give no infinities


def window_logits(
    model: torch.nn.Module,
    pixel_values: torch.Tensor,
    window_size: Sequence[int] | None,
    stride: Sequence[int] | None = None,
    *,
    window_batch_size: int = 4,
    progress: Any = False,
) -> torch.Tensor:
    """Logits at the input resolution averaged over sliding windows: the model's own ``sliding_window_logits``
    (DSNet and the engine models: it checks the window against the model), else
    :func:`msaf_hf.modeling_dsnet.sliding_window_logits` for any model returning ``logits``."""
    method = getattr(model, "sliding_window_logits", None)
    if method is not None:
        return method(pixel_values, window_size, stride, window_batch_size=window_batch_size, progress=progress)
    if window_size is None:
        raise ValueError("sliding window: pass the window size (height, width).")
    return sliding_window_logits(
        model, pixel_values, tuple(window_size), None if stride is None else tuple(stride),
        window_batch_size=window_batch_size, progress=progress,
    )


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns (the same on every process)."""

    metrics: dict[str, Any]  # mean_iou, per_class_iou, pixel_accuracy, mean_class_accuracy, per_class_accuracy, ...
    confusion_matrix: torch.Tensor  # (C, C) int64 on the CPU, summed over processes; rows: label, columns: prediction
    num_images: int  # images scored over all processes
    id2label: dict[int, str]


def process_info(accelerator: Any) -> tuple[int, int]:
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
    id2label: dict[int, str] | None = None,
    ignore_index: int | None = None,
    show_progress: bool = True,
    sliding_window: Sequence[int] | None = None,
    stride: Sequence[int] | None = None,
    window_batch_size: int = 4,
) -> EvaluationResult:
    """Score ``model`` on ``dataset`` (see the module docstring). Every process must call it.

    ``model`` should be the unwrapped model (``accelerator.unwrap_model``): a DDP wrapper would synchronise
    buffers in each forward, which deadlocks when shards differ in size. Inputs go to ``accelerator.device``
    (or the model's device). ``id2label`` and ``ignore_index`` default to the model config's. ``sliding_window``,
    ``stride`` and ``window_batch_size``: sliding-window inference (see :func:`predict`).
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
    rank, world_size = process_info(accelerator)
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
            scores = predict(model, pixel_values, labels.shape[-2:], flip=flip, scales=scales,
                             sliding_window=sliding_window, stride=stride, window_batch_size=window_batch_size)
            metric.update(label_map_from_scores(scores, dim=1), labels)
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
        iou, accuracy = metrics["per_class_iou"][index], metrics["per_class_accuracy"][index]
        lines.append(f"{name:<{width}}  {pct(iou)}  {pct(accuracy)}")
    lines.append("-" * (width + 16))
    lines.append(f"{'mIoU':<{width}}  {pct(metrics['mean_iou'])}")
    lines.append(f"{'pixel accuracy':<{width}}  {pct(metrics['pixel_accuracy'])}")
    lines.append(f"{'mean class accuracy':<{width}}  {pct(metrics['mean_class_accuracy'])}")
    return "\n".join(lines)


def results_to_json(result: EvaluationResult, **extra: Any) -> dict[str, Any]:
    """The ``eval_results.json`` content of ``result`` (:func:`msaf_hf.results.eval_results`) with the
    number of images and the confusion matrix; ``extra`` keys are added as given."""
    return eval_results(result.metrics, result.id2label, num_images=result.num_images,
                        confusion_matrix=result.confusion_matrix.tolist(), **extra)


def accelerator_available() -> bool:
    """Whether torch sees an accelerator (a GPU, ...); without one, training and evaluation run on the CPU."""
    accelerator_api = getattr(torch, "accelerator", None)
    if accelerator_api is not None and hasattr(accelerator_api, "is_available"):
        return bool(accelerator_api.is_available())
    return torch.cuda.is_available()
