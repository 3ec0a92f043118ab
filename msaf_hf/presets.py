"""Named model presets, training recipes and Accelerate configs: files under the repository's `configuration/`
folder (installed as `msaf_hf/configuration`), reachable by name. This module is the one place that finds the files
the package ships outside `msaf_hf/` (`packaged_path`), for a source checkout and an installed wheel alike."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .configuration_dsnet import DSNetConfig

# Names the published code used (MODEL.NAME), mapped to ours.
ORIGINAL_MODEL_NAMES = {
    "dsnet_head128": "dsnet",
    "dsnet_head64": "dsnet-head64",
    "dsnet_head256": "dsnet-head256",
    "dsnet_m": "dsnet-base",
}


# Files at the top of the source checkout, and where setup.py's build step installs them (relative to msaf_hf/).
INSTALLED_AS = {"configuration": "configuration", "model_card.md": "hub/templates/model_card.md"}
RECIPE_SUFFIXES = (".yaml", ".yml", ".json")


def packaged_path(name: str) -> Path:
    """A file or folder the package ships from the top of the repository (``configuration``, ``model_card.md``):
    the source checkout's copy, else the installed one (copied there by setup.py's build step)."""
    package = Path(__file__).resolve().parent
    source = package.parent / name
    if source.exists():
        return source
    installed = package / INSTALLED_AS[name]
    if installed.exists():
        return installed
    raise FileNotFoundError(
        f"msaf_hf's packaged {name!r} is missing: expected {source} in a source checkout, or {installed} in an "
        f"installed copy. Reinstall the package (`pip install -e .` in a checkout)."
    )


def configuration_dir() -> Path:
    """The folder holding presets, recipes and Accelerate configs (see `packaged_path`)."""
    return packaged_path("configuration")


def find_configuration_file(path: str | os.PathLike, subfolder: str = "") -> Path | None:
    """``path`` when it is a file; else, for a bare name, the packaged configuration file of that name, with or
    without its suffix (so ``quickstart``, ``quickstart.yaml`` or ``camvid_id2label.json`` work from an installed
    package; ``subfolder="accelerate"`` looks among the Accelerate configs); else None."""
    file = Path(path)
    if file.is_file():
        return file
    if file.parent != Path(".") or not file.name:
        return None
    try:
        folder = configuration_dir() / subfolder
    except (FileNotFoundError, TypeError):
        return None
    names = [file.name] if file.suffix in RECIPE_SUFFIXES else [file.name + suffix for suffix in RECIPE_SUFFIXES]
    return next((folder / name for name in names if (folder / name).is_file()), None)


def list_recipes() -> list[str]:
    """Names of the training recipes (``quickstart``, ``camvid``, ``cityscapes``, ...), for ``--config NAME``."""
    return sorted(p.stem for p in configuration_dir().glob("*.yaml"))


def list_accelerate_configs() -> list[str]:
    """Names of the Accelerate launch configs (``cpu_2proc``, ``multi_gpu``, ...), for
    ``accelerate launch --config_file "$(msaf-hf config-path NAME)"``."""
    return sorted(p.stem for p in (configuration_dir() / "accelerate").glob("*.yaml"))


def find_accelerate_config(name: str | os.PathLike) -> Path:
    """The Accelerate config file ``name`` (a path, or a packaged config's name); a clear error otherwise."""
    file = find_configuration_file(name, subfolder="accelerate")
    if file is None:
        raise FileNotFoundError(
            f"Accelerate config {str(name)!r} not found: not a file, nor one of the packaged configs "
            f"({', '.join(list_accelerate_configs())})."
        )
    return file


def list_presets() -> list[str]:
    """Names of the model presets (`dsnet`, `dsnet-head64`, ...)."""
    return sorted(p.stem for p in configuration_dir().glob("*.json") if _is_model_preset(p))


def _is_model_preset(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("model_type") == "dsnet"
    except (OSError, ValueError, AttributeError):
        return False


def load_preset(name: str, **overrides: Any) -> DSNetConfig:
    """Build a `DSNetConfig` from a preset name (or a published MODEL.NAME such as `dsnet_head128`), with
    keyword overrides, e.g. `load_preset("dsnet-base", num_labels=11)`."""
    name = ORIGINAL_MODEL_NAMES.get(name, name)
    path = configuration_dir() / f"{name}.json"
    if not path.is_file() or not _is_model_preset(path):
        raise ValueError(f"Unknown DSNet preset {name!r}. Available presets: {', '.join(list_presets())}.")
    values = json.loads(path.read_text())
    values.pop("model_type", None)
    values.update(overrides)
    return DSNetConfig(**values)
