"""Which precision an export runs in: `--precision auto`'s choice, and what OpenVINO actually executes.

`choose_precision` picks for `--precision auto`, from the CPU's instruction sets (`msaf_hf.cpu_features`):

1. a calibration set is given -> **int8**. With VNNI (avx512_vnni / avx_vnni) or AMX-INT8 the int8 dot products run
   in hardware; without them int8 still runs (AVX2/AVX-512 multiply-adds, about twice the work per product), still
   faster than float32 on the AVX2 machine the README measured (2.5x torch eval), so it stays the choice and the
   reason says that the VNNI speed-up is missing.
2. no calibration set, OpenVINO, and the CPU has bfloat16 (avx512_bf16 or AMX-BF16) -> **bf16**.
3. otherwise -> **fp32** (ONNX Runtime's CPU provider has no bf16 path; a CPU without bf16 would emulate it).

The choice describes the CPU the export ran on; the reason (recorded in the exported config) names it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..cpu_features import CPUFeatures

__all__ = ["PrecisionChoice", "choose_precision", "runtime_precision_summary"]

# OpenVINO's runtime layer types that carry the arithmetic (the rest are reorders, pools, element-wise ops).
_COMPUTE_LAYERS = {"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul"}
_INT8_TYPES = {"i8", "u8"}


class PrecisionChoice(dict):
    """`{"requested": "auto", "precision": ..., "reason": ..., "cpu": {...}}`: what `auto` chose and why."""

    @property
    def precision(self) -> str:
        return self["precision"]

    @property
    def reason(self) -> str:
        return self["reason"]


def choose_precision(engine: str, has_calibration: bool, features: CPUFeatures) -> PrecisionChoice:
    """`--precision auto` for `engine` on the CPU described by `features` (see the module docstring)."""
    cpu = features.model_name
    if has_calibration:
        if features.has_vnni:
            reason = (f"a calibration set was given and {cpu} has int8 dot-product instructions "
                      f"({', '.join(features.vnni_flags)}): int8 runs its convolutions in hardware int8")
        else:
            reason = (f"a calibration set was given; {cpu} has no VNNI/AMX-INT8 (avx512_vnni, avx_vnni, amx_int8), so "
                      "int8 products run without the VNNI speed-up (AVX2/AVX-512 multiply-adds): slower than on a VNNI "
                      "CPU but still faster than fp32")
        precision = "int8"
    elif engine == "openvino" and features.supports_bf16:
        flags = [flag for flag in ("avx512_bf16", "amx_bf16") if flag in features.flags] or ["OpenVINO's BF16"]
        precision = "bf16"
        reason = (f"no calibration set (int8 needs one) and {cpu} has bfloat16 instructions ({', '.join(flags)}): "
                  "OpenVINO runs the model in bf16")
    elif engine == "openvino":
        precision = "fp32"
        reason = (f"no calibration set (int8 needs one) and {cpu} has no bfloat16 instructions (avx512_bf16, "
                  "amx_bf16): bf16 would be emulated, so fp32")
    else:
        precision = "fp32"
        bf16 = "has" if features.supports_bf16 else "has no"
        reason = (f"no calibration set (int8 needs one), and ONNX Runtime's CPU provider has no bf16 path ({cpu} "
                  f"{bf16} bfloat16 instructions): fp32 (export with --engine openvino for bf16)")
    return PrecisionChoice(requested="auto", precision=precision, reason=reason, cpu=features.to_dict())


def runtime_precision_summary(compiled_model: Any) -> str:
    """The precision an OpenVINO compiled model executes, read from its runtime model: the `runtimePrecision` of its
    compute layers (convolutions, matrix products). `bf16` or `f32` when they all agree, else the int8 share, e.g.
    `int8 (96/103 convolutions; rest f32)`; the compiled INFERENCE_PRECISION_HINT when the runtime model says
    nothing."""
    counts: Counter[str] = Counter()
    for op in compiled_model.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" not in info or "runtimePrecision" not in info:
            continue
        if info["layerType"].astype(str) in _COMPUTE_LAYERS:
            counts[info["runtimePrecision"].astype(str)] += 1
    if not counts:
        hint = compiled_model.get_property("INFERENCE_PRECISION_HINT")
        return hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    int8 = sum(n for t, n in counts.items() if t in _INT8_TYPES)
    total = sum(counts.values())
    if int8 == 0 and len(counts) == 1:
        return next(iter(counts))
    if int8 == 0:
        return " + ".join(f"{t} ({n}/{total})" for t, n in counts.most_common())
    rest = sorted({t for t in counts if t not in _INT8_TYPES})
    return f"int8 ({int8}/{total} convolutions" + (f"; rest {'/'.join(rest)})" if rest else ")")
