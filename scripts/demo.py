#!/usr/bin/env python
"""Start the DSNet Gradio demo: `msaf-hf demo` (msaf_hf.commands.demo).

The same code as the command (this file is the repository's script form of it; install the package first:
`pip install -e .`).
"""

import sys

from msaf_hf.commands.demo import main

if __name__ == "__main__":
    sys.exit(main())
