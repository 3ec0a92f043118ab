#!/usr/bin/env python
"""Train or fine-tune DSNet (a thin command line over `msaf_hf.training`).

    python scripts/train.py --config configuration/quickstart.yaml
    python scripts/train.py --config configuration/camvid.yaml --dataset_name ../shared/data/camvid
    accelerate launch --config_file configuration/accelerate/multi_gpu.yaml scripts/train.py \\
        --config configuration/cityscapes.yaml

Any argument can come from the recipe (`--config`) and be overridden on the command line; `--help` lists them.
"""

import sys
from pathlib import Path

try:
    import msaf_hf  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msaf_hf.training import main

if __name__ == "__main__":
    main()
