#!/usr/bin/env python
"""Check a dataset before training on it (a thin command line over `msaf_hf.commands.check_data`).

    python scripts/check_data.py --dataset_name ../shared/data/camvid --void_labels 11 \\
        --id2label_file camvid_id2label.json --output_dir data_check
    python scripts/check_data.py --image_dir images --mask_dir masks --label_colors colors.json

It takes the data flags of scripts/train.py (`--help` lists them) and exits non-zero when training would fail.
"""

import sys
from pathlib import Path

try:
    import msaf_hf  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msaf_hf.commands.check_data import main

if __name__ == "__main__":
    sys.exit(main())
