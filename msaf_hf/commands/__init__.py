"""The ``msaf-hf`` command line: one module a subcommand, each with ``main(argv=None) -> int``.

    msaf-hf train --config quickstart                  # also: python -m msaf_hf train ...
    accelerate launch --config_file "$(msaf-hf config-path cpu_2proc)" -m msaf_hf train --config quickstart
    msaf-hf <subcommand> --help

``scripts/*.py`` are thin wrappers over these modules: ``msaf-hf <subcommand>``, ``python -m msaf_hf <subcommand>``
and ``python scripts/<file>.py`` run the same code. A subcommand's module is imported only when it runs, so
``msaf-hf --help`` stays quick. Subcommand names take dashes or underscores (``check-data``, ``check_data``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

# subcommand -> (module under msaf_hf.commands, one line for `msaf-hf --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train or fine-tune DSNet (Accelerate; --config NAME_OR_FILE, --list_configs)"),
    "evaluate": ("evaluate", "evaluate a checkpoint or an exported engine folder on a dataset split"),
    "export": ("export", "export to an inference engine folder (OpenVINO or ONNX Runtime, fp32 or int8)"),
    "predict": ("predict", "segment images, folders, globs and videos; write masks and overlays"),
    "convert": ("convert", "convert a checkpoint of the published DSNet code into a save_pretrained folder"),
    "push": ("push", "push a saved folder (and optionally a demo Space) to the Hugging Face Hub"),
    "demo": ("demo", "start the Gradio demo for a model"),
    "benchmark": ("benchmark", "parameters, FLOPs, latency and images/s (inference, training, metrics)"),
    "check-data": ("check_data", "check a segmentation dataset before training (columns, labels, colours)"),
    "config-path": ("config_path", "print the path of a packaged recipe, preset or Accelerate config by name"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: msaf-hf <subcommand> [options]   (also: python -m msaf_hf <subcommand> ...)",
        "",
        "DSNet (MSAF) semantic segmentation on Hugging Face transformers. Subcommands:",
        *(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()),
        "",
        "`msaf-hf <subcommand> --help` lists a subcommand's options (flags are snake_case, e.g. --output_dir).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``msaf-hf <subcommand> ...``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from .. import __version__

        print(f"msaf-hf {__version__}")
        return 0
    name = argv[0].replace("_", "-")
    if name not in COMMANDS:
        print(f"{_usage()}\n\nmsaf-hf: error: unknown subcommand {argv[0]!r}; choose one of: {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
    sys.argv[0] = f"msaf-hf {name}"  # argparse names the program after sys.argv[0] in usage lines and errors
    status = module.main(argv[1:])
    return status if isinstance(status, int) else 0
