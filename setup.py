"""Ships the top-level ``configuration/`` folder (presets, recipes, Accelerate configs) and the model-card template
``model_card.md`` inside the built package, as ``msaf_hf/configuration/`` and ``msaf_hf/hub/templates/model_card.md``.

Mapping packages to folders outside ``msaf_hf/`` would do the same, but makes editable installs need an import
finder (and setuptools then warns). A source checkout (editable install) reads the top-level files directly
(``msaf_hf.presets.packaged_path``, the one lookup of these files, which knows both places). Everything else is in
pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# Keep in step with msaf_hf.presets.INSTALLED_AS (setup.py runs before the package can be imported).
SHIPPED = {"configuration": "msaf_hf/configuration", "model_card.md": "msaf_hf/hub/templates/model_card.md"}
PATTERNS = ("*.json", "*.yaml")


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the files from the checkout
        for source, target in SHIPPED.items():
            src, dst = ROOT / source, Path(self.build_lib) / target
            if src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
                continue
            for pattern in PATTERNS:
                for path in src.rglob(pattern):
                    out = dst / path.relative_to(src)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, out)


setup(cmdclass={"build_py": BuildPyWithData})
