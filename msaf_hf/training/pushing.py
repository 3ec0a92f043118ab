"""Pushing a run's models to the Hub while it trains (``--push_to_hub``), through ``msaf_hf.hub``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .arguments import DSNetTrainingArguments


class HubPushError(RuntimeError):
    """Training finished and saved its model, but the final Hub push failed (after the pusher's retry)."""

    def __init__(self, final_dir: Path, retry_command: str, error: Any) -> None:
        self.final_dir, self.retry_command = final_dir, retry_command
        super().__init__(
            f"The final push to the Hub failed: {error}. The trained model is saved in {final_dir}; push just it "
            f"with:\n    {retry_command}"
        )


def push_command(args: DSNetTrainingArguments, final_dir: Path, output_dir: Path) -> str:
    import shlex

    repo_id = args.hub_model_id or output_dir.resolve().name
    words = ["msaf-hf", "push", str(final_dir), repo_id]  # the command ships with the package (wheel or checkout)
    if args.hub_revision:
        words += ["--branch", args.hub_revision]
    if args.hub_private_repo:
        words.append("--private")
    words += ["--commit_message", "End of training"]
    return " ".join(shlex.quote(w) for w in words)


def make_pusher(args: DSNetTrainingArguments, output_dir: Path) -> Any:
    if not args.push_to_hub:
        return None
    from ..hub import BackgroundPusher

    repo_id = args.hub_model_id or output_dir.resolve().name
    return BackgroundPusher(repo_id, private=bool(args.hub_private_repo), revision=args.hub_revision,
                            strategy=args.hub_strategy)
