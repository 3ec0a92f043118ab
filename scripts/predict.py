#!/usr/bin/env python
"""Segment images, folders, globs and videos with a DSNet model and write the predictions as pictures.

    python scripts/predict.py outputs/dsnet-camvid/final photos/ 'more/*.jpg' drive.mp4 --output_dir preds \
        [--batch_size 4] [--alpha 0.5] [--size 512x1024] [--device cuda] [--fusion-maps]

Per image: NAME_mask.png (palette PNG of class ids), NAME_overlay.jpg, with --fusion-maps NAME_fusion{1,2,3}.jpg;
per video: NAME_overlay.mp4 and NAME_timing.json; once: legend.png. See msaf_hf/visualization/predict.py.
"""

import sys
from pathlib import Path

try:
    import msaf_hf  # noqa: F401  (registers DSNet with the transformers Auto classes)
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import msaf_hf  # noqa: F401

from msaf_hf.visualization.predict import main

if __name__ == "__main__":
    sys.exit(main())
