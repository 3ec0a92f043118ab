"""What this CPU can run fast: its model name and the x86 instruction sets that decide which precision pays off.

    from msaf_hf.cpu_features import detect_cpu_features
    features = detect_cpu_features()
    features.summary()        # 'Intel(R) Xeon(R) Processor: AVX2 yes, AVX-512 yes, VNNI yes (...), BF16 yes, AMX ...'
    features.supports_bf16    # avx512_bf16 or AMX-BF16: bfloat16 arithmetic in hardware

The flags come from `/proc/cpuinfo` (Linux); OpenVINO's own view (`OPTIMIZATION_CAPABILITIES`: `BF16`, `INT8`,
...) is added when OpenVINO is installed and, where `/proc/cpuinfo` is missing (macOS, Windows), decides bf16.

`MSAF_HF_CPUINFO=path` reads another cpuinfo file instead (and skips OpenVINO's view): it lets tests and
documentation show what happens on another CPU. Tests may also monkeypatch `detect_cpu_features`: every check in the
package calls it through this module.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CPUFeatures",
    "UnsupportedPrecisionError",
    "check_bf16_supported",
    "detect_cpu_features",
    "parse_cpuinfo",
]

CPUINFO_ENV = "MSAF_HF_CPUINFO"
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


class UnsupportedPrecisionError(ValueError):
    """A precision was asked for that this CPU does not run in hardware; the message says what it lacks."""


@dataclass(frozen=True)
class CPUFeatures:
    """The CPU's model name, its `/proc/cpuinfo` flags and OpenVINO's optimisation capabilities (empty if unknown)."""

    model_name: str
    flags: frozenset[str] = field(default_factory=frozenset)
    openvino_capabilities: tuple[str, ...] = ()
    source: str = "/proc/cpuinfo"

    @property
    def has_avx2(self) -> bool:
        return "avx2" in self.flags

    @property
    def has_avx512(self) -> bool:
        return "avx512f" in self.flags

    @property
    def vnni_flags(self) -> list[str]:
        """The int8 dot-product instructions present (VNNI in AVX-512 or AVX, AMX-INT8)."""
        return [flag for flag in VNNI_FLAGS if flag in self.flags]

    @property
    def has_vnni(self) -> bool:
        return bool(self.vnni_flags)

    @property
    def has_amx_bf16(self) -> bool:
        return "amx_bf16" in self.flags

    @property
    def has_amx_int8(self) -> bool:
        return "amx_int8" in self.flags

    @property
    def supports_bf16(self) -> bool:
        """bfloat16 arithmetic in hardware: `avx512_bf16` or AMX-BF16 (without cpuinfo flags: OpenVINO's `BF16`)."""
        if self.flags:
            return any(flag in self.flags for flag in BF16_FLAGS)
        return "BF16" in self.openvino_capabilities

    def instruction_sets(self) -> dict[str, bool]:
        """The instruction sets that decide the precision, as the benchmark header names them."""
        return {
            "AVX2": self.has_avx2,
            "AVX-512": self.has_avx512,
            "VNNI": self.has_vnni,
            "BF16": self.supports_bf16,
            "AMX": self.has_amx_bf16 or self.has_amx_int8,
        }

    def summary(self) -> str:
        """One line: the model name and which of AVX2, AVX-512, VNNI, BF16, AMX it has (with the flags behind them)."""
        details = {
            "VNNI": ", ".join(self.vnni_flags),
            "BF16": ", ".join(f for f in BF16_FLAGS if f in self.flags),
            "AMX": ", ".join(f for f in ("amx_bf16", "amx_int8") if f in self.flags),
        }
        parts = []
        for name, present in self.instruction_sets().items():
            text = f"{name} {'yes' if present else 'no'}"
            if present and details.get(name):
                text += f" ({details[name]})"
            parts.append(text)
        line = f"{self.model_name}: " + ", ".join(parts)
        if self.openvino_capabilities:
            line += f"; OpenVINO CPU capabilities: {' '.join(self.openvino_capabilities)}"
        return line

    def to_dict(self) -> dict[str, object]:
        return {
            "model_name": self.model_name,
            "instruction_sets": self.instruction_sets(),
            "vnni_flags": self.vnni_flags,
            "openvino_capabilities": list(self.openvino_capabilities),
            "source": self.source,
        }


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """The model name and the flags of the first processor in a `/proc/cpuinfo` text."""
    model_name, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not model_name:
            model_name = value.strip()
        elif key in ("flags", "features") and not flags:  # x86 says flags, ARM says Features
            flags = frozenset(value.split())
    return model_name, flags


def _openvino_capabilities() -> tuple[tuple[str, ...], str]:
    try:
        import openvino
    except ImportError:
        return (), ""
    try:
        core = openvino.Core()
        return tuple(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")), str(
            core.get_property("CPU", "FULL_DEVICE_NAME")
        )
    except Exception:  # an OpenVINO without a CPU plugin: no opinion
        return (), ""


def _detect(cpuinfo_path: str | None, use_openvino: bool) -> CPUFeatures:
    path = Path(cpuinfo_path or "/proc/cpuinfo")
    model_name, flags = ("", frozenset())
    if path.is_file():
        model_name, flags = parse_cpuinfo(path.read_text(encoding="utf-8", errors="replace"))
    capabilities, openvino_name = _openvino_capabilities() if use_openvino else ((), "")
    model_name = model_name or openvino_name or platform.processor() or platform.machine() or "unknown CPU"
    return CPUFeatures(model_name, flags, capabilities, str(path) if path.is_file() else "unavailable")


def detect_cpu_features(use_openvino: bool = True) -> CPUFeatures:
    """This CPU's features (cached). `MSAF_HF_CPUINFO` names another cpuinfo file to read instead (OpenVINO's view
    is then left out: it describes the real CPU)."""
    override = os.environ.get(CPUINFO_ENV)
    if override:
        if not Path(override).is_file():
            raise FileNotFoundError(f"{CPUINFO_ENV}={override!r} is not a file (a /proc/cpuinfo-style text).")
        return _detect(override, False)  # read each time: the file may change (tests)
    return _detect_this_cpu(use_openvino)


@functools.lru_cache(maxsize=2)
def _detect_this_cpu(use_openvino: bool) -> CPUFeatures:
    return _detect(None, use_openvino)


def check_bf16_supported(what: str, alternatives: Iterable[str] = ("fp32", "int8")) -> CPUFeatures:
    """Raise `UnsupportedPrecisionError` unless this CPU runs bfloat16 in hardware; `what` names the request (a flag,
    an export) in the message, `alternatives` what to use instead. Returns the features."""
    features = detect_cpu_features()
    if features.supports_bf16:
        return features
    present = [name for name, yes in features.instruction_sets().items() if yes] or ["none of AVX2/AVX-512/VNNI"]
    int8_note = (
        " (int8 runs its dot products with VNNI here)" if features.has_vnni and "int8" in alternatives else ""
    )
    raise UnsupportedPrecisionError(
        f"{what}: this CPU ({features.model_name}) has no bfloat16 instructions: neither avx512_bf16 nor AMX-BF16 "
        f"(amx_bf16) is in its flags ({features.source}); it has {', '.join(present)}. bfloat16 would be emulated "
        f"(slower than float32, and less accurate). Use {' or '.join(alternatives)} instead{int8_note}."
    )
