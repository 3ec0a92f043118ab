"""Sharing DSNet checkpoints on the Hugging Face Hub: model cards, pushes, background pushes.

Everything here works on a *saved folder* (the output of ``save_pretrained``, a training output directory or a
converted checkpoint), so it does not need the model classes and never imports torch or transformers.

* `msaf_hf.hub.card`: `render_model_card` builds a `huggingface_hub.ModelCard` from a folder (config, weights,
  metrics and hyperparameters files) and the Jinja2 template ``model_card.md``.
* `msaf_hf.hub.push`: `push_folder_to_hub` uploads the shareable part of a folder (weights, configs, remote code,
  metrics) plus a freshly rendered ``README.md`` in a single commit, without modifying the folder;
  `plan_hub_push` maps training events to pushes (transformers' ``hub_strategy``); `push_space` pushes the demo
  Space that `msaf_hf.visualization.space` writes.
* `msaf_hf.hub.background`: `BackgroundPusher` pushes snapshots of a training output on huggingface_hub's
  background executor; it never raises into the training loop.
* `msaf_hf.hub.redaction`: keeps tokens out of logs, cards and uploaded files.
"""

from .background import BackgroundPusher, PushResult
from .card import (
    ALL_RESULTS_FILE,
    EVAL_RESULTS_FILE,
    HYPERPARAMETERS_FILE,
    load_card_inputs,
    normalize_eval_results,
    render_model_card,
)
from .push import (
    CHECKPOINT_EXCLUDE_PATTERNS,
    DEFAULT_ALLOW_PATTERNS,
    HUB_STRATEGIES,
    TRAINING_STATE_PATTERNS,
    HubPushPlan,
    collect_upload_files,
    plan_hub_push,
    push_folder_to_hub,
    push_space,
)
from .redaction import redact

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
    "push_space",
    "redact",
    "render_model_card",
]
