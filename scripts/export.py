#!/usr/bin/env python
"""Export DSNet to an OpenVINO / ONNX Runtime folder: `msaf-hf export` (msaf_hf.commands.export).

The same code as the command (this file is the repository's script form of it; install the package first:
`pip install -e .`).
"""

import sys

from msaf_hf.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
