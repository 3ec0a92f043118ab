#!/usr/bin/env python
"""Check a dataset before training on it: `msaf-hf check-data` (msaf_hf.commands.check_data); `--help` lists the
options (the data flags of `msaf-hf train`).

The same code as the command (this file is the repository's script form of it; install the package first:
`pip install -e .`).
"""

import sys

from msaf_hf.commands.check_data import main

if __name__ == "__main__":
    sys.exit(main())
