"""``msaf-hf push``: push a saved DSNet folder (training output or converted checkpoint) to the Hugging Face Hub.

The folder's shareable files are uploaded (``*.safetensors``, ``config.json``,
``preprocessor_config.json``, remote-code ``*.py``, metrics JSON) together with a generated
``README.md`` model card; training state (optimizer, scheduler, RNG states, ``checkpoint-*``
folders) is left out and the folder itself is not modified.

The card uses, when present in the folder, ``eval_results.json`` (keys ``mean_iou``,
``pixel_accuracy``, ``mean_class_accuracy``, ``per_class_iou``, optionally ``dataset_name``,
``dataset_id``, ``dataset_split``), else the ``eval_*`` keys of ``all_results.json``, and
``training_hyperparameters.json``. Command-line options override them.

The token comes from ``HF_TOKEN`` or ``hf auth login`` (``--token`` works but leaves it in your
shell history). Set ``HF_ENDPOINT`` (or ``--endpoint``) to use another Hub.

Examples::

    msaf-hf push outputs/dsnet-cityscapes me/dsnet-cityscapes \\
        --dataset_name Cityscapes --dataset_id me/cityscapes --dataset_split validation
    msaf-hf push converted/dsnet-base me/dsnet-base --converted --private
    msaf-hf push outputs/run1 me/dsnet --dry_run   # print the card and file list
    msaf-hf push outputs/run1 me/dsnet --space me/dsnet-demo --space_example street.jpg

``--space SPACE_ID`` also writes and pushes a Gradio demo Space (``app.py``, ``requirements.txt``, a README with
Space metadata, the demo code) that loads ``repo_id`` through remote code (msaf_hf.visualization.space).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .. import hub


def _json_arg(value: str) -> dict[str, Any]:
    """Parse an inline JSON object, or read it from a file path."""
    path = Path(value)
    text = path.read_text(encoding="utf-8") if not value.lstrip().startswith("{") and path.is_file() else value
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a JSON object or a JSON file: {value!r} ({exc})") from exc
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return data


def _size_arg(value: str) -> tuple[int, int] | int:
    from ..visualization.inference import (
        parse_image_size,  # the one size parser (HxW or N), shared with predict and demo
    )

    try:
        size = parse_image_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    assert size is not None
    return size


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="saved folder (output of save_pretrained / training)")
    parser.add_argument("repo_id", help="target repo, e.g. my-user/dsnet-cityscapes")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--branch", default=None, help="branch to push to (created from main if missing)")
    parser.add_argument("--create_pr", "--create-pr", action="store_true",
                        help="open a pull request instead of committing")
    parser.add_argument("--commit_message", "--commit-message", default="Upload DSNet model", help="commit message")
    parser.add_argument("--commit_description", "--commit-description", default=None, help="commit description")
    parser.add_argument("--dataset_name", "--dataset-name", default=None, help="pretty dataset name, e.g. Cityscapes")
    parser.add_argument("--dataset_id", "--dataset-id", default=None,
                        help="Hub dataset id used for training/evaluation")
    parser.add_argument("--dataset_split", "--dataset-split", default=None, help="evaluation split, e.g. validation")
    parser.add_argument("--dataset_config", "--dataset-config", default=None, help="dataset configuration name")
    parser.add_argument(
        "--eval_results", "--eval-results", type=_json_arg, default=None,
        help="JSON object (or file) with mean_iou, pixel_accuracy, ...",
    )
    parser.add_argument(
        "--hyperparameters", type=_json_arg, default=None, help="JSON object (or file) of training hyperparameters"
    )
    parser.add_argument("--base_model", "--base-model", default=None,
                        help="Hub id of the checkpoint this one was fine-tuned from")
    parser.add_argument("--license", default="apache-2.0", help="license id (default: apache-2.0)")
    parser.add_argument("--input_size", "--input-size", type=_size_arg, default=None,
                        help="input size used, HxW (e.g. 512x1024)")
    parser.add_argument("--tag", action="append", default=[], help="extra tag (repeatable)")
    parser.add_argument("--converted", action="store_true", help="checkpoint converted from published weights")
    parser.add_argument("--no_card", "--no-card", action="store_true",
                        help="do not generate README.md (upload the folder's)")
    parser.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--token", default=None, help="Hub token (prefer HF_TOKEN or `hf auth login`)")
    parser.add_argument("--dry_run", "--dry-run", action="store_true",
                        help="print the card and the files; upload nothing")
    parser.add_argument("--space", default=None, metavar="SPACE_ID",
                        help="also push a Gradio demo Space of the model to this repo (e.g. me/dsnet-demo)")
    parser.add_argument("--space_example", "--space-example", action="append", default=[], type=Path, metavar="IMAGE",
                        help="example image shipped with the Space (repeatable)")
    parser.add_argument("--space_size", "--space-size", default=None,
                        help="model input size in the Space: HxW or N (shorter side)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    card_kwargs: dict[str, Any] = {
        "eval_results": args.eval_results,
        "dataset_name": args.dataset_name,
        "dataset_id": args.dataset_id,
        "dataset_split": args.dataset_split,
        "dataset_config": args.dataset_config,
        "training_hyperparameters": args.hyperparameters,
        "base_model": args.base_model,
        "license": args.license,
        "input_size": args.input_size,
        "tags": args.tag or None,
        "converted": args.converted,
    }
    missing = [str(p) for p in args.space_example if not p.is_file()]
    if missing:
        print(f"error: --space_example: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    space_kwargs: dict[str, Any] = {"examples": args.space_example, "size": args.space_size, "revision": args.branch}
    if args.dry_run:
        files = hub.collect_upload_files(args.folder, include_readme=args.no_card)
        if not args.no_card:
            print(hub.render_model_card(args.folder, repo_id=args.repo_id, **card_kwargs))
            files.append("README.md (generated)")
        print("\nFiles to upload:\n" + "\n".join(f"  {name}" for name in files))
        if args.space:
            import tempfile

            from msaf_hf.visualization.space import write_space

            with tempfile.TemporaryDirectory() as tmp:
                space_files = write_space(tmp, args.repo_id, **space_kwargs)
            print(f"\nSpace {args.space} files:\n" + "\n".join(f"  {name}" for name in space_files))
        return 0
    try:
        info = hub.push_folder_to_hub(
            args.folder,
            args.repo_id,
            token=args.token,
            private=args.private,
            revision=args.branch,
            commit_message=args.commit_message,
            commit_description=args.commit_description,
            create_pr=args.create_pr,
            write_card=not args.no_card,
            card_kwargs=card_kwargs,
            endpoint=args.endpoint,
        )
    except Exception as exc:  # report without a traceback (and without the token)
        print(f"error: push failed: {hub.redact(f'{type(exc).__name__}: {exc}', args.token)}", file=sys.stderr)
        return 1
    print(info.pr_url or info.commit_url)
    if args.space:
        try:
            space_info = hub.push_space(args.space, args.repo_id, token=args.token, private=args.private,
                                    endpoint=args.endpoint, **space_kwargs)
        except Exception as exc:
            message = hub.redact(f"{type(exc).__name__}: {exc}", args.token)
            print(f"error: Space push failed: {message}", file=sys.stderr)
            return 1
        print(space_info.commit_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
