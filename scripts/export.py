#!/usr/bin/env python
"""Export a DSNet to an inference engine folder (OpenVINO or ONNX Runtime, fp32 or int8).

    python scripts/export.py outputs/camvid/final camvid-openvino --engine openvino --precision fp32
    python scripts/export.py outputs/camvid/final camvid-openvino-int8 --engine openvino --precision int8 \
        --calibration_dataset ../shared/data/camvid --calibration_split train --calibration_samples 300
    python scripts/evaluate.py --model_name_or_path camvid-openvino-int8 --config configuration/camvid.yaml \
        --dataset_name ../shared/data/camvid

See `msaf_hf.engines.exporting` (and --help) for the options.
"""

import sys
from pathlib import Path

try:
    import msaf_hf  # noqa: F401
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msaf_hf.engines.exporting import main

if __name__ == "__main__":
    main()
