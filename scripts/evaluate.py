#!/usr/bin/env python
"""Evaluate a DSNet checkpoint or engine folder on a dataset split: `msaf-hf evaluate` (msaf_hf.commands.evaluate).

The same code as the command (this file is the repository's script form of it; install the package first:
`pip install -e .`).
"""

import sys

from msaf_hf.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
