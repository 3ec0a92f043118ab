"""``msaf-hf train``: train or fine-tune DSNet with Accelerate (the code of :mod:`msaf_hf.training`).

    msaf-hf train --config quickstart                      # a packaged recipe by name; --list_configs names them
    msaf-hf train --config camvid --dataset_name my-user/camvid --output_dir outputs/dsnet-camvid
    accelerate launch --config_file "$(msaf-hf config-path cpu_2proc)" -m msaf_hf train --config quickstart

Any argument can come from the recipe (``--config NAME`` or a YAML path) and be overridden on the command line.
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments (``--config``, ``--list_configs``), train, reload the saved model and score it."""
    from ..training import main as train

    train(argv)
    return 0
