"""``python -m msaf_hf <subcommand> ...``: the ``msaf-hf`` command (see :mod:`msaf_hf.commands`). This form also
runs under ``accelerate launch -m msaf_hf train ...``."""

import sys

from .commands import main

if __name__ == "__main__":
    sys.exit(main())
