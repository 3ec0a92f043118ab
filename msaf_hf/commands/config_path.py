"""``msaf-hf config-path NAME``: print the path of a packaged configuration file, found by name, so that tools
that want a file get one from a source checkout and an installed wheel alike:

    accelerate launch --config_file "$(msaf-hf config-path cpu_2proc)" -m msaf_hf train --config quickstart
    msaf-hf config-path quickstart                # the recipe file, to read or copy and edit
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..presets import find_accelerate_config, find_configuration_file
from ..recipes import describe_configurations


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="an Accelerate config (cpu_2proc, multi_gpu, ...), a recipe or a preset name")
    args = parser.parse_args(argv)
    # Accelerate configs first: they are what this command is for (launch commands want a file path).
    try:
        path = find_accelerate_config(args.name)
    except FileNotFoundError:
        path = find_configuration_file(args.name)
    if path is None:
        print(f"error: no packaged configuration named {args.name!r}.\n{describe_configurations()}", file=sys.stderr)
        return 2
    print(path.resolve())
    return 0
