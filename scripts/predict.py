#!/usr/bin/env python
"""Segment images, folders, globs and videos: `msaf-hf predict` (msaf_hf.commands.predict).

The same code as the command (this file is the repository's script form of it; install the package first:
`pip install -e .`).
"""

import sys

from msaf_hf.commands.predict import main

if __name__ == "__main__":
    sys.exit(main())
