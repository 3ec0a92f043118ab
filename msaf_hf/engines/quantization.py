"""int8 post-training quantisation of exported DSNet graphs with NNCF, and the calibration data it needs.

A `QuantizationRecipe` names the parts of DSNet kept in float32 as regular expressions over module paths of
`DSNetForSemanticSegmentation` (`dsnet.fusions.0`, `decode_head.classifier`, ...). Every node of the engine graph
records the module it came from (OpenVINO: in its name, `__module.model.<path>/aten::.../...`; ONNX: in the
`pkg.torch.onnx.name_scopes` metadata), so one recipe applies to both engines. Which parts of DSNet int8 hurts,
and so what each recipe keeps in float32, is written down in docs/int8.md (measured with
scripts/int8_sensitivity.py).
"""

from __future__ import annotations

import ast
import copy
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ._dependencies import require


@dataclass(frozen=True)
class QuantizationRecipe:
    """How to quantise: which module paths stay float32 and NNCF's options.

    Args:
        name: the recipe's name (recorded in the exported config).
        keep_fp32: regular expressions; a graph node whose module path (e.g. `dsnet.fusions.1.local_attention.
            reduce.conv`) matches one with `re.fullmatch` is not quantised.
        preset: NNCF preset: `mixed` (symmetric weights, asymmetric activations) or `performance` (symmetric).
        fast_bias_correction: NNCF's fast bias correction (re-centres each quantised layer's output).
        description: one line for humans.
    """

    name: str
    keep_fp32: tuple[str, ...] = ()
    preset: str = "mixed"
    fast_bias_correction: bool = True
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"keep_fp32": list(self.keep_fp32)}


# The shared trunk: the stem's second convolution and the stages every later layer reads (at 1/4 and 1/8 of the
# input). int8 error made here reaches both branches, MSAF and the head; docs/int8.md measures it as the part of
# DSNet that int8 hurts (the first convolution, MSAF's attention and the head are not).
SHARED_TRUNK = r"dsnet\.(stem\.1|shared_stage1|shared_stage2|skip_stage)(\..*)?"
# Other parts, for the sensitivity study and custom recipes: MSAF's sigmoid weighting and products (ops of the
# MSAF module itself), all of MSAF (with its attention convolutions), the segmentation head, its classifier.
MSAF_WEIGHTING = r"dsnet\.fusions\.\d+"
MSAF_ATTENTION = r"dsnet\.fusions\.\d+(\..*)?"
HEAD = r"decode_head(\..*)?"
CLASSIFIER = r"decode_head\.classifier(\..*)?"

RECIPES: dict[str, QuantizationRecipe] = {
    recipe.name: recipe
    for recipe in (
        QuantizationRecipe("naive", (), "performance", True, "NNCF's defaults: all int8, symmetric activations"),
        QuantizationRecipe(
            "balanced",
            (),
            "mixed",
            True,
            "every layer int8, asymmetric activations, fast bias correction: the full int8 speed within the accuracy "
            "target (CamVid: 0.2-0.7 mIoU points below float32)",
        ),
        QuantizationRecipe(
            "accurate",
            (SHARED_TRUNK,),
            "mixed",
            True,
            "'balanced' with the shared trunk (stem.1, shared stages, skip stage) in float32: float32's accuracy "
            "(CamVid: within 0.1 points) for 3-10% of the speed",
        ),
    )
}
DEFAULT_RECIPE = RECIPES["balanced"]


# ------------------------------------------------------------------------------------------------------------------
# Graph nodes -> module paths
# ------------------------------------------------------------------------------------------------------------------

_OPENVINO_PREFIX = "__module.model."  # SegmentationLogits wraps the model as `.model`


def openvino_node_modules(graph: Any) -> dict[str, str]:
    """Node name -> module path (relative to DSNetForSemanticSegmentation) for an OpenVINO model converted from
    PyTorch; nodes outside any module map to ''."""
    out = {}
    for op in graph.get_ops():
        name = op.get_friendly_name()
        path = name.split("/", 1)[0]
        out[name] = path[len(_OPENVINO_PREFIX):] if path.startswith(_OPENVINO_PREFIX) else ""
    return out


def onnx_node_modules(graph: Any) -> dict[str, str]:
    """Node name -> module path for an ONNX model from torch's dynamo exporter (its `name_scopes` metadata)."""
    out = {}
    for node in graph.graph.node:
        path = ""
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                scopes = [s for s in ast.literal_eval(prop.value) if s][:-1]  # the last entry is the op itself
                path = scopes[-1] if scopes else ""
                path = path[len("model."):] if path.startswith("model.") else ("" if path == "model" else path)
        out[node.name] = path
    return out


def nodes_matching(node_modules: dict[str, str], patterns: Sequence[str]) -> list[str]:
    """Names of the nodes whose module path matches one of `patterns` (`re.fullmatch`)."""
    compiled = [re.compile(p) for p in patterns]
    return sorted(name for name, path in node_modules.items() if path and any(c.fullmatch(path) for c in compiled))


# ------------------------------------------------------------------------------------------------------------------
# Quantisation
# ------------------------------------------------------------------------------------------------------------------


def quantize(
    graph: Any,
    engine: str,
    calibration_images: Sequence[torch.Tensor],
    recipe: QuantizationRecipe,
    keep_fp32: Sequence[str] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Quantise an exported graph (an `openvino.Model` or an `onnx.ModelProto`) to int8 with NNCF.

    `keep_fp32` overrides the recipe's patterns (used by the sensitivity study). Returns the quantised graph and a
    record of what was done (recipe, number of calibration images, nodes kept in float32)."""
    nncf = require("nncf")
    if not calibration_images:
        raise ValueError("The calibration set is empty: int8 needs at least one calibration image.")
    patterns = recipe.keep_fp32 if keep_fp32 is None else tuple(keep_fp32)
    if engine == "openvino":
        node_modules = openvino_node_modules(graph)
        items = [x.detach().float().cpu().numpy() for x in calibration_images]
    elif engine == "onnxruntime":
        node_modules = onnx_node_modules(graph)
        input_name = graph.graph.input[0].name
        items = [{input_name: x.detach().float().cpu().numpy()} for x in calibration_images]
    else:
        raise ValueError(f"engine must be 'openvino' or 'onnxruntime', got {engine!r}.")
    ignored = nodes_matching(node_modules, patterns)
    if patterns and not ignored:
        raise ValueError(f"The recipe's keep_fp32 patterns {list(patterns)} match no node of the {engine} graph.")
    preset = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}[recipe.preset]
    quantized = nncf.quantize(
        graph,
        nncf.Dataset(items),
        preset=preset,
        subset_size=len(items),
        fast_bias_correction=recipe.fast_bias_correction,
        ignored_scope=nncf.IgnoredScope(names=ignored, validate=False) if ignored else None,
    )
    record = {
        "recipe": recipe.to_dict() | {"keep_fp32": list(patterns)},
        "calibration_images": len(items),
        "calibration_size": list(calibration_images[0].shape[-2:]),
        "nodes_kept_fp32": len(ignored),
    }
    return quantized, record


# ------------------------------------------------------------------------------------------------------------------
# Calibration data
# ------------------------------------------------------------------------------------------------------------------


def load_calibration_images(
    dataset: str | os.PathLike,
    image_processor: Any = None,
    split: str = "train",
    num_samples: int = 300,
    size: tuple[int, int] | None = None,
) -> list[torch.Tensor]:
    """Up to `num_samples` `(1, 3, H, W)` calibration inputs from a split, spread evenly over it, prepared exactly as
    the model's inputs are: by `image_processor`, the checkpoint's `DSNetImageProcessor` (its size and
    normalisation; default: DSNet's, ImageNet normalisation at native size). `size` (height, width) resizes them.

    `dataset`: a folder of plain images (searched recursively; no labels needed), a Hub dataset id or a local
    Hub-style folder (its image column is read, any label column ignored), or `synthetic` (the package's generated
    shapes set, the quickstart's data). Only images are read (`msaf_hf.data.load_split`, purpose "calibration"):
    int8 calibration needs neither labels nor class names. A folder of plain images is one split, whatever `split`
    says."""
    from ..data import DataArguments, data_arguments_for, load_split
    from ..image_processing_dsnet import DSNetImageProcessor

    if num_samples < 1:
        raise ValueError(f"--calibration_samples must be at least 1, got {num_samples}.")
    if image_processor is not None and not callable(image_processor):
        raise TypeError(
            f"load_calibration_images: image_processor must be the checkpoint's image processor, got "
            f"{type(image_processor).__name__}."
        )
    if os.fspath(dataset) == "synthetic":
        source = DataArguments(synthetic=True, synthetic_num_train=num_samples, synthetic_num_eval=num_samples)
    else:
        source = data_arguments_for(dataset)
    processor = copy.deepcopy(image_processor) if image_processor is not None else DSNetImageProcessor()
    if size is not None:
        processor.do_resize, processor.size = True, {"height": int(size[0]), "width": int(size[1])}
    images = load_split(source, split, "calibration", image_processor=processor, split_flag="--calibration_split")
    count = min(num_samples, len(images))
    indices = torch.linspace(0, len(images) - 1, count).round().long().unique().tolist()
    return [images[i]["pixel_values"].unsqueeze(0).float() for i in indices]


__all__ = [
    "DEFAULT_RECIPE",
    "QuantizationRecipe",
    "RECIPES",
    "load_calibration_images",
    "nodes_matching",
    "onnx_node_modules",
    "openvino_node_modules",
    "quantize",
]
