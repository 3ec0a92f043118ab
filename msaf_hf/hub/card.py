"""The model card of a saved DSNet folder: what is read from the folder, and how the card is rendered.

`render_model_card` builds a `huggingface_hub.ModelCard`: YAML metadata with a ``model-index`` that round-trips
through huggingface_hub's own parser, and a body rendered from the Jinja2 template ``model_card.md`` (the
repository's top-level file, installed as ``msaf_hf/hub/templates/model_card.md``).

Files read from a folder to fill the card (all optional; written by the trainer):

* ``config.json`` (``model_type``, ``head_type``, ``base_channels``, ``fusion_type``, ``num_labels``,
  ``id2label``, ``auto_map``);
* ``preprocessor_config.json`` (input size: ``crop_size`` or ``size``);
* ``*.safetensors`` headers (parameter count);
* `EVAL_RESULTS_FILE` (``eval_results.json``): ``{"mean_iou", "pixel_accuracy", "mean_class_accuracy",
  "per_class_iou": [...], "per_class_accuracy": [...], "dataset_name", "dataset_id", "dataset_split",
  "dataset_config"}`` (``eval_``-prefixed keys and the names used by the ``evaluate`` ``mean_iou`` metric --
  ``overall_accuracy``, ``mean_accuracy``, ``per_category_iou`` -- are accepted too); `ALL_RESULTS_FILE`
  (``all_results.json``) is used as a fallback;
* `HYPERPARAMETERS_FILE` (``training_hyperparameters.json``): a flat ``{name: value}`` mapping;
* the evaluation figures (``confusion_matrix.png``, ``per_class_iou.png``, ``training_curves.png``), embedded.

The results files' schema, names and reading are :mod:`msaf_hf.results`' (their one owner).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open

from ..presets import packaged_path
from ..results import (
    ALL_RESULTS_FILE,
    EVAL_RESULTS_FILE,
    HYPERPARAMETERS_FILE,
    figures_in,
    normalize_eval_results,
    read_eval_results,
    read_json,
)
from .redaction import drop_secrets

__all__ = [
    "ALL_RESULTS_FILE",
    "EVAL_RESULTS_FILE",
    "HYPERPARAMETERS_FILE",
    "default_template_path",
    "load_card_inputs",
    "normalize_eval_results",
    "render_model_card",
    "safetensors_num_parameters",
]

logger = logging.getLogger(__name__)


_DEFAULT_TAGS = ("dsnet", "msaf", "semantic-segmentation", "real-time", "vision", "image-segmentation")
_FUSION_NAMES = {
    "msaf": "MSAF (Multi-Scale Attention Fusion)",
    "aff": "AFF (local + global attention fusion)",
    "add": "element-wise sum (no attention)",
}
_METRIC_SPECS = (
    # key, model-index metric type, pretty name
    ("mean_iou", "mean_iou", "Mean IoU"),
    ("pixel_accuracy", "pixel_accuracy", "Pixel accuracy"),
    ("mean_class_accuracy", "mean_accuracy", "Mean class accuracy"),
)


_BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


def safetensors_num_parameters(folder: str | os.PathLike[str]) -> int | None:
    """Number of parameters in the top-level ``*.safetensors`` files of ``folder``, read from their headers only
    (BatchNorm running statistics are buffers, not parameters, and are not counted). None when there are no
    weights or a file is not a readable safetensors file."""
    total = 0
    found = False
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            # framework="numpy" so that counting needs no torch; only the header is parsed, no tensor is read.
            with safe_open(str(path), framework="numpy") as handle:
                shapes = {name: handle.get_slice(name).get_shape() for name in handle.keys()}
        except Exception:  # noqa: BLE001 - safetensors raises its own error types for corrupt files
            return None
        for name, shape in shapes.items():
            if name.endswith(_BUFFER_SUFFIXES):
                continue
            total += math.prod(int(d) for d in shape)
            found = True
    return total if found else None


def _input_size_from_preprocessor(cfg: Mapping[str, Any]) -> tuple[int, int] | int | None:
    """Network input size implied by an image-processor config (``crop_size``, else ``size`` when
    resizing is enabled); None when images are fed at their own size."""
    keys = ["crop_size"]
    if cfg.get("do_resize", True):
        keys.append("size")
    for key in keys:
        value = cfg.get(key)
        if isinstance(value, Mapping):
            if "height" in value and "width" in value:
                return int(value["height"]), int(value["width"])
            if "shortest_edge" in value:
                return int(value["shortest_edge"])
        elif isinstance(value, (list, tuple)) and len(value) == 2:
            return int(value[0]), int(value[1])
        elif isinstance(value, int):
            return value
    return None


def _format_input_size(size: Any) -> str | None:
    if size is None:
        return None
    if isinstance(size, str):
        return size
    if isinstance(size, int):
        return f"{size} × {size}"
    if isinstance(size, Sequence) and len(size) == 2:
        return f"{int(size[0])} × {int(size[1])} (H × W)"
    return str(size)


def _format_params(n: int | None) -> str | None:
    if n is None:
        return None
    if n >= 1_000_000:
        return f"{n / 1e6:.2f}M ({n:,})"
    if n >= 1_000:
        return f"{n / 1e3:.1f}K ({n:,})"
    return f"{n:,}"


def _format_metric(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if 0.0 <= value <= 1.0:
        return f"{value * 100:.2f}%"
    return f"{value:.4g}"


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value).replace("|", "\\|").replace("\n", " ")


def load_card_inputs(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Card inputs found in a folder: ``eval_results`` (normalized) and ``training_hyperparameters``.

    Reads `EVAL_RESULTS_FILE` (else the ``eval_*`` keys of `ALL_RESULTS_FILE`) and
    `HYPERPARAMETERS_FILE`; missing or unreadable files are skipped.
    """
    folder = Path(folder)
    out: dict[str, Any] = {}
    normalized = read_eval_results(folder)
    if normalized:
        out["eval_results"] = normalized
    hparams = read_json(folder / HYPERPARAMETERS_FILE)
    if hparams:
        out["training_hyperparameters"] = hparams
    return out


def default_template_path() -> Path:
    """The Jinja2 model-card template (the repository's top-level ``model_card.md``; found by
    :func:`msaf_hf.presets.packaged_path`, in a source checkout and an installed package alike)."""
    return packaged_path("model_card.md")


# ---------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------


def render_model_card(
    model_dir_or_config: str | os.PathLike[str] | Mapping[str, Any] | Any,
    *,
    repo_id: str,
    eval_results: Mapping[str, Any] | None = None,
    dataset_name: str | None = None,
    dataset_id: str | None = None,
    dataset_split: str | None = None,
    dataset_config: str | None = None,
    training_hyperparameters: Mapping[str, Any] | None = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
    num_parameters: int | None = None,
    input_size: tuple[int, int] | int | str | None = None,
    tags: Sequence[str] | None = None,
    model_summary: str | None = None,
    description: str | None = None,
    converted: bool = False,
    has_remote_code: bool | None = None,
    read_folder_results: bool = True,
    template_path: str | os.PathLike[str] | None = None,
    hub_url: str = "https://huggingface.co",
) -> ModelCard:
    """Render the model card of a DSNet checkpoint.

    Args:
        model_dir_or_config: A saved folder (``config.json`` is read, plus the card inputs of
            `load_card_inputs` when ``read_folder_results``), a config dict, or a config object
            with ``to_dict()``. Missing keys are tolerated.
        repo_id: Hub id used in the title, the usage snippets and ``model-index``.
        eval_results: Metrics (keys ``mean_iou``, ``pixel_accuracy``, ``mean_class_accuracy``,
            ``per_class_iou``, ``per_class_accuracy``; see `normalize_eval_results`). Overrides the
            folder's `EVAL_RESULTS_FILE`. May also carry the ``dataset_*`` keys.
        dataset_name / dataset_id / dataset_split / dataset_config: Evaluation / training dataset
            (pretty name, Hub dataset id, split, configuration).
        training_hyperparameters: ``{name: value}``; secret-looking entries are dropped.
        base_model: Hub id of the checkpoint this one was fine-tuned from.
        license: SPDX-like Hub license id.
        num_parameters: Parameter count (default: summed from the safetensors headers).
        input_size: ``(height, width)``, an int, or a string (default: from
            ``preprocessor_config.json``).
        tags: Extra tags (the DSNet tags are always present).
        model_summary / description: One-line summary under the title / extra paragraph.
        converted: The checkpoint was converted from published weights (no training here).
        has_remote_code: Whether the repo ships ``*.py`` model code (default: detected from the
            folder or ``auto_map`` in the config).
        read_folder_results: Read `EVAL_RESULTS_FILE` / `HYPERPARAMETERS_FILE` from the folder
            when the corresponding argument is ``None``.
        template_path: Jinja2 template (default: ``model_card.md``).
        hub_url: Base URL for links in the body.

    Returns:
        A `huggingface_hub.ModelCard`; ``card.data.eval_results`` holds the metrics as
        `huggingface_hub.EvalResult` objects.
    """
    folder: Path | None = None
    if isinstance(model_dir_or_config, (str, os.PathLike)):
        folder = Path(model_dir_or_config)
        config = read_json(folder / "config.json") or {}
    elif isinstance(model_dir_or_config, Mapping):
        config = dict(model_dir_or_config)
    elif hasattr(model_dir_or_config, "to_dict"):
        config = dict(model_dir_or_config.to_dict())
    else:
        raise TypeError(f"Expected a folder, a config dict or a config object, got {type(model_dir_or_config)!r}")

    if folder is not None and read_folder_results:
        found = load_card_inputs(folder)
        if eval_results is None:
            eval_results = found.get("eval_results")
        if training_hyperparameters is None:
            training_hyperparameters = found.get("training_hyperparameters")
    evals = normalize_eval_results(eval_results)
    dataset_name = dataset_name or evals.get("dataset_name")
    dataset_id = dataset_id or evals.get("dataset_id")
    dataset_split = dataset_split or evals.get("dataset_split")
    dataset_config = dataset_config or evals.get("dataset_config")

    if folder is not None:
        if num_parameters is None:
            num_parameters = safetensors_num_parameters(folder)
        if input_size is None:
            input_size = _input_size_from_preprocessor(read_json(folder / "preprocessor_config.json") or {})
        if has_remote_code is None:
            has_remote_code = any(folder.glob("*.py"))
    if has_remote_code is None:
        has_remote_code = bool(config.get("auto_map"))

    model_name = repo_id.split("/")[-1]
    model_type = config.get("model_type") or "dsnet"
    id2label = config.get("id2label") or {}
    num_labels = config.get("num_labels") or (len(id2label) if id2label else None)

    # -- metadata -------------------------------------------------------------------------------
    eval_result_objs: list[EvalResult] = []
    metric_rows: list[tuple[str, str]] = []
    present = [(k, t, n) for k, t, n in _METRIC_SPECS if k in evals]
    if present:
        if not (dataset_id or dataset_name):
            logger.warning("Evaluation results without a dataset: model-index will say 'custom'.")
        for key, metric_type, pretty in present:
            value = float(evals[key])
            metric_rows.append((pretty, _format_metric(value)))
            eval_result_objs.append(
                EvalResult(
                    task_type="image-segmentation",
                    task_name="Semantic Segmentation",
                    dataset_type=dataset_id or dataset_name or "custom",
                    dataset_name=dataset_name or dataset_id or "custom dataset",
                    dataset_split=dataset_split,
                    dataset_config=dataset_config,
                    metric_type=metric_type,
                    metric_name=pretty,
                    metric_value=value,
                )
            )
    if "loss" in evals:
        metric_rows.append(("Loss", f"{evals['loss']:.4f}"))
    if metric_rows and "step" in evals:
        metric_rows.append(("Evaluated at training step", str(evals["step"])))

    all_tags = list(dict.fromkeys([*_DEFAULT_TAGS, *(tags or [])]))
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-segmentation",
        license=license,
        tags=all_tags,
        datasets=[dataset_id] if dataset_id else None,
        base_model=base_model,
        metrics=["mean_iou", "accuracy"] if eval_result_objs else None,
        model_name=model_name if eval_result_objs else None,
        eval_results=eval_result_objs or None,
    )

    # -- body -------------------------------------------------------------------------------------
    variant_rows: list[tuple[str, str]] = [("Architecture", "DSNet")]
    fusion = config.get("fusion_type") or ("msaf" if model_type == "dsnet" else None)
    optional_rows = (
        ("Fusion", _FUSION_NAMES.get(str(fusion), fusion) if fusion else None),
        ("Head type", config.get("head_type")),
        ("Base width (channels)", config.get("base_channels")),
        ("Number of classes", num_labels),
        ("Parameters", _format_params(num_parameters)),
        ("Input size used", _format_input_size(input_size)),
        ("Auxiliary heads", {True: "yes (training only)", False: "no"}.get(config.get("use_auxiliary_heads"))),
        ("Deploy mode", "yes (BatchNorm folded into convolutions)" if config.get("deploy_mode") else None),
    )
    variant_rows += [(name, _format_value(value)) for name, value in optional_rows if value is not None]

    per_class_rows: list[dict[str, Any]] = []
    per_iou = evals.get("per_class_iou") or []
    per_acc = evals.get("per_class_accuracy") or []
    class_names = evals.get("class_names") or []
    for idx, iou in enumerate(per_iou):
        label = id2label.get(str(idx), id2label.get(idx)) if id2label else None
        if label is None:
            label = class_names[idx] if idx < len(class_names) else f"class_{idx}"
        per_class_rows.append(
            {
                "id": idx,
                "label": _format_value(label),
                "iou": _format_metric(iou),
                "accuracy": _format_metric(per_acc[idx] if idx < len(per_acc) else None),
            }
        )

    hyper = drop_secrets(training_hyperparameters or {})
    hyperparameter_rows = [(k, _format_value(v)) for k, v in hyper.items()]
    dataset_display = dataset_name or dataset_id
    if model_summary is None:
        head = config.get("head_type")
        model_summary = "DSNet" + (f" ({head} head)" if head else "") + " for semantic segmentation"
        if dataset_display and not converted:
            model_summary += f", fine-tuned on {dataset_display}"
        if num_labels:
            model_summary += f" ({num_labels} classes)"
        model_summary += "."

    template = Path(template_path) if template_path is not None else default_template_path()
    kwargs: dict[str, Any] = dict(
        model_name=model_name,
        model_summary=model_summary,
        model_type=model_type,
        repo_id=repo_id,
        base_model=base_model,
        converted=converted,
        extra_description=description,
        variant_rows=variant_rows,
        metric_rows=metric_rows,
        per_class_rows=per_class_rows,
        has_per_class_accuracy=bool(per_acc),
        dataset_display=dataset_display,
        dataset_id=dataset_id,
        dataset_split=dataset_split,
        hyperparameter_rows=hyperparameter_rows,
        has_remote_code=has_remote_code,
        hub_url=hub_url.rstrip("/"),
        figures=figures_in(folder) if folder is not None else [],
    )
    return ModelCard.from_template(card_data, template_path=str(template), **kwargs)
