"""Export DSNet for inference: ONNX and `torch.export`.

Both exports trace a small wrapper that takes `pixel_values` and returns the main head's `logits` (1/4 of the
input resolution, as the model returns them), so the exported graph has one input and one output. Export a
deployed model (`model.to_deploy()`: BatchNorms folded, auxiliary heads dropped) for the smallest graph; an
eval-mode model exports too.

Shapes:
- `torch.export`: the batch dimension is dynamic by default and the spatial size can be dynamic as well
  (`dynamic_spatial=True`; sides are then multiples of 8).
- ONNX: the batch dimension is dynamic; the spatial size is fixed for MSAF models, because ONNX has no
  adaptive average pool: the exporter turns MSAF's context pools (4x4, 8x8, 16x16) into average pools whose
  kernels are computed from the example's size, which would silently be wrong at any other size. Models
  without context pools (`fusion_type="aff"` or `"add"`) can be exported with a dynamic spatial size.

ONNX export needs the `onnx` and `onnxscript` packages. Running and checking an export against PyTorch is
`msaf_hf.engines` (`compare_with_torch`, with `onnxruntime`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .modeling_dsnet import MSAF

DEFAULT_OPSET = 18
MAX_BATCH = 1024
MAX_SIDE_OVER_8 = 2048  # spatial sides up to 16384 pixels


class SegmentationLogits(nn.Module):
    """`pixel_values -> logits`: the export interface of a segmentation model returning a `ModelOutput`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, return_dict=True).logits


def _as_export_module(model: nn.Module) -> SegmentationLogits:
    if isinstance(model, SegmentationLogits):
        wrapper = model
    else:
        wrapper = SegmentationLogits(model)
    if wrapper.model.training:
        raise ValueError(
            "Export the model in inference form: call model.eval() (or model.to_deploy()) first; a training-mode "
            "DSNet uses batch statistics and computes the auxiliary heads."
        )
    return wrapper.eval()


def has_context_pools(model: nn.Module) -> bool:
    return any(isinstance(m, MSAF) and len(m.context_sizes) > 0 for m in model.modules())


def _check_example(pixel_values: torch.Tensor) -> None:
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
        raise ValueError("pixel_values must be an example batch of shape (batch, channels, height, width).")
    if pixel_values.shape[-2] % 8 or pixel_values.shape[-1] % 8:
        raise ValueError(
            f"Export with an example whose height and width are multiples of 8 (got {tuple(pixel_values.shape[-2:])}),"
            " the sizes at which DSNet matches the published model."
        )


def _tracing_example(pixel_values: torch.Tensor, dynamic_batch: bool) -> torch.Tensor:
    """torch.export specialises dimensions of size 1: trace a dynamic batch with at least two images."""
    if dynamic_batch and pixel_values.shape[0] == 1:
        return torch.cat([pixel_values, pixel_values])
    return pixel_values


def _dynamic_shapes(pixel_values: torch.Tensor, dynamic_batch: bool, dynamic_spatial: bool) -> dict | None:
    if not dynamic_batch and not dynamic_spatial:
        return None
    Dim = torch.export.Dim
    axes = {}
    if dynamic_batch:
        axes[0] = Dim("batch", min=1, max=MAX_BATCH)
    if dynamic_spatial:
        axes[2] = 8 * Dim("height_over_8", min=2, max=MAX_SIDE_OVER_8)
        axes[3] = 8 * Dim("width_over_8", min=2, max=MAX_SIDE_OVER_8)
    return {"pixel_values": axes}


# ------------------------------------------------------------------------------------------------------------------
# torch.export
# ------------------------------------------------------------------------------------------------------------------


def export_program(
    model: nn.Module,
    pixel_values: torch.Tensor,
    dynamic_batch: bool = True,
    dynamic_spatial: bool = False,
    strict: bool = False,
) -> torch.export.ExportedProgram:
    """`torch.export` the model's `pixel_values -> logits` function. Call `.module()` on the result to run it.

    Args:
        model: a DSNet (or any segmentation model returning `.logits`) in eval or deploy form.
        pixel_values: an example batch (height and width multiples of 8; with a dynamic batch, a single image is
            traced as a batch of two, since torch.export specialises dimensions of size 1).
        dynamic_batch: let the batch size vary (1 to 1024).
        dynamic_spatial: let height and width vary (multiples of 8, 16 to 16384).
        strict: `torch.export`'s strict (TorchDynamo) tracing.
    """
    _check_example(pixel_values)
    wrapper = _as_export_module(model)
    pixel_values = _tracing_example(pixel_values, dynamic_batch)
    with torch.no_grad():
        return torch.export.export(
            wrapper,
            (pixel_values,),
            dynamic_shapes=_dynamic_shapes(pixel_values, dynamic_batch, dynamic_spatial),
            strict=strict,
        )


# ------------------------------------------------------------------------------------------------------------------
# ONNX
# ------------------------------------------------------------------------------------------------------------------


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    pixel_values: torch.Tensor,
    dynamic_batch: bool = True,
    dynamic_spatial: bool = False,
    opset_version: int = DEFAULT_OPSET,
) -> Path:
    """Export the model's `pixel_values -> logits` function to an ONNX file (input `pixel_values`, output
    `logits`) with torch's dynamo-based exporter, and return the path.

    Args:
        model: a DSNet in eval or deploy form.
        path: the `.onnx` file to write (weights are embedded).
        pixel_values: an example batch; its spatial size is the model's fixed input size unless
            `dynamic_spatial` is set.
        dynamic_batch: let the batch size vary.
        dynamic_spatial: let height and width vary; only for models without MSAF context pools (see the module
            docstring).
        opset_version: the ONNX opset.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "ONNX export needs the `onnx` and `onnxscript` packages: pip install onnx onnxscript onnxruntime"
        ) from error
    _check_example(pixel_values)
    wrapper = _as_export_module(model)
    if dynamic_spatial and has_context_pools(wrapper):
        raise ValueError(
            "This model's MSAF context pools (adaptive average pools to 4x4, 8x8, 16x16) have no ONNX equivalent for "
            "a variable input size: the exporter fixes their kernels from the example's size. Export with "
            "dynamic_spatial=False (one ONNX file per input size); the batch size can stay dynamic."
        )
    pixel_values = _tracing_example(pixel_values, dynamic_batch)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (pixel_values,),
            dynamo=True,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_shapes=_dynamic_shapes(pixel_values, dynamic_batch, dynamic_spatial),
            opset_version=opset_version,
            external_data=False,
            verbose=False,
        )
    if program is None:  # pragma: no cover - the dynamo exporter always returns a program
        raise RuntimeError("torch.onnx.export returned no program.")
    program.save(str(path), external_data=False)
    return path


__all__ = [
    "SegmentationLogits",
    "export_onnx",
    "export_program",
]
