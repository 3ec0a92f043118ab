#!/usr/bin/env python
"""Benchmark DSNet (inference, training, metrics): `msaf-hf benchmark` (msaf_hf.commands.benchmark).

The same code as the command (this file is the repository's script form of it; install the package first:
`pip install -e .`).
"""

import sys

from msaf_hf.commands.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
