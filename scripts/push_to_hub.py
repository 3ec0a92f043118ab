#!/usr/bin/env python
"""Push a saved DSNet folder to the Hugging Face Hub: `msaf-hf push` (msaf_hf.commands.push).

The same code as the command (this file is the repository's script form of it; install the package first:
`pip install -e .`).
"""

import sys

from msaf_hf.commands.push import main

if __name__ == "__main__":
    sys.exit(main())
