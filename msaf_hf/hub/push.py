"""Pushing a saved DSNet folder to the Hub: which files go up, in one commit, with a freshly rendered card; and
what to push at each training event (``hub_strategy``).

`push_folder_to_hub` only reads the folder: the README is rendered in memory, and metrics / hyperparameters JSON
files are uploaded without secret-looking entries (see `msaf_hf.hub.redaction`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi, get_token
from huggingface_hub import constants as hf_constants

from ..results import (
    ALL_RESULTS_FILE,
    EVAL_RESULTS_FILE,
    FIGURE_TITLES,
    HYPERPARAMETERS_FILE,
    TRAIN_RESULTS_FILE,
)
from .card import render_model_card
from .redaction import sanitized_json

__all__ = [
    "DEFAULT_ALLOW_PATTERNS",
    "HUB_STRATEGIES",
    "SANITIZED_JSON_FILES",
    "TRAINING_STATE_PATTERNS",
    "CHECKPOINT_EXCLUDE_PATTERNS",
    "HubPushPlan",
    "collect_upload_files",
    "plan_hub_push",
    "push_folder_to_hub",
    "push_space",
]

logger = logging.getLogger(__name__)

#: Top-level files of a folder that are uploaded (the README is generated).
DEFAULT_ALLOW_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "preprocessor_config.json",
    "*.py",
    EVAL_RESULTS_FILE,
    ALL_RESULTS_FILE,
    TRAIN_RESULTS_FILE,
    HYPERPARAMETERS_FILE,
    *FIGURE_TITLES,  # evaluation figures (msaf_hf.visualization.figures), embedded in the card
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

#: JSON files that are uploaded through `msaf_hf.hub.redaction.sanitized_json` (secret-looking entries removed).
SANITIZED_JSON_FILES: tuple[str, ...] = (
    EVAL_RESULTS_FILE,
    ALL_RESULTS_FILE,
    TRAIN_RESULTS_FILE,
    HYPERPARAMETERS_FILE,
)


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
    api: HfApi | None = None,
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
        api: The `huggingface_hub.HfApi` to push with (`BackgroundPusher` passes its own, so that every push runs
            on that client's background executor); ``endpoint`` is then ignored and ``token`` is passed to each
            call.

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
    if api is None:
        api = HfApi(endpoint=endpoint, token=token, library_name="msaf_hf")
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, token=token)
    repo_id = repo_url.repo_id
    if branch != hf_constants.DEFAULT_REVISION:
        api.create_branch(repo_id, branch=branch, exist_ok=True, token=token)

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
        remote = set(api.list_repo_files(repo_id, revision=branch, token=token))
        for path in sorted(remote - upload_paths):
            stale_weight = "/" not in path and _matches(path, ("*.safetensors", "*.safetensors.index.json"))
            stale_ckpt = checkpoint_folder is not None and path.startswith(ckpt_prefix + "/")
            if (delete_stale_weights and stale_weight) or stale_ckpt:
                operations.append(CommitOperationDelete(path_in_repo=path))

    # only used to scrub uploads
    secret = token if isinstance(token, str) else api.token if isinstance(api.token, str) else get_token()
    if secret is not None and len(secret) < 8:
        secret = None
    for name in files:
        if name in SANITIZED_JSON_FILES:
            content: str | bytes = sanitized_json(folder / name, secret)
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
        token=token,
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


def push_space(
    space_id: str,
    model_id: str,
    *,
    token: str | bool | None = None,
    private: bool = False,
    endpoint: str | None = None,
    commit_message: str = "Upload DSNet demo Space",
    **space_kwargs: Any,
) -> CommitInfo:
    """Write the demo Space of ``model_id`` (`msaf_hf.visualization.space.write_space`, which ``space_kwargs`` go to)
    to a temporary folder and push it to ``space_id`` (created as a Gradio Space if missing) in one commit; returns
    the ``CommitInfo``."""
    import tempfile

    from ..visualization.space import write_space

    api = HfApi(endpoint=endpoint, token=token, library_name="msaf_hf")
    repo_url = api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    space_kwargs.setdefault("hub_url", endpoint or api.endpoint)
    with tempfile.TemporaryDirectory(prefix="dsnet-space-") as tmp:
        write_space(tmp, model_id, **space_kwargs)
        info = api.upload_folder(
            repo_id=repo_url.repo_id, repo_type="space", folder_path=tmp, commit_message=commit_message
        )
    logger.info("Pushed the demo Space to %s", info.commit_url)
    return info
