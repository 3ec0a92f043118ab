#!/usr/bin/env python
"""Convert a checkpoint of the published DSNet code: `msaf-hf convert` (msaf_hf.commands.convert).

The same code as the command (this file is the repository's script form of it; install the package first:
`pip install -e .`).
"""

import sys

from msaf_hf.commands.convert import main

if __name__ == "__main__":
    sys.exit(main())
