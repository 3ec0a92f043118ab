#!/usr/bin/env python
"""Evaluate a DSNet checkpoint (a save_pretrained folder or a Hub model id) on a dataset split.

    python scripts/evaluate.py --model_name_or_path outputs/camvid/best --dataset_name ../shared/data/camvid \
        --void_labels 11 --eval_split validation [--flip] [--scales 0.75 1.0 1.25] [--output_file results.json]
    accelerate launch --config_file configuration/accelerate/multi_gpu.yaml scripts/evaluate.py ...

Prints a per-class IoU/accuracy table and writes the metrics as JSON (a training recipe can supply the data
arguments: `--config configuration/camvid.yaml`).
"""

import sys
from pathlib import Path

try:
    import msaf_hf  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msaf_hf.evaluation import main

if __name__ == "__main__":
    main()
