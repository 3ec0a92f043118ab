"""``msaf-hf evaluate``: evaluate a checkpoint (a save_pretrained folder, a Hub model id or an exported engine
folder) on a dataset split (the code of :mod:`msaf_hf.evaluation`).

    msaf-hf evaluate --model_name_or_path outputs/dsnet-camvid/best --config camvid --dataset_name my-user/camvid \\
        [--flip] [--scales 0.75 1.0 1.25] [--output_file results.json]
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate, print the per-class table and write the metrics as JSON."""
    from ..evaluation import main as evaluate

    evaluate(argv)
    return 0
