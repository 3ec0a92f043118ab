#!/usr/bin/env python
"""Fetch transformers' common test suites (ModelTesterMixin, ConfigTester, ImageProcessingTestMixin) for the
installed transformers version into a git-ignored cache, for tests/test_modeling_dsnet_common.py.

The suites ship only in transformers' source distribution (`tests/*.py`), fetched here with pip's own client:

    python scripts/fetch_transformers_test_suites.py   # -> .cache/transformers-tests/<version>/tests/

Nothing is copied into the repository; `make test` runs this first. Without network access it prints why and
exits 0, and the common-suite tests skip with that reason.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE = REPO_ROOT / ".cache" / "transformers-tests"


def suites_dir(version: str) -> Path:
    return CACHE / version / "tests"


def fetch(version: str) -> Path:
    target = suites_dir(version)
    if (target / "test_modeling_common.py").is_file():
        return target
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-deps", "--no-binary", ":all:",
             "-q", "-d", download],
            check=True,
        )
        (archive,) = Path(download).glob("transformers-*.tar.gz")
        prefix = f"transformers-{version}/tests/"
        staging = Path(tempfile.mkdtemp(dir=CACHE.parent if CACHE.parent.exists() else None))
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
            for member in members:
                member.name = member.name[len(prefix):]
            tar.extractall(staging, members=members, filter="data")
        # In transformers' repository tests/ is a package (its empty __init__.py is not in the sdist), which
        # test_configuration_common.py relies on (`direct_transformers_import(Path(__file__).parent)`).
        (staging / "__init__.py").touch()
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)  # atomic: a half-extracted folder is never mistaken for a complete one
    return target


def main() -> int:
    import transformers

    CACHE.mkdir(parents=True, exist_ok=True)
    try:
        print(f"transformers {transformers.__version__} test suites: {fetch(transformers.__version__)}")
    except (subprocess.CalledProcessError, ValueError) as error:
        print(
            f"Could not fetch transformers' test suites ({error}); the common-suite tests will skip.", file=sys.stderr
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
