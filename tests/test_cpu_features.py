"""msaf_hf.cpu_features: instruction sets from /proc/cpuinfo (mockable) and the bf16 check's error."""

from __future__ import annotations

import pytest

from msaf_hf import cpu_features
from msaf_hf.cpu_features import CPUFeatures, UnsupportedPrecisionError, check_bf16_supported, parse_cpuinfo

AVX2_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz
flags\t\t: fpu sse sse2 avx avx2 fma
processor\t: 1
model name\t: should not be read
"""
SAPPHIRE_RAPIDS_FLAGS = "avx2 avx512f avx512bw avx512_vnni avx_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"


def _cpuinfo(tmp_path, model_name: str, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: {model_name}\nflags\t\t: {flags}\n")
    return path


def test_parse_cpuinfo_reads_the_first_processor():
    name, flags = parse_cpuinfo(AVX2_CPUINFO)
    assert name == "Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz"
    assert flags == {"fpu", "sse", "sse2", "avx", "avx2", "fma"}


def test_instruction_sets_and_summary():
    features = CPUFeatures("Xeon", frozenset(SAPPHIRE_RAPIDS_FLAGS.split()))
    assert features.instruction_sets() == {"AVX2": True, "AVX-512": True, "VNNI": True, "BF16": True, "AMX": True}
    summary = features.summary()
    for text in ("Xeon", "AVX2 yes", "AVX-512 yes", "VNNI yes (avx512_vnni, avx_vnni, amx_int8)",
                 "BF16 yes (avx512_bf16, amx_bf16)", "AMX yes (amx_bf16, amx_int8)"):
        assert text in summary
    avx2 = CPUFeatures("Core", frozenset({"avx2"}))
    assert avx2.instruction_sets() == {"AVX2": True, "AVX-512": False, "VNNI": False, "BF16": False, "AMX": False}
    assert "BF16 no" in avx2.summary()
    # without cpuinfo flags (macOS, Windows), OpenVINO's BF16 capability decides
    assert CPUFeatures("?", frozenset(), ("FP32", "BF16")).supports_bf16
    assert not CPUFeatures("?", frozenset(), ("FP32", "INT8")).supports_bf16


def test_environment_override_and_bf16_check(tmp_path, monkeypatch):
    monkeypatch.setenv(cpu_features.CPUINFO_ENV, str(_cpuinfo(tmp_path, "AMD EPYC 7B13", "avx2 avx512f avx512_vnni")))
    features = cpu_features.detect_cpu_features()
    assert features.model_name == "AMD EPYC 7B13" and features.has_vnni and not features.supports_bf16
    assert features.openvino_capabilities == ()  # the real CPU's view is left out of a simulated one
    with pytest.raises(UnsupportedPrecisionError) as error:
        check_bf16_supported("--precision bf16")
    message = str(error.value)
    for text in ("--precision bf16", "AMD EPYC 7B13", "avx512_bf16", "amx_bf16", "AVX2, AVX-512, VNNI", "fp32 or int8",
                 "VNNI"):
        assert text in message
    monkeypatch.setenv(cpu_features.CPUINFO_ENV, str(_cpuinfo(tmp_path, "Xeon", SAPPHIRE_RAPIDS_FLAGS)))
    assert check_bf16_supported("x").supports_bf16
    monkeypatch.setenv(cpu_features.CPUINFO_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="MSAF_HF_CPUINFO"):
        cpu_features.detect_cpu_features()
