"""Evaluating DSNet: metrics, (distributed) evaluation and the ``msaf-hf evaluate`` command.

* :mod:`.metrics`: ``SegmentationConfusionMatrix`` and the metrics computed from a confusion matrix;
* :mod:`.evaluator`: :func:`evaluate` (every image scored once across processes) and :func:`predict` (test-time
  augmentation);
* :mod:`.cli`: ``EvaluationArguments`` and :func:`main`.

The results files (``eval_results.json`` / ``all_results.json``) are :mod:`msaf_hf.results`' (read by the Hub card and
the figures as well, without this package). Names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SegmentationConfusionMatrix": "metrics",
    "metrics_from_confusion_matrix": "metrics",
    "EvaluationResult": "evaluator",
    "evaluate": "evaluator",
    "format_results_table": "evaluator",
    "predict": "evaluator",
    "results_to_json": "evaluator",
    "shard_indices": "evaluator",
    "EvaluationArguments": "cli",
    "main": "cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
