"""``msaf-hf convert``: convert a checkpoint written by the published DSNet code into a `save_pretrained` folder.

    msaf-hf convert CHECKPOINT OUTPUT_DIR [--variant NAME] [--num_labels N]

Accepts every layout the published code writes (training checkpoint, best/final weights, DDP-wrapped or
ImageNet-pretrained encoder, inference-only). The folder loads with
`AutoModelForSemanticSegmentation.from_pretrained(OUTPUT_DIR)` after `import msaf_hf`, or with
`trust_remote_code=True` without it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ..convert import convert_to_folder
from ..presets import ORIGINAL_MODEL_NAMES, list_presets


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="published checkpoint (.pth, .pth.tar, .pt)")
    parser.add_argument("output_dir", help="folder to write (safetensors, config.json, preprocessor_config.json)")
    parser.add_argument(
        "--variant",
        help=f"architecture preset, overriding what is inferred from the weights: {', '.join(list_presets())} "
        f"(or a published MODEL.NAME: {', '.join(ORIGINAL_MODEL_NAMES)})",
    )
    parser.add_argument("--num_labels", "--num-labels", type=int,
                        help="number of classes (needed for encoder-only checkpoints)")
    parser.add_argument("--id2label", help="JSON file mapping class ids to names")
    args = parser.parse_args(argv)

    id2label = None
    if args.id2label:
        with open(args.id2label) as handle:
            id2label = {int(k): v for k, v in json.load(handle).items()}
    try:
        report = convert_to_folder(
            args.checkpoint, args.output_dir, variant=args.variant, num_labels=args.num_labels, id2label=id2label
        )
    except (KeyError, ValueError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(report)
    print(f"saved to {args.output_dir}")
    return 0
