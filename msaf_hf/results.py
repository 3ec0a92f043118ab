"""The results files, written and read here only: ``eval_results.json`` and ``all_results.json``.

``eval_results.json`` (one evaluation, in a model folder or where ``msaf-hf evaluate`` writes it)::

    {"mean_iou", "pixel_accuracy", "mean_class_accuracy",     # floats, null when undefined
     "per_class_iou", "per_class_accuracy",                    # lists in class-id order, null for absent classes
     "class_names", "iou_by_class",                            # names in class-id order; {name: IoU}
     "dataset_name", "dataset_split", "dataset_id", "dataset_config",   # what was evaluated (when known)
     ...}                                                      # the writer's extras: step, num_images, model, ...

``all_results.json`` (a training output folder): ``{"train_loss", "global_step", "eval_<key>": ...}`` with the
``eval_results.json`` keys of the final evaluation prefixed by ``eval_``.

Readers (the model card, :mod:`msaf_hf.hub`) go through :func:`normalize_eval_results` / :func:`read_eval_results`,
which also accept the metric names of transformers' and ``evaluate``'s segmentation results. This module imports
only the standard library, so the Hub code can read results without torch.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ALL_RESULTS_FILE",
    "CONFUSION_MATRIX_FIGURE",
    "EVAL_RESULTS_FILE",
    "FIGURE_TITLES",
    "PER_CLASS_IOU_FIGURE",
    "TRAINING_CURVES_FIGURE",
    "HYPERPARAMETERS_FILE",
    "TRAIN_RESULTS_FILE",
    "all_results",
    "dataset_description",
    "eval_results",
    "figures_in",
    "nan_to_none",
    "normalize_eval_results",
    "read_eval_results",
    "write_results_file",
]

#: One evaluation's metrics (the Hub reads this for the model card's model-index).
EVAL_RESULTS_FILE = "eval_results.json"
#: Combined train/eval metrics of a training output folder (``eval_``-prefixed keys).
ALL_RESULTS_FILE = "all_results.json"
#: The last training step's loss and counters, in the ``final/`` folder.
TRAIN_RESULTS_FILE = "train_results.json"
#: The training hyperparameters the model card lists: a flat ``{name: value}`` mapping.
HYPERPARAMETERS_FILE = "training_hyperparameters.json"
#: The evaluation figures written beside the results (msaf_hf.visualization.figures draws them).
CONFUSION_MATRIX_FIGURE = "confusion_matrix.png"
PER_CLASS_IOU_FIGURE = "per_class_iou.png"
TRAINING_CURVES_FIGURE = "training_curves.png"
#: File name -> caption, in the order the model card shows them.
FIGURE_TITLES: dict[str, str] = {
    PER_CLASS_IOU_FIGURE: "Per-class IoU",
    CONFUSION_MATRIX_FIGURE: "Confusion matrix (each row normalised by the pixels of that class)",
    TRAINING_CURVES_FIGURE: "Training loss and validation mIoU",
}

# Metric keys of eval_results.json, and the names other tools (transformers / evaluate's mean_iou) use for them.
_METRIC_ALIASES = {
    "mean_iou": "mean_iou",
    "miou": "mean_iou",
    "pixel_accuracy": "pixel_accuracy",
    "overall_accuracy": "pixel_accuracy",
    "mean_class_accuracy": "mean_class_accuracy",
    "mean_accuracy": "mean_class_accuracy",
    "per_class_iou": "per_class_iou",
    "per_category_iou": "per_class_iou",
    "per_class_accuracy": "per_class_accuracy",
    "per_category_accuracy": "per_class_accuracy",
    "loss": "loss",
}
_DATASET_KEYS = ("dataset_name", "dataset_id", "dataset_split", "dataset_config")


def nan_to_none(value: Any) -> float | None:
    """``value`` as a float, or None when it is None or NaN (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def eval_results(metrics: Mapping[str, Any], id2label: Mapping[int, str], **extra: Any) -> dict[str, Any]:
    """The ``eval_results.json`` content of ``metrics`` (``msaf_hf.evaluation.metrics`` keys), JSON-ready.

    ``extra`` keys (``step``, ``num_images``, the :func:`dataset_description` keys, ...) are added as given.
    """
    names = [id2label[i] for i in range(len(id2label))]
    out: dict[str, Any] = {
        "mean_iou": nan_to_none(metrics["mean_iou"]),
        "pixel_accuracy": nan_to_none(metrics["pixel_accuracy"]),
        "mean_class_accuracy": nan_to_none(metrics["mean_class_accuracy"]),
        "per_class_iou": [nan_to_none(v) for v in metrics["per_class_iou"]],
        "per_class_accuracy": [nan_to_none(v) for v in metrics["per_class_accuracy"]],
        "class_names": names,
        "iou_by_class": {name: nan_to_none(v) for name, v in zip(names, metrics["per_class_iou"], strict=False)},
    }
    out.update(extra)
    return out


def all_results(train_loss: float | None, global_step: int, evaluation: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``all_results.json`` content: the training counters plus ``evaluation`` (an :func:`eval_results` dict)
    with ``eval_``-prefixed keys."""
    return {"train_loss": train_loss, "global_step": global_step,
            **{f"eval_{k}": v for k, v in (evaluation or {}).items()}}


def dataset_description(data_args: Any) -> dict[str, Any]:
    """The ``dataset_*`` keys of the results of a run on ``data_args`` (a ``msaf_hf.data.DataArguments``)."""
    if data_args.synthetic:
        name = "synthetic shapes (msaf_hf.data)"
    elif data_args.dataset_name is not None:
        name = data_args.dataset_name
    elif data_args.cityscapes_root is not None:
        name = "Cityscapes"
    else:
        name = data_args.image_dir
    out = {"dataset_name": os.path.basename(str(name).rstrip("/")) if name and os.path.isdir(str(name)) else name,
           "dataset_split": data_args.eval_split if data_args.eval_split_fraction is None else
           f"{data_args.eval_split_fraction:g} of {data_args.train_split}"}
    if data_args.dataset_name is not None and not os.path.exists(data_args.dataset_name):
        out["dataset_id"] = data_args.dataset_name
    if data_args.dataset_config_name:
        out["dataset_config"] = data_args.dataset_config_name
    return out


def write_results_file(path: str | os.PathLike, content: Mapping[str, Any]) -> Path:
    """Write one results file as indented JSON (NaN written as null), creating its folder."""
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_without_nan(content), indent=2) + "\n", encoding="utf-8")
    return path


def _without_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(v) for v in value]
    return value


def normalize_eval_results(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Canonical eval-results dict: ``mean_iou``, ``pixel_accuracy``, ``mean_class_accuracy``,
    ``per_class_iou``, ``per_class_accuracy`` (None/NaN for absent classes), ``class_names``,
    ``step`` and the ``dataset_*`` keys, from trainer- or ``evaluate``-style keys (an ``eval_``
    prefix is accepted). Unknown keys are ignored."""
    if not raw:
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key[len("eval_") :] if key.startswith("eval_") else key
        canonical = _METRIC_ALIASES.get(name)
        if canonical in ("per_class_iou", "per_class_accuracy"):
            if value is not None:
                out[canonical] = [_as_float(v) for v in list(value)]
        elif canonical is not None:
            number = _as_float(value)
            if number is not None and not math.isnan(number):
                out[canonical] = number
        elif name in _DATASET_KEYS and value:
            out[name] = str(value)
        elif name == "class_names" and isinstance(value, (list, tuple)):
            out["class_names"] = [str(v) for v in value]
        elif name == "step" and isinstance(value, int) and not isinstance(value, bool):
            out["step"] = value
    return out


def read_eval_results(folder: str | os.PathLike) -> dict[str, Any]:
    """The normalized results of ``folder``: its :data:`EVAL_RESULTS_FILE`, else the ``eval_*`` keys of its
    :data:`ALL_RESULTS_FILE`; empty when neither is there (or readable)."""
    folder = Path(folder)
    evals = read_json(folder / EVAL_RESULTS_FILE)
    if evals is None:
        everything = read_json(folder / ALL_RESULTS_FILE) or {}
        evals = {k: v for k, v in everything.items() if k.startswith("eval_")} or None
    return normalize_eval_results(evals)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file's content, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def figures_in(folder: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(caption, file name)`` of the evaluation figures present in ``folder``, in card order."""
    folder = Path(folder)
    return [(title, name) for name, title in FIGURE_TITLES.items() if (folder / name).is_file()]
