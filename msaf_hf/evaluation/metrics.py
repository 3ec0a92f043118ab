"""Semantic segmentation metrics (mIoU, pixel accuracy, class accuracy) from a confusion matrix.

Every metric DSNet reports is a function of one ``num_classes x num_classes`` confusion matrix (rows: true
label, columns: prediction), so :class:`SegmentationConfusionMatrix` accumulates only that matrix, on the
device of the predictions, and derives all metrics from it at the end.

Conventions (stated here because they change the numbers when a class is missing):

* Pixels whose label equals ``ignore_index`` are not counted anywhere.
* A class that appears neither in the labels nor in the predictions has an IoU of 0/0: it is reported as
  NaN in ``per_class_iou`` and **left out** of ``mean_iou``. A class that is predicted but never present in
  the labels has IoU 0 and does count. ``mean_iou`` thus equals mmsegmentation's and torchmetrics'
  ``MulticlassJaccardIndex(average="macro")`` (torchmetrics writes 0 instead of NaN in its per-class output).
  The published DSNet evaluation code counts 0/0 classes as IoU 0 in the mean; all of these agree whenever
  every class occurs in the evaluated set, as on full validation splits.
* Per-class accuracy (recall) is NaN for classes absent from the labels, and ``mean_class_accuracy`` is the
  mean over the other classes, like mmsegmentation's mAcc and scikit-learn's ``balanced_accuracy_score``
  (torchmetrics' macro ``MulticlassAccuracy`` counts a predicted-but-unlabelled class as 0 instead).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..image_processing_dsnet import label_map_from_scores

__all__ = ["SegmentationConfusionMatrix", "metrics_from_confusion_matrix"]

# On CPU the work is split into chunks of this many pixels: the int64 temporaries then stay in cache and
# are recycled by the allocator instead of page-faulting a fresh few hundred MB per op (3-4x faster).
_CPU_CHUNK = 1 << 20
# On accelerators the caching allocator makes big temporaries cheap; chunking only bounds peak memory.
_DEVICE_CHUNK = 1 << 24


class SegmentationConfusionMatrix:
    """Accumulates a semantic-segmentation confusion matrix and computes mIoU and accuracies from it.

    Example::

        metric = SegmentationConfusionMatrix(num_classes=11, ignore_index=255)
        for batch in loader:
            logits = model(pixel_values=batch["pixel_values"]).logits
            logits = F.interpolate(logits, size=batch["labels"].shape[-2:], mode="bilinear", align_corners=False)
            metric.update(logits, batch["labels"])  # or class ids (N, H, W)
        metric.all_reduce()          # no-op unless torch.distributed is initialised
        results = metric.compute()   # {"mean_iou": ..., "per_class_iou": [...], ...}

    Args:
        num_classes: Number of classes ``C``; valid labels and predictions are ``0 .. C-1``.
        ignore_index: Label value of pixels that are skipped (default 255); ``None`` to skip nothing. It must lie
            outside ``[0, C)``.
        device: Where to keep the matrix. By default it is created on the device of the first ``update`` inputs;
            counts from inputs elsewhere are moved to it (a ``C*C``-element copy).

    Bad labels: a label outside ``[0, C)`` that is not ``ignore_index`` (or a predicted class outside that
    range) is an error. For CPU inputs ``update`` raises ``ValueError`` at once, naming the offending values.
    On accelerators checking at once would cost a host synchronisation per batch, so such pixels are instead
    counted on the device (and kept out of the matrix) and ``compute`` raises the ``ValueError``.

    ``update`` on CUDA is free of host synchronisation: it uses ``torch.histc`` with fixed bounds (in float64,
    exact for counts below 2**53) because ``torch.bincount`` reads the input's min and max back to the host. Under
    ``torch.use_deterministic_algorithms(True)`` histc is unavailable on CUDA and ``bincount`` is used instead,
    which synchronises. Other accelerators also use ``bincount``.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"SegmentationConfusionMatrix: num_classes must be a positive int, got {num_classes!r}.")
        if ignore_index is not None:
            if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
                raise ValueError(
                    f"SegmentationConfusionMatrix: ignore_index must be an int or None, got {ignore_index!r}."
                )
            if 0 <= ignore_index < num_classes:
                raise ValueError(
                    f"SegmentationConfusionMatrix: ignore_index={ignore_index} is a valid class id for "
                    f"num_classes={num_classes}; choose a value outside [0, {num_classes}) such as 255."
                )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.device = torch.device(device) if device is not None else None
        # Layout of the flat count vector: C*C matrix cells (row-major, row = label), then one bin for
        # ignored pixels and one for invalid pixels (out-of-range label/prediction on accelerators).
        self._ignored_bin = num_classes * num_classes
        self._invalid_bin = self._ignored_bin + 1
        self._num_bins = self._invalid_bin + 1
        self._counts: torch.Tensor | None = None
        self._reduced = False

    # ------------------------------------------------------------------ state

    @property
    def matrix(self) -> torch.Tensor:
        """The ``(C, C)`` int64 confusion matrix (rows: label, columns: prediction), on its device."""
        counts = self._counts if self._counts is not None else self._zeros(self.device or torch.device("cpu"))
        return counts[: self._ignored_bin].view(self.num_classes, self.num_classes)

    @property
    def num_ignored(self) -> torch.Tensor:
        """Number of pixels skipped because their label was ``ignore_index`` (a 0-d device tensor)."""
        counts = self._counts if self._counts is not None else self._zeros(self.device or torch.device("cpu"))
        return counts[self._ignored_bin]

    def reset(self) -> None:
        """Forget everything accumulated so far (also allows ``update``/``all_reduce`` again after a reduction)."""
        if self._counts is not None:
            self._counts.zero_()
        self._reduced = False

    def _zeros(self, device: torch.device) -> torch.Tensor:
        return torch.zeros(self._num_bins, dtype=torch.int64, device=device)

    # ------------------------------------------------------------------ update

    def update(self, predictions: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> None:
        """Add a batch to the matrix.

        Args:
            predictions: Either integer class ids with the same shape as ``labels`` (e.g. ``(N, H, W)``), or
                scores/logits with a class dimension at position 1, ``(N, C, H, W)``, turned into class ids as the
                image processor does (``label_map_from_scores``: the argmax).
                Logits must already be at the labels' resolution (upsample them first, e.g. with
                ``DSNetImageProcessor.post_process_semantic_segmentation`` or ``F.interpolate``).
            labels: Integer class ids, e.g. ``(N, H, W)``; ``ignore_index`` marks unannotated pixels.
        """
        if self._reduced:
            raise RuntimeError(
                "SegmentationConfusionMatrix.update: the matrix was already all-reduced across processes; adding "
                "local counts now would mix global and local totals. Call reset() to start a new evaluation."
            )
        predictions = torch.as_tensor(predictions)
        labels = torch.as_tensor(labels)
        predictions = self._to_class_ids(predictions, labels)

        flat_predictions, flat_labels = predictions.reshape(-1), labels.reshape(-1)
        if labels.device.type == "cpu":
            # Reading numbers back is free on CPU, so bad inputs fail here, before the state is touched.
            batch_counts = self._count_checked(flat_predictions, flat_labels)
        else:
            batch_counts = self._count_deferred(flat_predictions, flat_labels)

        if self._counts is None:
            self._counts = self._zeros(self.device or labels.device)
        self._counts += batch_counts.to(self._counts.device)

    def _to_class_ids(self, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(
                f"SegmentationConfusionMatrix.update: labels must hold integer class ids, got dtype {labels.dtype}."
            )
        if predictions.device != labels.device:
            raise ValueError(
                f"SegmentationConfusionMatrix.update: predictions are on {predictions.device} but labels on "
                f"{labels.device}; move them to the same device."
            )
        if predictions.dim() == labels.dim() + 1 and labels.dim() >= 1:
            expected = (labels.shape[0], self.num_classes, *labels.shape[1:])
            if tuple(predictions.shape) != expected:
                raise ValueError(
                    "SegmentationConfusionMatrix.update: scores/logits must have shape (N, num_classes, ...) "
                    f"matching labels {tuple(labels.shape)}, i.e. {expected}; got {tuple(predictions.shape)}. "
                    "Upsample logits to the label size before updating."
                )
            return label_map_from_scores(predictions, dim=1)
        if predictions.shape != labels.shape:
            raise ValueError(
                f"SegmentationConfusionMatrix.update: predictions of shape {tuple(predictions.shape)} match neither "
                f"the labels' shape {tuple(labels.shape)} (class ids) nor (N, {self.num_classes}, ...) (logits). "
                "Upsample logits to the label size before updating."
            )
        if predictions.is_floating_point() or predictions.is_complex() or predictions.dtype == torch.bool:
            raise ValueError(
                "SegmentationConfusionMatrix.update: predictions with the labels' shape must be integer class ids, "
                f"got dtype {predictions.dtype}; pass logits with a class dimension (N, C, ...) to have them "
                "arg-maxed."
            )
        return predictions

    def _count_deferred(self, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Counts of flat (label, prediction) pairs over the count layout, without any host synchronisation.

        Out-of-range pixels go to the invalid bin instead of raising (raising needs the data on the host).
        """
        total = self._zeros(labels.device)
        for start in range(0, labels.numel(), _DEVICE_CHUNK):
            stop = start + _DEVICE_CHUNK
            # Work in int64 whatever the input dtypes: label * C overflows uint8, and comparing a uint8 tensor
            # with ignore_index=-1 would wrap it round to 255.
            chunk_labels, chunk_predictions = labels[start:stop].long(), predictions[start:stop].long()
            num_classes = self.num_classes
            in_range = (chunk_labels >= 0) & (chunk_labels < num_classes)
            in_range &= (chunk_predictions >= 0) & (chunk_predictions < num_classes)
            index = torch.add(chunk_predictions, chunk_labels, alpha=num_classes)  # label * C + prediction
            # torch.where with scalars: no data-dependent shapes, so nothing has to be read back.
            index = torch.where(in_range, index, self._invalid_bin)
            if self.ignore_index is not None:
                index = torch.where(chunk_labels == self.ignore_index, self._ignored_bin, index)
            total += _histogram(index, self._num_bins)
        return total

    def _count_checked(self, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CPU counting that validates with cheap reductions and raises ``ValueError`` on bad values.

        Elementwise passes dominate on CPU, so instead of range masks this checks ranges afterwards:
        with predictions known to be in [0, C), ``label * C + prediction`` lands in [0, C*C) exactly when the
        label is valid, so the min/max of the index catch every bad label except label == C with prediction 0,
        whose index C*C is the ignored bin; comparing that bin with the true number of ignored pixels catches it.
        """
        num_classes = self.num_classes
        total = self._zeros(labels.device)
        for start in range(0, labels.numel(), _CPU_CHUNK):
            stop = start + _CPU_CHUNK
            chunk_labels, chunk_predictions = labels[start:stop].long(), predictions[start:stop].long()
            lowest, highest = torch.aminmax(chunk_predictions)
            if lowest < 0 or highest >= num_classes:
                self._raise_invalid(predictions, labels)
            index = torch.add(chunk_predictions, chunk_labels, alpha=num_classes)
            num_ignored = 0
            if self.ignore_index is not None:
                ignored = chunk_labels == self.ignore_index
                index.masked_fill_(ignored, self._ignored_bin)
                num_ignored = int(ignored.sum())
            lowest, highest = torch.aminmax(index)
            if lowest < 0 or highest > self._ignored_bin:
                self._raise_invalid(predictions, labels)
            counts = torch.bincount(index, minlength=self._ignored_bin + 1)
            if int(counts[self._ignored_bin]) != num_ignored:
                self._raise_invalid(predictions, labels)
            total[: self._ignored_bin + 1] += counts
        return total

    def _raise_invalid(self, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        """Raise a ``ValueError`` describing the out-of-range labels/predictions (error path only, CPU)."""
        num_classes = self.num_classes
        labels, predictions = labels.long(), predictions.long()
        bad_label_mask = (labels < 0) | (labels >= num_classes)
        if self.ignore_index is not None:
            bad_label_mask &= labels != self.ignore_index
        bad_prediction_mask = (predictions < 0) | (predictions >= num_classes)
        bad_labels = labels[bad_label_mask].unique()[:10].tolist()
        bad_predictions = predictions[bad_prediction_mask].unique()[:10].tolist()
        problems = []
        if bad_labels:
            ignore = f" and not ignore_index={self.ignore_index}" if self.ignore_index is not None else ""
            problems.append(f"labels outside [0, {num_classes}){ignore}: {bad_labels}")
        if bad_predictions:
            problems.append(f"predicted class ids outside [0, {num_classes}): {bad_predictions}")
        num_invalid = int((bad_label_mask | bad_prediction_mask).sum())
        raise ValueError(
            f"SegmentationConfusionMatrix.update: {num_invalid} pixel(s) have " + "; ".join(problems) + ". "
            "Map dataset-specific void labels to ignore_index (or check num_classes) before updating."
        )

    # ------------------------------------------------------------------ distributed

    def all_reduce(self, group: Any = None) -> "SegmentationConfusionMatrix":
        """Sum the matrix over all processes of ``group`` (all of them by default), in place; returns ``self``.

        A no-op (apart from marking the metric as reduced) when ``torch.distributed`` is not initialised, so the
        same evaluation code runs single- and multi-process. Every process must call it.

        Counting each pixel exactly once is the caller's job: shard the evaluation set so that every sample is
        seen by exactly one process. In particular ``DistributedSampler`` pads the last shard by *repeating*
        samples, which would count them twice; use a sharding without padding (e.g. indices
        ``range(rank, len(dataset), world_size)``), which is why shards of different sizes are supported.

        After the reduction the matrix holds global totals, so ``update`` and a second ``all_reduce`` raise
        ``RuntimeError`` until :meth:`reset` (reducing twice would multiply the counts by the world size).
        The matrix must be on a device the backend supports (CPU for gloo, CUDA for NCCL); a process that saw
        no data contributes zeros on ``device``, or on the current CUDA device for NCCL, else on CPU.
        """
        if self._reduced:
            raise RuntimeError(
                "SegmentationConfusionMatrix.all_reduce: already reduced; reducing again would count every pixel "
                "world_size times. Call reset() before accumulating a new evaluation."
            )
        if dist.is_available() and dist.is_initialized():
            if self._counts is None:
                self._counts = self._zeros(self._default_distributed_device(group))
            dist.all_reduce(self._counts, op=dist.ReduceOp.SUM, group=group)
        self._reduced = True
        return self

    def _default_distributed_device(self, group: Any) -> torch.device:
        if self.device is not None:
            return self.device
        if dist.get_backend(group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    # ------------------------------------------------------------------ results

    def compute(self) -> dict[str, Any]:
        """Metrics of everything accumulated so far; see :func:`metrics_from_confusion_matrix` for the keys.

        This is the one place that reads the counts back to the host. It raises ``ValueError`` if invalid
        labels/predictions were seen on an accelerator since the last reset.
        """
        counts = (self._counts if self._counts is not None else self._zeros(torch.device("cpu"))).cpu()
        num_invalid = int(counts[self._invalid_bin])
        if num_invalid:
            raise ValueError(
                f"SegmentationConfusionMatrix.compute: {num_invalid} pixel(s) had a label outside "
                f"[0, {self.num_classes}) that is not ignore_index={self.ignore_index}, or a predicted class "
                "outside that range; they were left out of the matrix. Fix the labels (map void classes to "
                "ignore_index) or num_classes."
            )
        return metrics_from_confusion_matrix(counts[: self._ignored_bin].view(self.num_classes, self.num_classes))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"device={self.device}, reduced={self._reduced})"
        )


def _histogram(index: torch.Tensor, num_bins: int) -> torch.Tensor:
    """Counts of each value in ``index`` (all in ``[0, num_bins)``) as an int64 vector of length ``num_bins``."""
    if index.device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
        # histc with explicit bounds needs no host round trip (bincount reads max() back to size its output).
        # float64 keeps the integer bin positions and the counts exact.
        return torch.histc(index.double(), bins=num_bins, min=0, max=num_bins).long()
    return torch.bincount(index, minlength=num_bins)


def metrics_from_confusion_matrix(matrix: torch.Tensor | np.ndarray | Sequence[Sequence[int]]) -> dict[str, Any]:
    """Segmentation metrics from a ``(C, C)`` confusion matrix (rows: label, columns: prediction).

    Returns a dict with

    * ``mean_iou``: mean of ``per_class_iou`` over classes where it is defined (not NaN);
    * ``per_class_iou``: list of ``TP / (TP + FP + FN)``, NaN for a class absent from labels and predictions;
    * ``pixel_accuracy``: ``sum(TP) / number of counted pixels``;
    * ``mean_class_accuracy``: mean of ``per_class_accuracy`` over classes present in the labels;
    * ``per_class_accuracy``: list of ``TP / (TP + FN)``, NaN for a class absent from the labels;
    * ``confusion_matrix``: the matrix as a list of lists of ints (JSON-serialisable).

    Everything is NaN when the matrix is empty (no counted pixel).
    """
    matrix = torch.as_tensor(matrix).detach().cpu()
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(
            "metrics_from_confusion_matrix: expected a non-empty square (C, C) matrix, got shape "
            f"{tuple(matrix.shape)}."
        )
    if matrix.is_complex() or matrix.dtype == torch.bool:
        raise ValueError(f"metrics_from_confusion_matrix: matrix must hold counts, got dtype {matrix.dtype}.")
    counts = matrix.to(torch.float64)
    if bool((counts < 0).any()) or not bool(torch.isfinite(counts).all()):
        raise ValueError("metrics_from_confusion_matrix: matrix must hold finite, non-negative counts.")

    true_positives = counts.diagonal()
    label_totals = counts.sum(dim=1)  # pixels of each true class
    prediction_totals = counts.sum(dim=0)
    union = label_totals + prediction_totals - true_positives
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    # Division only where defined: 0/0 becomes NaN explicitly rather than through a warning-prone 0/0.
    per_class_iou = torch.where(union > 0, true_positives / union.clamp(min=1), nan)
    per_class_accuracy = torch.where(label_totals > 0, true_positives / label_totals.clamp(min=1), nan)
    total = counts.sum()
    pixel_accuracy = (true_positives.sum() / total).item() if total > 0 else float("nan")

    return {
        "mean_iou": _nanmean(per_class_iou),
        "per_class_iou": per_class_iou.tolist(),
        "pixel_accuracy": pixel_accuracy,
        "mean_class_accuracy": _nanmean(per_class_accuracy),
        "per_class_accuracy": per_class_accuracy.tolist(),
        "confusion_matrix": matrix.to(torch.int64).tolist() if not matrix.is_floating_point() else matrix.tolist(),
    }


def _nanmean(values: torch.Tensor) -> float:
    defined = values[~values.isnan()]
    return defined.mean().item() if defined.numel() else float("nan")
