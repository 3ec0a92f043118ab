#!/usr/bin/env python
"""Train or fine-tune DSNet: `msaf-hf train` (msaf_hf.commands.train); `--help` lists the options.

    python scripts/train.py --config quickstart

The same code as the command (this file is the repository's script form of it; install the package first:
`pip install -e .`).
"""

import sys

from msaf_hf.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
