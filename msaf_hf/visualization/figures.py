"""Evaluation figures (matplotlib, ``pip install msaf_hf[viz]``): a normalised confusion matrix, per-class IoU bars
and, from a training run, loss and mIoU curves over steps.

`write_evaluation_figures` writes them as PNGs beside the JSON results; the model card embeds the ones it finds
(`figures_in`). Without matplotlib the figures are skipped with one log line, never an error.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..results import (
    CONFUSION_MATRIX_FIGURE,
    FIGURE_TITLES,
    PER_CLASS_IOU_FIGURE,
    TRAINING_CURVES_FIGURE,
    figures_in,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CONFUSION_MATRIX_FIGURE",
    "FIGURE_TITLES",
    "PER_CLASS_IOU_FIGURE",
    "TRAINING_CURVES_FIGURE",
    "figures_in",
    "plot_confusion_matrix",
    "plot_per_class_iou",
    "plot_training_curves",
    "write_evaluation_figures",
    "write_result_figures",
]


def _pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(staging, dpi=fig.dpi, bbox_inches="tight")
    os.replace(staging, path)
    return path


def plot_confusion_matrix(confusion_matrix: Any, class_names: Sequence[str], path: str | os.PathLike[str]) -> Path:
    """Heatmap of the confusion matrix with each row (true class) normalised to sum to 1 -- the diagonal is each
    class's recall. Cells are annotated in percent up to 25 classes. Rows of classes absent from the data stay blank."""
    plt = _require_pyplot()
    matrix = np.asarray(confusion_matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(totals > 0, matrix / np.where(totals > 0, totals, 1), np.nan)
    n = len(class_names)
    side = min(max(4.0, 0.45 * n + 2.0), 24.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=100)
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(
        range(n), labels=class_names, rotation=60, ha="right", rotation_mode="anchor", fontsize=8 if n > 20 else 9
    )
    ax.set_yticks(range(n), labels=class_names, fontsize=8 if n > 20 else 9)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix (row-normalised)")
    if n <= 25:
        for row in range(n):
            for column in range(n):
                value = normalised[row, column]
                if not math.isnan(value) and value >= 0.005:
                    ax.text(
                        column,
                        row,
                        f"{100 * value:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if value > 0.5 else "black",
                    )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class's pixels")
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def plot_per_class_iou(
    per_class_iou: Sequence[float | None],
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    mean_iou: float | None = None,
) -> Path:
    """Horizontal bars of each class's IoU (in percent), with the mIoU as a dashed line. Classes without a value
    (absent from the data) are marked n/a."""
    plt = _require_pyplot()
    values = [float("nan") if v is None else float(v) for v in per_class_iou]
    n = len(values)
    fig, ax = plt.subplots(figsize=(7.0, max(2.5, 0.32 * n + 1.2)), dpi=100)
    positions = np.arange(n)
    bars = [0.0 if math.isnan(v) else 100 * v for v in values]
    ax.barh(positions, bars, color="#4c72b0")
    for y, v in zip(positions, values, strict=False):
        ax.text(
            (0.0 if math.isnan(v) else 100 * v) + 1,
            y,
            "n/a" if math.isnan(v) else f"{100 * v:.1f}",
            va="center",
            fontsize=8,
        )
    if mean_iou is None:
        finite = [v for v in values if not math.isnan(v)]
        mean_iou = sum(finite) / len(finite) if finite else None
    if mean_iou is not None and not math.isnan(mean_iou):
        ax.axvline(100 * mean_iou, color="#c44e52", linestyle="--", linewidth=1.2, label=f"mIoU {100 * mean_iou:.1f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(positions, labels=class_names, fontsize=8 if n > 20 else 9)
    ax.invert_yaxis()
    ax.set_xlim(0, 108)
    ax.set_xlabel("IoU (%)")
    ax.set_title("Per-class IoU")
    ax.grid(axis="x", alpha=0.3)
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def plot_training_curves(log_history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path | None:
    """Training loss (left axis) and validation mIoU (right panel) over optimiser steps, from a trainer's
    ``log_history`` (entries with ``step`` and ``loss`` / ``mean_iou``). Returns None when there is nothing to plot."""
    loss = [(e["step"], e["loss"]) for e in log_history if _finite(e.get("loss")) and "step" in e]
    miou = [(e["step"], e["mean_iou"]) for e in log_history if _finite(e.get("mean_iou")) and "step" in e]
    if not loss and not miou:
        return None
    plt = _require_pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.6), dpi=100)
    if loss:
        axes[0].plot(*zip(*loss, strict=False), color="#4c72b0", linewidth=1.2)
    axes[0].set(title="Training loss", xlabel="step", ylabel="loss")
    if miou:
        steps, values = zip(*miou, strict=False)
        axes[1].plot(steps, [100 * v for v in values], color="#55a868", marker="o", markersize=3, linewidth=1.2)
        best = max(range(len(values)), key=values.__getitem__)
        axes[1].annotate(
            f"best {100 * values[best]:.1f}",
            (steps[best], 100 * values[best]),
            fontsize=8,
            textcoords="offset points",
            xytext=(-10, 6),
            ha="right",
        )
    axes[1].set(title="Validation mIoU", xlabel="step", ylabel="mIoU (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        return _save(fig, Path(path))
    finally:
        plt.close(fig)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _MissingMatplotlib(ImportError):
    pass


def _require_pyplot() -> Any:
    plt = _pyplot()
    if plt is None:
        raise _MissingMatplotlib("matplotlib is not installed: pip install 'msaf_hf[viz]'")
    return plt


def write_evaluation_figures(
    folder: str | os.PathLike[str],
    *,
    confusion_matrix: Any = None,
    class_names: Sequence[str] | None = None,
    per_class_iou: Sequence[float | None] | None = None,
    mean_iou: float | None = None,
    log_history: Sequence[Mapping[str, Any]] | None = None,
    prefix: str = "",
) -> list[Path]:
    """Write the figures the given data allows into ``folder`` (``prefix`` + `CONFUSION_MATRIX_FIGURE`,
    `PER_CLASS_IOU_FIGURE`, `TRAINING_CURVES_FIGURE`); returns their paths.

    Without matplotlib nothing is written and one line is logged. A figure that fails to draw is logged and
    skipped: figures never fail an evaluation or a training run.
    """
    if _pyplot() is None:
        logger.info("matplotlib is not installed: evaluation figures skipped (pip install 'msaf_hf[viz]').")
        return []
    folder = Path(folder)
    written: list[Path] = []
    jobs = []
    if confusion_matrix is not None and class_names:
        jobs.append(
            lambda: plot_confusion_matrix(confusion_matrix, class_names, folder / f"{prefix}{CONFUSION_MATRIX_FIGURE}")
        )
    if per_class_iou is not None and class_names:
        jobs.append(
            lambda: plot_per_class_iou(per_class_iou, class_names, folder / f"{prefix}{PER_CLASS_IOU_FIGURE}", mean_iou)
        )
    if log_history:
        jobs.append(lambda: plot_training_curves(log_history, folder / f"{prefix}{TRAINING_CURVES_FIGURE}"))
    for job in jobs:
        try:
            path = job()
        except Exception as error:  # a figure is a bonus: never lose the results over it
            logger.warning("Could not draw an evaluation figure: %s: %s", type(error).__name__, error)
            continue
        if path is not None:
            written.append(path)
    return written


def write_result_figures(
    results_file: str | os.PathLike[str],
    results: Mapping[str, Any] | None,
    *,
    confusion_matrix: Any = None,
    log_history: Sequence[Mapping[str, Any]] | None = None,
) -> list[Path]:
    """The figures of a results JSON (the keys of ``eval_results.json``: ``class_names``, ``per_class_iou``,
    ``mean_iou``, optionally ``confusion_matrix``), written beside it: ``confusion_matrix.png`` etc. for
    ``eval_results.json``, ``<stem>_confusion_matrix.png`` etc. for any other file name. ``log_history`` (a
    trainer's) adds the training curves."""
    results_file = Path(results_file)
    results = results or {}
    prefix = "" if results_file.stem == "eval_results" else f"{results_file.stem}_"
    if confusion_matrix is None:
        confusion_matrix = results.get("confusion_matrix")
    return write_evaluation_figures(
        results_file.parent,
        confusion_matrix=confusion_matrix,
        class_names=results.get("class_names"),
        per_class_iou=results.get("per_class_iou"),
        mean_iou=results.get("mean_iou"),
        log_history=log_history,
        prefix=prefix,
    )
