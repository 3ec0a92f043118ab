"""Sharing DSNet checkpoints on the Hugging Face Hub: model cards, pushes, background pushes.

Everything here works on a *saved folder* (the output of ``save_pretrained``, a training output
directory or a converted checkpoint), so it does not need the model classes and never imports
torch or transformers.

* `render_model_card` builds a `huggingface_hub.ModelCard` (YAML metadata with a ``model-index``
  that round-trips through huggingface_hub's own parser, plus a body rendered from the Jinja2
  template ``model_card.md``).
* `push_folder_to_hub` uploads the shareable part of a folder (weights, configs, remote code,
  metrics) plus a freshly rendered ``README.md`` in a single commit, without modifying the folder.
* `BackgroundPusher` pushes snapshots of a training output from a background thread, with the
  ``hub_strategy`` semantics of transformers' Trainer (see `plan_hub_push`); it never raises into
  the training loop.

Files read from a folder to fill the card (all optional; written by the trainer):

* ``config.json`` (``model_type``, ``head_type``, ``base_channels``, ``fusion_type``,
  ``num_labels``, ``id2label``, ``auto_map``);
* ``preprocessor_config.json`` (input size: ``crop_size`` or ``size``);
* ``*.safetensors`` headers (parameter count);
* `EVAL_RESULTS_FILE` (``eval_results.json``): ``{"mean_iou", "pixel_accuracy",
  "mean_class_accuracy", "per_class_iou": [...], "per_class_accuracy": [...], "dataset_name",
  "dataset_id", "dataset_split", "dataset_config"}`` (``eval_``-prefixed keys and the names used
  by the ``evaluate`` ``mean_iou`` metric -- ``overall_accuracy``, ``mean_accuracy``,
  ``per_category_iou`` -- are accepted too); `ALL_RESULTS_FILE` (``all_results.json``) is used
  as a fallback;
* `HYPERPARAMETERS_FILE` (``training_hyperparameters.json``): a flat ``{name: value}`` mapping.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import math
import os
import re
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import (
    CommitInfo,
    CommitOperationAdd,
    CommitOperationDelete,
    EvalResult,
    HfApi,
    ModelCard,
    ModelCardData,
    get_token,
)
from huggingface_hub import constants as hf_constants

__all__ = [
    "ALL_RESULTS_FILE",
    "DEFAULT_ALLOW_PATTERNS",
    "EVAL_RESULTS_FILE",
    "HUB_STRATEGIES",
    "HYPERPARAMETERS_FILE",
    "TRAINING_STATE_PATTERNS",
    "CHECKPOINT_EXCLUDE_PATTERNS",
    "BackgroundPusher",
    "HubPushPlan",
    "PushResult",
    "collect_upload_files",
    "load_card_inputs",
    "normalize_eval_results",
    "plan_hub_push",
    "push_folder_to_hub",
    "redact",
    "render_model_card",
]

logger = logging.getLogger(__name__)

#: Metrics written by the trainer after evaluation, read into the model card.
EVAL_RESULTS_FILE = "eval_results.json"
#: Flat ``{name: value}`` training hyperparameters, read into the model card.
HYPERPARAMETERS_FILE = "training_hyperparameters.json"
#: Combined train/eval metrics (``eval_``-prefixed keys); fallback for `EVAL_RESULTS_FILE`.
ALL_RESULTS_FILE = "all_results.json"

#: Top-level files of a folder that are uploaded (the README is generated).
DEFAULT_ALLOW_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "preprocessor_config.json",
    "*.py",
    EVAL_RESULTS_FILE,
    ALL_RESULTS_FILE,
    "train_results.json",
    HYPERPARAMETERS_FILE,
)
#: Training state that is never uploaded from the model folder (only inside a checkpoint folder
#: pushed on purpose with ``checkpoint_folder``).
TRAINING_STATE_PATTERNS: tuple[str, ...] = (
    "optimizer*.bin",
    "optimizer*.pt",
    "optimizer*.safetensors",
    "scheduler*.bin",
    "scheduler*.pt",
    "scaler*.pt",
    "random_states*.pkl",
    "rng_state*.pth",
    "trainer_state.json",
    "training_args.bin",
    "training_args.json",
    "checkpoint-*",
)

#: Files of a checkpoint folder that are never uploaded, even with ``checkpoint_folder``: the RNG states (pickles of
#: this machine's generators, useless elsewhere and unsafe to unpickle from a download). Resuming from a downloaded
#: checkpoint works without them (Accelerate then keeps the fresh generators).
CHECKPOINT_EXCLUDE_PATTERNS: tuple[str, ...] = ("random_states*.pkl", "rng_state*.pth")

#: ``hub_strategy`` values, as in transformers' ``TrainingArguments``.
HUB_STRATEGIES: tuple[str, ...] = ("end", "every_save", "checkpoint", "all_checkpoints")

_DEFAULT_TAGS = ("dsnet", "msaf", "semantic-segmentation", "real-time", "vision", "image-segmentation")
_SECRET_KEY_RE = re.compile(r"token|secret|passw|api[_-]?key|credential", re.IGNORECASE)
_HF_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9_]{6,}")
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
_FUSION_NAMES = {
    "msaf": "MSAF (Multi-Scale Attention Fusion)",
    "aff": "AFF (local + global attention fusion)",
    "add": "element-wise sum (no attention)",
}
_EVAL_DATASET_KEYS = ("dataset_name", "dataset_id", "dataset_split", "dataset_config")
_METRIC_SPECS = (
    # key, model-index metric type, pretty name
    ("mean_iou", "mean_iou", "Mean IoU"),
    ("pixel_accuracy", "pixel_accuracy", "Pixel accuracy"),
    ("mean_class_accuracy", "mean_accuracy", "Mean class accuracy"),
)


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def redact(text: str, token: str | None = None) -> str:
    """Remove a token (and anything that looks like a Hub token) from a message."""
    if isinstance(token, str) and token:
        text = text.replace(token, "***")
    return _HF_TOKEN_RE.sub("hf_***", text)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _as_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out


_BUFFER_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


def _safetensors_num_parameters(folder: Path) -> int | None:
    """Number of parameters in the top-level ``*.safetensors`` files, read from their headers only
    (BatchNorm running statistics are buffers, not parameters, and are not counted)."""
    total = 0
    found = False
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with path.open("rb") as fh:
                (header_len,) = struct.unpack("<Q", fh.read(8))
                if header_len > 100_000_000:
                    return None
                header = json.loads(fh.read(header_len))
        except (OSError, ValueError, struct.error):
            return None
        for name, info in header.items():
            if name == "__metadata__" or not isinstance(info, dict) or name.endswith(_BUFFER_SUFFIXES):
                continue
            total += math.prod(int(d) for d in info.get("shape", []))
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
        elif name in _EVAL_DATASET_KEYS and value:
            out[name] = str(value)
        elif name == "class_names" and isinstance(value, (list, tuple)):
            out["class_names"] = [str(v) for v in value]
        elif name == "step" and isinstance(value, int) and not isinstance(value, bool):
            out["step"] = value
    return out


def _drop_secrets(params: Mapping[str, Any], token: str | None = None) -> dict[str, Any]:
    """Hyperparameters without secret-looking keys or values."""
    clean: dict[str, Any] = {}
    for key, value in params.items():
        if _SECRET_KEY_RE.search(str(key)):
            continue
        if isinstance(value, str) and ((token and token in value) or _HF_TOKEN_RE.search(value)):
            continue
        clean[str(key)] = value
    return clean


#: JSON files that are uploaded through `_sanitized_json` (secret-looking entries removed).
_SANITIZED_JSON_FILES = (EVAL_RESULTS_FILE, ALL_RESULTS_FILE, "train_results.json", HYPERPARAMETERS_FILE)


def _scrub(value: Any, token: str | None) -> Any:
    """Drop secret-named keys and redact token-looking strings, recursively."""
    if isinstance(value, Mapping):
        return {k: _scrub(v, token) for k, v in value.items() if not _SECRET_KEY_RE.search(str(k))}
    if isinstance(value, list):
        return [_scrub(v, token) for v in value]
    if isinstance(value, str):
        return redact(value, token)
    return value


def _sanitized_json(path: Path, token: str | None) -> bytes:
    """Content of a metrics/hyperparameters JSON file without secret-looking keys or values."""
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except ValueError:
        return redact(raw.decode("utf-8", errors="replace"), token).encode("utf-8")
    clean = _scrub(data, token)
    if clean == data:
        return raw
    logger.warning("Removed secret-looking entries from %s before uploading it", path.name)
    return (json.dumps(clean, indent=2, sort_keys=False) + "\n").encode("utf-8")


def load_card_inputs(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Card inputs found in a folder: ``eval_results`` (normalized) and ``training_hyperparameters``.

    Reads `EVAL_RESULTS_FILE` (else the ``eval_*`` keys of `ALL_RESULTS_FILE`) and
    `HYPERPARAMETERS_FILE`; missing or unreadable files are skipped.
    """
    folder = Path(folder)
    out: dict[str, Any] = {}
    evals = _read_json(folder / EVAL_RESULTS_FILE)
    if evals is None:
        all_results = _read_json(folder / ALL_RESULTS_FILE) or {}
        evals = {k: v for k, v in all_results.items() if k.startswith("eval_")} or None
    normalized = normalize_eval_results(evals)
    if normalized:
        out["eval_results"] = normalized
    hparams = _read_json(folder / HYPERPARAMETERS_FILE)
    if hparams:
        out["training_hyperparameters"] = hparams
    return out


def _default_template_path() -> Path:
    # msaf_hf/model_card.md links to the repository's top-level template and is installed as package data.
    return Path(__file__).resolve().parent / "model_card.md"


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
        config = _read_json(folder / "config.json") or {}
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
            num_parameters = _safetensors_num_parameters(folder)
        if input_size is None:
            input_size = _input_size_from_preprocessor(_read_json(folder / "preprocessor_config.json") or {})
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

    hyper = _drop_secrets(training_hyperparameters or {})
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

    template = Path(template_path) if template_path is not None else _default_template_path()
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
    )
    return ModelCard.from_template(card_data, template_path=str(template), **kwargs)


# ---------------------------------------------------------------------------------------------
# Push
# ---------------------------------------------------------------------------------------------


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def collect_upload_files(
    folder: str | os.PathLike[str],
    *,
    allow_patterns: Iterable[str] | None = None,
    ignore_patterns: Iterable[str] | None = None,
    include_readme: bool = False,
) -> list[str]:
    """Top-level files of ``folder`` that `push_folder_to_hub` uploads, sorted.

    A file is kept if it matches `DEFAULT_ALLOW_PATTERNS` or ``allow_patterns`` and matches
    neither `TRAINING_STATE_PATTERNS` nor ``ignore_patterns``. Sub-directories (checkpoints, logs,
    runs) are never included. ``README.md`` is included only with ``include_readme``.
    """
    folder = Path(folder)
    allow = (*DEFAULT_ALLOW_PATTERNS, *(allow_patterns or ()), *(("README.md",) if include_readme else ()))
    ignore = (*TRAINING_STATE_PATTERNS, *(ignore_patterns or ()))
    out = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if _matches(path.name, allow) and not _matches(path.name, ignore):
            out.append(path.name)
    return out


def _checkpoint_files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and not _matches(p.name, CHECKPOINT_EXCLUDE_PATTERNS)
    )


def push_folder_to_hub(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload DSNet model",
    commit_description: str | None = None,
    create_pr: bool = False,
    write_card: bool = True,
    card_kwargs: Mapping[str, Any] | None = None,
    allow_patterns: Iterable[str] | None = None,
    ignore_patterns: Iterable[str] | None = None,
    checkpoint_folder: str | os.PathLike[str] | None = None,
    checkpoint_path_in_repo: str = "last-checkpoint",
    delete_stale_weights: bool = True,
    endpoint: str | None = None,
) -> CommitInfo:
    """Push a saved DSNet folder to the Hub in one commit, with a generated model card.

    Uploads the files selected by `collect_upload_files` (weights, ``config.json``,
    ``preprocessor_config.json``, remote-code ``*.py``, metrics JSON) and a ``README.md`` rendered
    by `render_model_card` in memory (the folder is only read). Training state and sub-folders
    are left out, except ``checkpoint_folder`` which is uploaded whole under
    ``checkpoint_path_in_repo`` (replacing what was there), e.g. to resume training.

    Args:
        folder: The saved folder.
        repo_id: ``namespace/name`` (or ``name``, namespaced to the token's user).
        token: Hub token; default: huggingface_hub's resolution (``HF_TOKEN``, then the stored
            login); ``False`` sends none. It is only sent in the Authorization header, never
            written or logged (uploaded metrics JSON and the card are scrubbed of it).
        private: Visibility if the repo has to be created (an existing repo keeps its own).
        revision: Branch to commit to (created from ``main`` if missing); default ``main``.
        commit_message / commit_description: Commit text.
        create_pr: Open a pull request instead of committing to the branch.
        write_card: Generate README.md; if False, the folder's README.md (if any) is uploaded.
        card_kwargs: Extra keyword arguments for `render_model_card`.
        allow_patterns / ignore_patterns: Extra fnmatch patterns for top-level files.
        checkpoint_folder: A full checkpoint (model, optimizer and scheduler state, trainer_state.json) to
            upload as well; its RNG states (`CHECKPOINT_EXCLUDE_PATTERNS`) stay on this machine.
        checkpoint_path_in_repo: Where ``checkpoint_folder`` goes in the repo.
        delete_stale_weights: Delete remote top-level ``*.safetensors`` / index files that are not
            part of this upload (e.g. shards of a previous, differently-sharded save).
        endpoint: Hub URL (default: ``HF_ENDPOINT`` / huggingface.co).

    Returns:
        The `huggingface_hub.CommitInfo` (``.commit_url``, ``.oid``, ``.pr_url``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Not a folder: {folder}")
    if checkpoint_folder is not None and not Path(checkpoint_folder).is_dir():
        raise FileNotFoundError(f"Not a folder: {checkpoint_folder}")
    if create_pr and revision not in (None, hf_constants.DEFAULT_REVISION):
        raise ValueError("create_pr=True opens a pull request against main; do not pass `revision`.")
    branch = revision or hf_constants.DEFAULT_REVISION
    api = HfApi(endpoint=endpoint, token=token, library_name="msaf_hf")
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    repo_id = repo_url.repo_id
    if branch != hf_constants.DEFAULT_REVISION:
        api.create_branch(repo_id, branch=branch, exist_ok=True)

    files = collect_upload_files(
        folder, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns, include_readme=not write_card
    )
    operations: list[CommitOperationAdd | CommitOperationDelete] = []
    upload_paths = set(files)

    ckpt_files: list[str] = []
    ckpt_prefix = checkpoint_path_in_repo.strip("/")
    if checkpoint_folder is not None:
        ckpt_files = _checkpoint_files(Path(checkpoint_folder))
        upload_paths |= {f"{ckpt_prefix}/{rel}" for rel in ckpt_files}

    if (delete_stale_weights or checkpoint_folder is not None) and not create_pr:
        remote = set(api.list_repo_files(repo_id, revision=branch))
        for path in sorted(remote - upload_paths):
            stale_weight = "/" not in path and _matches(path, ("*.safetensors", "*.safetensors.index.json"))
            stale_ckpt = checkpoint_folder is not None and path.startswith(ckpt_prefix + "/")
            if (delete_stale_weights and stale_weight) or stale_ckpt:
                operations.append(CommitOperationDelete(path_in_repo=path))

    secret = token if isinstance(token, str) else get_token()  # only used to scrub uploads
    if secret is not None and len(secret) < 8:
        secret = None
    for name in files:
        if name in _SANITIZED_JSON_FILES:
            content: str | bytes = _sanitized_json(folder / name, secret)
        else:
            content = str(folder / name)
        operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=content))
    if checkpoint_folder is not None:
        operations += [
            CommitOperationAdd(path_in_repo=f"{ckpt_prefix}/{rel}", path_or_fileobj=str(Path(checkpoint_folder) / rel))
            for rel in ckpt_files
        ]
    if write_card:
        card = render_model_card(folder, repo_id=repo_id, **dict(card_kwargs or {}))
        text = str(card) if not secret else str(card).replace(secret, "***")
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=text.encode("utf-8")))

    info = api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message,
        commit_description=commit_description,
        revision=None if create_pr else branch,
        create_pr=create_pr,
    )
    logger.info("Pushed %s to %s", folder, info.pr_url or info.commit_url)
    return info


# ---------------------------------------------------------------------------------------------
# hub_strategy
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HubPushPlan:
    """What to push for a training event (see `plan_hub_push`)."""

    push: bool
    commit_message: str = ""
    checkpoint_folder: str | None = None
    checkpoint_path_in_repo: str | None = None


def plan_hub_push(
    strategy: str,
    event: Literal["save", "end"],
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    step: int | None = None,
) -> HubPushPlan:
    """Decide what to push, following transformers' ``hub_strategy`` semantics.

    * ``"end"``: push only at the end of training (the final model).
    * ``"every_save"``: push the model folder at every save, and at the end.
    * ``"checkpoint"``: like ``every_save``, and also upload the latest checkpoint folder
      (optimizer state included) to ``last-checkpoint/`` so training can be resumed from the Hub.
    * ``"all_checkpoints"``: like ``checkpoint`` but every checkpoint keeps its own folder name.

    Args:
        strategy: One of `HUB_STRATEGIES`.
        event: ``"save"`` (a checkpoint was just written) or ``"end"`` (training finished).
        checkpoint_dir: The checkpoint folder just written (for ``save``).
        step: Global step, used in the commit message.
    """
    if strategy not in HUB_STRATEGIES:
        raise ValueError(f"Unknown hub strategy {strategy!r}; expected one of {HUB_STRATEGIES}")
    if event == "end":
        return HubPushPlan(push=True, commit_message="End of training")
    if event != "save":
        raise ValueError(f"Unknown training event {event!r}; expected 'save' or 'end'")
    if strategy == "end":
        return HubPushPlan(push=False)
    message = f"Training in progress, step {step}" if step is not None else "Training in progress"
    if strategy == "every_save" or checkpoint_dir is None:
        return HubPushPlan(push=True, commit_message=message)
    ckpt = Path(checkpoint_dir)
    path_in_repo = "last-checkpoint" if strategy == "checkpoint" else ckpt.name
    return HubPushPlan(
        push=True, commit_message=message, checkpoint_folder=str(ckpt), checkpoint_path_in_repo=path_in_repo
    )


# ---------------------------------------------------------------------------------------------
# Background pushes
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PushResult:
    """Outcome of one background push."""

    ok: bool
    commit_message: str
    commit_url: str | None = None
    error: str | None = None
    submission: int = 0
    duration_s: float = 0.0


@dataclasses.dataclass
class _Snapshot:
    submission: int
    root: Path
    model_dir: Path
    commit_message: str
    checkpoint_dir: Path | None = None
    checkpoint_path_in_repo: str = "last-checkpoint"


class BackgroundPusher:
    """Push training outputs to the Hub from a background thread, without disturbing training.

    `submit` copies the shareable files of a folder (and an optional checkpoint folder) to a
    staging directory -- the only work done on the caller's thread -- and queues the copy. One push
    runs at a time; a newer submission replaces one still waiting. A failed push (HTTP error,
    connection error, timeout after ``push_timeout`` seconds) is logged, never raised; the next
    submission pushes the newer state, and `wait` retries the last one if it failed. The caller's
    folders are never modified.

    Example (in a training loop)::

        pusher = BackgroundPusher("me/dsnet-cityscapes", strategy="checkpoint")
        ...
        pusher.on_save(output_dir, checkpoint_dir=ckpt_dir, step=step)  # returns at once
        ...
        pusher.on_train_end(output_dir)
        url = pusher.wait()
        pusher.close()

    Args:
        repo_id: Target repo (created if missing).
        token: Hub token (default: huggingface_hub's resolution). Never logged.
        private: Visibility if the repo has to be created.
        revision: Branch to push to (created if missing).
        strategy: ``hub_strategy`` for `on_save` / `on_train_end` (see `plan_hub_push`).
        endpoint: Hub URL.
        card_kwargs: Keyword arguments for `render_model_card`.
        push_timeout: Seconds after which a push still running is reported as failed (its
            thread is abandoned and the next push may start). ``None``: no limit.
        staging_dir: Parent directory of the snapshots (default: a temporary directory).
        push_kwargs: Extra keyword arguments for `push_folder_to_hub`.
    """

    def __init__(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        private: bool = False,
        revision: str | None = None,
        strategy: str = "every_save",
        endpoint: str | None = None,
        card_kwargs: Mapping[str, Any] | None = None,
        push_timeout: float | None = 900.0,
        staging_dir: str | os.PathLike[str] | None = None,
        push_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if strategy not in HUB_STRATEGIES:
            raise ValueError(f"Unknown hub strategy {strategy!r}; expected one of {HUB_STRATEGIES}")
        self.repo_id = repo_id
        self.strategy = strategy
        self.push_timeout = push_timeout
        self._token = token
        self._push_kwargs: dict[str, Any] = dict(
            private=private,
            revision=revision,
            endpoint=endpoint,
            card_kwargs=dict(card_kwargs or {}),
            **dict(push_kwargs or {}),
        )
        self._owns_staging = staging_dir is None
        self._staging = Path(staging_dir) if staging_dir else Path(tempfile.mkdtemp(prefix="msaf-hub-staging-"))
        self._staging.mkdir(parents=True, exist_ok=True)
        self._cond = threading.Condition()
        self._pending: _Snapshot | None = None
        self._running: _Snapshot | None = None
        self._failed: _Snapshot | None = None
        self._counter = 0
        self._closed = False
        self.results: list[PushResult] = []
        self._thread = threading.Thread(target=self._worker, name="msaf-hub-pusher", daemon=True)
        self._thread.start()

    # -- public API ---------------------------------------------------------------------------------
    @property
    def last_result(self) -> PushResult | None:
        """The most recent finished push, if any."""
        with self._cond:
            return self.results[-1] if self.results else None

    @property
    def running_submission(self) -> int | None:
        """Submission number of the push in progress, if any."""
        with self._cond:
            return self._running.submission if self._running is not None else None

    @property
    def busy(self) -> bool:
        """Whether a push is running or waiting."""
        with self._cond:
            return self._pending is not None or self._running is not None

    def submit(
        self,
        folder: str | os.PathLike[str],
        commit_message: str = "Training in progress",
        *,
        checkpoint_folder: str | os.PathLike[str] | None = None,
        checkpoint_path_in_repo: str = "last-checkpoint",
    ) -> int | None:
        """Snapshot ``folder`` (and ``checkpoint_folder``) and queue a push; returns at once.

        Returns the submission number, or None if the snapshot could not be taken or the pusher
        is closed (the reason is logged; nothing is raised).
        """
        with self._cond:
            if self._closed:
                logger.warning("BackgroundPusher is closed; ignoring push of %s", folder)
                return None
            self._counter += 1
            number = self._counter
        try:
            snap = self._snapshot(number, Path(folder), commit_message, checkpoint_folder, checkpoint_path_in_repo)
        except Exception as exc:  # never break the training loop
            logger.error("Could not snapshot %s for the Hub push: %s", folder, self._clean(exc))
            return None
        with self._cond:
            if self._closed:
                self._discard(snap)
                return None
            if self._pending is not None:
                logger.info(
                    "Hub push #%d (%s) superseded by #%d before it started",
                    self._pending.submission,
                    self._pending.commit_message,
                    number,
                )
                self._discard(self._pending)
            if self._failed is not None:
                self._discard(self._failed)  # the newer snapshot is pushed instead
                self._failed = None
            self._pending = snap
            self._cond.notify_all()
        return number

    def on_save(
        self,
        model_dir: str | os.PathLike[str],
        checkpoint_dir: str | os.PathLike[str] | None = None,
        *,
        step: int | None = None,
    ) -> int | None:
        """Apply the strategy to a save: ``model_dir`` holds the model files just saved (it may be
        the checkpoint folder itself), ``checkpoint_dir`` the full checkpoint."""
        plan = plan_hub_push(self.strategy, "save", checkpoint_dir=checkpoint_dir, step=step)
        if not plan.push:
            return None
        return self.submit(
            model_dir,
            plan.commit_message,
            checkpoint_folder=plan.checkpoint_folder,
            checkpoint_path_in_repo=plan.checkpoint_path_in_repo or "last-checkpoint",
        )

    def on_train_end(self, model_dir: str | os.PathLike[str], commit_message: str = "End of training") -> int | None:
        """Queue the final push (all strategies)."""
        plan = plan_hub_push(self.strategy, "end")
        return self.submit(model_dir, commit_message or plan.commit_message)

    def wait(self, timeout: float | None = None, *, retry_failed: bool = True) -> str | None:
        """Wait for the queued/running pushes; return the commit URL of the final push.

        If the last push failed and nothing newer was submitted, it is retried once (when
        ``retry_failed``). Returns None if the final push failed or ``timeout`` expired (logged).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        retried = False
        with self._cond:
            while True:
                while self._pending is not None or self._running is not None:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        logger.warning("Timed out waiting for the Hub push to finish")
                        return None
                    self._cond.wait(remaining)
                if retry_failed and not retried and self._failed is not None and not self._closed:
                    logger.info("Retrying failed Hub push #%d", self._failed.submission)
                    self._pending, self._failed = self._failed, None
                    retried = True
                    self._cond.notify_all()
                    continue
                break
            last = self.results[-1] if self.results else None
        if last is None:
            return None
        if last.ok:
            logger.info("Final Hub push: %s", last.commit_url)
            return last.commit_url
        logger.warning("Final Hub push failed: %s", last.error)
        return None

    def close(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop accepting submissions; optionally `wait` for the queue; remove the staging data."""
        if wait:
            self.wait(timeout)
        with self._cond:
            self._closed = True
            if self._pending is not None:
                self._discard(self._pending)
                self._pending = None
            if self._failed is not None:
                self._discard(self._failed)
                self._failed = None
            self._cond.notify_all()
        self._thread.join(timeout=0 if not wait else (timeout or 5))
        if self._owns_staging:
            shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> BackgroundPusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------------------
    def _clean(self, exc: BaseException | str) -> str:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        return redact(text, self._token)

    def _snapshot(
        self,
        number: int,
        folder: Path,
        commit_message: str,
        checkpoint_folder: str | os.PathLike[str] | None,
        checkpoint_path_in_repo: str,
    ) -> _Snapshot:
        root = self._staging / f"push-{number:05d}"
        model_dir = root / "model"
        model_dir.mkdir(parents=True)
        try:
            write_card = self._push_kwargs.get("write_card", True)
            extra = self._push_kwargs.get("allow_patterns") or ()
            names = collect_upload_files(folder, allow_patterns=extra, include_readme=not write_card)
            if not any(n.endswith(".safetensors") for n in names):
                logger.warning("No *.safetensors weights in %s", folder)
            for name in names:
                shutil.copy2(folder / name, model_dir / name)
            ckpt_copy = None
            if checkpoint_folder is not None:
                ckpt_copy = root / "checkpoint"
                shutil.copytree(checkpoint_folder, ckpt_copy)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return _Snapshot(number, root, model_dir, commit_message, ckpt_copy, checkpoint_path_in_repo)

    @staticmethod
    def _discard(snap: _Snapshot) -> None:
        shutil.rmtree(snap.root, ignore_errors=True)

    def _push(self, snap: _Snapshot) -> PushResult:
        start = time.monotonic()
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["info"] = push_folder_to_hub(
                    snap.model_dir,
                    self.repo_id,
                    token=self._token,
                    commit_message=snap.commit_message,
                    checkpoint_folder=snap.checkpoint_dir,
                    checkpoint_path_in_repo=snap.checkpoint_path_in_repo,
                    **self._push_kwargs,
                )
            except BaseException as exc:  # noqa: BLE001 - reported as a failed push
                box["error"] = exc

        thread = threading.Thread(target=target, name=f"msaf-hub-push-{snap.submission}", daemon=True)
        thread.start()
        thread.join(self.push_timeout)
        duration = time.monotonic() - start
        if thread.is_alive():
            error = f"timed out after {self.push_timeout:.0f}s"
        elif "error" in box:
            error = self._clean(box["error"])
        else:
            info = box["info"]
            url = info.pr_url or info.commit_url
            return PushResult(True, snap.commit_message, str(url), None, snap.submission, duration)
        return PushResult(False, snap.commit_message, None, error, snap.submission, duration)

    def _worker(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                snap, self._pending = self._pending, None
                self._running = snap
            result = self._push(snap)
            if result.ok:
                logger.info("Hub push #%d done: %s", snap.submission, result.commit_url)
            else:
                logger.warning(
                    "Hub push #%d (%s) failed, will retry with the next save: %s",
                    snap.submission,
                    snap.commit_message,
                    result.error,
                )
            with self._cond:
                self.results.append(result)
                self._running = None
                if result.ok or self._pending is not None or self._closed:
                    self._discard(snap)
                else:
                    if self._failed is not None:
                        self._discard(self._failed)
                    self._failed = snap
                self._cond.notify_all()
