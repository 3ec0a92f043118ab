#!/usr/bin/env python
"""Benchmark msaf_hf's confusion-matrix metrics against torchmetrics and scikit-learn.

On CamVid-sized data (by default 101 label/prediction maps of 360x480, 11 classes, 10% ignored pixels) it
times, in the same run and on the same data,

* ``msaf_hf``: one :class:`~msaf_hf.evaluation.metrics.SegmentationConfusionMatrix` giving mIoU, per-class IoU, pixel
  accuracy and mean class accuracy;
* ``torchmetrics``: what it takes there to get the same four numbers, ``MulticlassJaccardIndex(average=None)``
  plus ``MulticlassAccuracy`` micro and macro, both with the default ``validate_args=True`` and with
  ``validate_args=False``, and ``MulticlassJaccardIndex`` alone (validate_args=False) as the cheapest possible
  comparison;
* ``sklearn``: ``confusion_matrix`` over all non-ignored pixels,

checks that every implementation reports the same numbers (scikit-learn's ``jaccard_score``/``recall_score``/
``accuracy_score`` serve as the independent reference), and prints the median time of several repeats
(after a warm-up run) with the speed-up of msaf_hf over each.

Usage::

    python scripts/benchmark_metrics.py                  # table on stdout
    python scripts/benchmark_metrics.py --json out.json  # and the full result as JSON

The core is :func:`run_metrics_benchmark`, importable from other scripts. The exit status is 1 when the
implementations disagree.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msaf_hf.evaluation.metrics import SegmentationConfusionMatrix, metrics_from_confusion_matrix

__all__ = ["make_benchmark_data", "run_metrics_benchmark", "format_table", "main"]

METRIC_KEYS = ("mean_iou", "per_class_iou", "pixel_accuracy", "mean_class_accuracy")
# torchmetrics computes in float32; 1e-6 is a few float32 ulps of a value in [0, 1].
FLOAT32_TOLERANCE = 1e-6
FLOAT64_TOLERANCE = 1e-12


def make_benchmark_data(
    num_samples: int = 101,
    height: int = 360,
    width: int = 480,
    num_classes: int = 11,
    ignore_fraction: float = 0.1,
    accuracy: float = 0.7,
    ignore_index: int = 255,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random int64 ``(predictions, labels)`` of shape ``(num_samples, height, width)``.

    Labels are uniform over the classes with ``ignore_fraction`` of the pixels set to ``ignore_index``;
    predictions equal the label on about ``accuracy`` of the pixels and are uniform elsewhere, so the
    confusion matrix is realistically diagonal-heavy rather than flat.
    """
    generator = torch.Generator().manual_seed(seed)
    shape = (num_samples, height, width)
    labels = torch.randint(0, num_classes, shape, generator=generator)
    noise = torch.randint(0, num_classes, shape, generator=generator)
    predictions = torch.where(torch.rand(shape, generator=generator) < accuracy, labels, noise)
    labels[torch.rand(shape, generator=generator) < ignore_fraction] = ignore_index
    return predictions, labels


def _batches(predictions: torch.Tensor, labels: torch.Tensor, batch_size: int):
    for start in range(0, labels.shape[0], batch_size):
        yield predictions[start : start + batch_size], labels[start : start + batch_size]


def _run_msaf(predictions, labels, num_classes, ignore_index, batch_size) -> dict[str, Any]:
    metric = SegmentationConfusionMatrix(num_classes, ignore_index=ignore_index)
    for batch_predictions, batch_labels in _batches(predictions, labels, batch_size):
        metric.update(batch_predictions, batch_labels)
    return metric.compute()


def _torchmetrics_runner(validate_args: bool, jaccard_only: bool) -> Callable[..., dict[str, Any]]:
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    def run(predictions, labels, num_classes, ignore_index, batch_size) -> dict[str, Any]:
        common = {"num_classes": num_classes, "ignore_index": ignore_index, "validate_args": validate_args}
        iou = MulticlassJaccardIndex(average=None, **common).to(labels.device)
        metrics = [iou]
        if not jaccard_only:
            pixel = MulticlassAccuracy(average="micro", **common).to(labels.device)
            per_class = MulticlassAccuracy(average="macro", **common).to(labels.device)
            metrics += [pixel, per_class]
        for batch_predictions, batch_labels in _batches(predictions, labels, batch_size):
            for metric in metrics:
                metric.update(batch_predictions, batch_labels)
        per_class_iou = iou.compute().double()
        result = {"per_class_iou": per_class_iou.tolist(), "mean_iou": per_class_iou.nanmean().item()}
        if not jaccard_only:
            result["pixel_accuracy"] = pixel.compute().item()
            result["mean_class_accuracy"] = per_class.compute().item()
        return result

    return run


def _run_sklearn(predictions, labels, num_classes, ignore_index, batch_size) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix

    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for batch_predictions, batch_labels in _batches(predictions, labels, batch_size):
        valid = batch_labels != ignore_index
        matrix += confusion_matrix(
            batch_labels[valid].cpu().numpy(), batch_predictions[valid].cpu().numpy(), labels=range(num_classes)
        )
    return metrics_from_confusion_matrix(matrix)


def _sklearn_reference(predictions, labels, num_classes, ignore_index) -> dict[str, Any]:
    """Metrics straight from scikit-learn's own scorers (not via any confusion matrix of ours)."""
    from sklearn.metrics import accuracy_score, jaccard_score, recall_score

    valid = labels != ignore_index
    y_true, y_pred = labels[valid].cpu().numpy(), predictions[valid].cpu().numpy()
    classes = list(range(num_classes))
    # scikit-learn reports 0/0 as 0; turn those into NaN to follow msaf_hf's (and torchmetrics') convention.
    in_labels = np.bincount(y_true, minlength=num_classes)[:num_classes] > 0
    in_predictions = np.bincount(y_pred, minlength=num_classes)[:num_classes] > 0
    per_class_iou = jaccard_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    per_class_iou = np.where(in_labels | in_predictions, per_class_iou, np.nan)
    per_class_accuracy = recall_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    per_class_accuracy = np.where(in_labels, per_class_accuracy, np.nan)
    return {
        "per_class_iou": per_class_iou.tolist(),
        "mean_iou": float(np.nanmean(per_class_iou)),
        "pixel_accuracy": float(accuracy_score(y_true, y_pred)),
        "mean_class_accuracy": float(np.nanmean(per_class_accuracy)),
    }


def _max_difference(result: dict[str, Any], reference: dict[str, Any]) -> float:
    """Largest absolute difference over the metric keys both dicts have (NaN positions must agree)."""
    worst = 0.0
    for key in METRIC_KEYS:
        if key not in result or key not in reference:
            continue
        a = np.atleast_1d(np.asarray(result[key], dtype=np.float64))
        b = np.atleast_1d(np.asarray(reference[key], dtype=np.float64))
        if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
            return math.inf
        defined = ~np.isnan(a)
        if defined.any():
            worst = max(worst, float(np.max(np.abs(a[defined] - b[defined]))))
    return worst


def _time(fn: Callable[[], Any], repeats: int, warmup: int, device: torch.device) -> tuple[list[float], Any]:
    def once() -> tuple[float, Any]:
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start, result

    result = None
    for _ in range(warmup):
        _, result = once()
    times = []
    for _ in range(repeats):
        elapsed, result = once()
        times.append(elapsed)
    return times, result


def run_metrics_benchmark(
    num_samples: int = 101,
    height: int = 360,
    width: int = 480,
    num_classes: int = 11,
    ignore_fraction: float = 0.1,
    ignore_index: int = 255,
    batch_size: int = 1,
    repeats: int = 5,
    warmup: int = 1,
    device: str = "cpu",
    seed: int = 0,
    include_slow_baselines: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time msaf_hf's metrics against torchmetrics/scikit-learn (where installed) and check they agree.

    Returns a JSON-serialisable dict: ``config``, ``environment``, ``results`` (per implementation: ``times_s``,
    ``median_s``, ``speedup_of_msaf`` = its median / msaf_hf's median, ``max_abs_difference`` to the
    scikit-learn reference or, without scikit-learn, to msaf_hf, and ``agrees``), ``metrics`` (msaf_hf's
    numbers), ``all_agree`` and ``meets_2x_target``: msaf_hf at least twice as fast as every torchmetrics
    configuration that computes the same four metrics (``None`` without torchmetrics). "JaccardIndex only"
    computes less than msaf_hf does, so it is reported as a lower bound but not part of the target.
    ``include_slow_baselines=False`` skips the validate_args=True torchmetrics run and the scikit-learn timing,
    which take tens of seconds on CPU.
    ``threads`` sets ``torch.set_num_threads`` for the run (restored afterwards); on a loaded machine one thread
    avoids the OpenMP oversubscription stalls that otherwise dominate, and penalise, many-small-op code.
    """
    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError("run_metrics_benchmark: need repeats >= 1, warmup >= 0 and batch_size >= 1.")
    if threads is not None:
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run_metrics_benchmark(
                num_samples, height, width, num_classes, ignore_fraction, ignore_index, batch_size, repeats,
                warmup, device, seed, include_slow_baselines, threads=None,
            )
        finally:
            torch.set_num_threads(previous_threads)
    torch_device = torch.device(device)
    predictions, labels = make_benchmark_data(
        num_samples, height, width, num_classes, ignore_fraction, ignore_index=ignore_index, seed=seed
    )
    predictions, labels = predictions.to(torch_device), labels.to(torch_device)
    args = (predictions, labels, num_classes, ignore_index, batch_size)

    implementations: dict[str, Callable[..., dict[str, Any]]] = {"msaf_hf": _run_msaf}
    versions = {"torch": torch.__version__}
    try:
        import torchmetrics

        versions["torchmetrics"] = torchmetrics.__version__
        implementations["torchmetrics (validate_args=False)"] = _torchmetrics_runner(False, jaccard_only=False)
        implementations["torchmetrics JaccardIndex only (validate_args=False)"] = _torchmetrics_runner(
            False, jaccard_only=True
        )
        if include_slow_baselines:
            implementations["torchmetrics (validate_args=True)"] = _torchmetrics_runner(True, jaccard_only=False)
    except ImportError:
        versions["torchmetrics"] = None
    reference = None
    try:
        import sklearn

        versions["sklearn"] = sklearn.__version__
        if include_slow_baselines:
            implementations["sklearn confusion_matrix"] = _run_sklearn
        reference = _sklearn_reference(predictions, labels, num_classes, ignore_index)
    except ImportError:
        versions["sklearn"] = None

    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for name, implementation in implementations.items():
        times, outputs[name] = _time(lambda fn=implementation: fn(*args), repeats, warmup, torch_device)
        results[name] = {"times_s": times, "median_s": statistics.median(times)}

    reference = reference if reference is not None else outputs["msaf_hf"]
    msaf_median = results["msaf_hf"]["median_s"]
    for name, entry in results.items():
        tolerance = FLOAT32_TOLERANCE if name.startswith("torchmetrics") else FLOAT64_TOLERANCE
        difference = _max_difference(outputs[name], reference)
        entry.update(
            speedup_of_msaf=entry["median_s"] / msaf_median,
            max_abs_difference=difference,
            agrees=difference <= tolerance,
        )
    # Configurations doing the same work as msaf_hf (all four metrics); "JaccardIndex only" does less.
    torchmetrics_names = [name for name in results if name.startswith("torchmetrics") and "only" not in name]
    return {
        "config": {
            "num_samples": num_samples,
            "height": height,
            "width": width,
            "num_classes": num_classes,
            "ignore_fraction": ignore_fraction,
            "ignore_index": ignore_index,
            "batch_size": batch_size,
            "repeats": repeats,
            "warmup": warmup,
            "device": str(torch_device),
            "seed": seed,
        },
        "environment": {
            **versions,
            "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "device_name": (
                torch.cuda.get_device_name(torch_device)
                if torch_device.type == "cuda"
                else platform.processor() or platform.machine()
            ),
        },
        "reference": "sklearn jaccard_score/recall_score/accuracy_score" if versions.get("sklearn") else "msaf_hf",
        "results": results,
        "metrics": {key: outputs["msaf_hf"][key] for key in METRIC_KEYS},
        "all_agree": all(entry["agrees"] for entry in results.values()),
        "meets_2x_target": (
            all(results[name]["speedup_of_msaf"] >= 2.0 for name in torchmetrics_names) if torchmetrics_names else None
        ),
    }


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table of a :func:`run_metrics_benchmark` report."""
    config = report["config"]
    lines = [
        f"{config['num_samples']} maps of {config['height']}x{config['width']}, {config['num_classes']} classes, "
        f"{config['ignore_fraction']:.0%} ignored, batch {config['batch_size']}, device {config['device']}, "
        f"median of {config['repeats']} after {config['warmup']} warm-up "
        f"(torch {report['environment']['torch']}, {report['environment']['torch_threads']} threads)",
        "",
        f"{'implementation':<54}{'median s':>10}{'msaf_hf x faster':>18}{'max |diff|':>12}  agrees",
    ]
    for name, entry in report["results"].items():
        lines.append(
            f"{name:<54}{entry['median_s']:>10.3f}{entry['speedup_of_msaf']:>18.2f}"
            f"{entry['max_abs_difference']:>12.1e}  {'yes' if entry['agrees'] else 'NO'}"
        )
    metrics = report["metrics"]
    lines += [
        "",
        f"mIoU {metrics['mean_iou']:.6f}  pixel acc {metrics['pixel_accuracy']:.6f}  "
        f"mean class acc {metrics['mean_class_accuracy']:.6f}  (reference: {report['reference']})",
        f"all agree: {report['all_agree']}   msaf_hf >= 2x faster than torchmetrics computing the same metrics: "
        f"{report['meets_2x_target']}",
    ]
    return "\n".join(lines)


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The benchmark with the options of :func:`main`'s parser (also ``msaf-hf benchmark metrics``'s); prints the
    table and returns the report."""
    report = run_metrics_benchmark(
        num_samples=args.num_samples,
        height=args.height,
        width=args.width,
        num_classes=args.num_classes,
        ignore_fraction=args.ignore_fraction,
        batch_size=args.batch_size,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        seed=args.seed,
        include_slow_baselines=not args.skip_slow_baselines,
        threads=args.threads,
    )
    print(format_table(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_samples", "--num-samples", type=int, default=101)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--num_classes", "--num-classes", type=int, default=11)
    parser.add_argument("--ignore_fraction", "--ignore-fraction", type=float, default=0.1)
    parser.add_argument("--batch_size", "--batch-size", type=int, default=1,
                        help="maps per update() call (1 = whole-image eval)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads for the run (default: leave as is)")
    parser.add_argument(
        "--skip_slow_baselines",
        "--skip-slow-baselines",
        action="store_true",
        help="skip torchmetrics with validate_args=True and the scikit-learn timing",
    )
    parser.add_argument("--json", type=Path, help="also write the full report to this JSON file")
    args = parser.parse_args(argv)

    report = run_from_args(args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["all_agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
