"""Named model presets: JSON files under the repository's `configuration/` folder (installed as
`msaf_hf/configuration`), reachable from Python by name."""

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


def configuration_dir() -> Path:
    """The folder holding presets and recipes: the source checkout's `configuration/`, else the installed copy."""
    source = Path(__file__).resolve().parent.parent / "configuration"
    if source.is_dir():
        return source
    installed = Path(__file__).resolve().parent / "configuration"  # copied there by setup.py's build step
    if installed.is_dir():
        return installed
    raise FileNotFoundError(
        f"msaf_hf's configuration folder (presets and recipes) is missing: expected {source} in a source "
        f"checkout, or {installed} in an installed copy. Reinstall with `pip install -e .`."
    )


def find_configuration_file(path: str | os.PathLike) -> Path | None:
    """``path`` when it is a file; else, for a bare file name, the packaged configuration file of that name (so
    ``camvid_id2label.json`` or ``quickstart.yaml`` work from an installed package); else None."""
    file = Path(path)
    if file.is_file():
        return file
    if file.parent != Path("."):
        return None
    try:
        packaged = configuration_dir() / file.name
    except (FileNotFoundError, TypeError):
        return None
    return packaged if packaged.is_file() else None


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
