"""Optional engine packages: imported on first use, with an error naming the extra that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

# module -> (what needs it, the pip extra that installs it)
_EXTRAS = {
    "openvino": ("OpenVINO", "openvino"),
    "nncf": ("int8 quantisation (NNCF)", "openvino"),
    "onnxruntime": ("ONNX Runtime", "onnxruntime"),
    "onnx": ("ONNX export", "onnxruntime"),
    "onnxscript": ("ONNX export", "onnxruntime"),
}


class MissingEngineError(ImportError):
    """An optional engine package is not installed; the message names the `pip install` that fixes it."""


def require(module_name: str) -> ModuleType:
    """Import `module_name` or raise `MissingEngineError` naming the msaf_hf extra to install."""
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        purpose, extra = _EXTRAS.get(module_name, (module_name, module_name))
        raise MissingEngineError(
            f"{purpose} needs the `{module_name}` package, which is not installed. Install the extra: "
            f"pip install 'msaf_hf[{extra}]'"
        ) from error
