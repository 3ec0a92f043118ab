"""bf16 and `--precision auto` exports, the executed precision, and bf16 autocast in evaluate/benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from msaf_hf import DSNetForSemanticSegmentation, load_preset
from msaf_hf.cpu_features import CPUINFO_ENV, CPUFeatures, UnsupportedPrecisionError, detect_cpu_features
from msaf_hf.engines import export_to_engine, load_calibration_images, load_segmentation_model, read_engine_spec
from msaf_hf.engines.precision import choose_precision

REPO = Path(__file__).resolve().parents[2]
SIZE = (64, 64)
AVX2 = "avx avx2 fma"
AVX512_VNNI = "avx2 avx512f avx512bw avx512_vnni"  # e.g. Cascade Lake: int8 dot products, no bf16
SAPPHIRE_RAPIDS = "avx2 avx512f avx512_vnni avx_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
HAS_BF16 = detect_cpu_features().supports_bf16


def _simulate(monkeypatch, tmp_path, flags: str, name: str = "Simulated CPU") -> None:
    path = tmp_path / f"cpuinfo-{abs(hash(flags))}"
    path.write_text(f"processor\t: 0\nmodel name\t: {name}\nflags\t\t: {flags}\n")
    monkeypatch.setenv(CPUINFO_ENV, str(path))


@pytest.fixture(scope="module")
def tiny_model() -> DSNetForSemanticSegmentation:
    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=4, ohem_min_kept=64))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) * 0.2 - 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# auto: the choice and its reason, for each branch
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "flags", "calibration", "precision", "in_reason"),
    [
        ("openvino", SAPPHIRE_RAPIDS, True, "int8", "avx512_vnni, avx_vnni, amx_int8"),
        ("openvino", AVX2, True, "int8", "no VNNI"),
        ("onnxruntime", AVX512_VNNI, True, "int8", "avx512_vnni"),
        ("openvino", SAPPHIRE_RAPIDS, False, "bf16", "avx512_bf16, amx_bf16"),
        ("openvino", AVX512_VNNI, False, "fp32", "no bfloat16 instructions"),
        ("onnxruntime", SAPPHIRE_RAPIDS, False, "fp32", "no bf16 path"),
    ],
)
def test_auto_choice_and_reason(engine, flags, calibration, precision, in_reason):
    features = CPUFeatures("Some CPU", frozenset(flags.split()))
    choice = choose_precision(engine, calibration, features)
    assert (choice.precision, choice["requested"]) == (precision, "auto")
    assert in_reason in choice.reason and "Some CPU" in choice.reason
    assert choice["cpu"]["model_name"] == "Some CPU"


def test_auto_is_recorded_in_the_exported_config(tmp_path, tiny_model, monkeypatch):
    pytest.importorskip("openvino")
    _simulate(monkeypatch, tmp_path, AVX512_VNNI, "Cascade Lake")
    folder = export_to_engine(tiny_model, tmp_path / "auto", engine="openvino", precision="auto", height=SIZE[0],
                              width=SIZE[1])
    spec = read_engine_spec(folder)
    assert spec.precision == "fp32"
    assert spec.precision_choice["requested"] == "auto" and spec.precision_choice["precision"] == "fp32"
    assert "Cascade Lake has no bfloat16 instructions" in spec.precision_choice["reason"]
    assert spec.precision_choice["cpu"]["instruction_sets"]["VNNI"] is True
    assert load_segmentation_model(folder).executed_precision == "f32"


@pytest.mark.slow
def test_auto_with_calibration_exports_int8(tmp_path, tiny_model, monkeypatch):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    _simulate(monkeypatch, tmp_path, SAPPHIRE_RAPIDS)
    calibration = load_calibration_images("synthetic", num_samples=4, size=SIZE)
    folder = export_to_engine(tiny_model, tmp_path / "auto8", engine="openvino", precision="auto", height=SIZE[0],
                              width=SIZE[1], calibration_images=calibration)
    spec = read_engine_spec(folder)
    assert spec.precision == "int8" and spec.quantization is not None
    assert "calibration set was given" in spec.precision_choice["reason"]
    assert load_segmentation_model(folder).executed_precision.startswith("int8")


# ---------------------------------------------------------------------------------------------------------------
# bf16: refused without the instructions, exported and run where they are
# ---------------------------------------------------------------------------------------------------------------


def test_bf16_export_is_refused_on_a_cpu_without_bf16(tmp_path, tiny_model, monkeypatch):
    pytest.importorskip("openvino")
    _simulate(monkeypatch, tmp_path, AVX512_VNNI, "AMD EPYC 7B12")
    with pytest.raises(UnsupportedPrecisionError) as error:
        export_to_engine(tiny_model, tmp_path / "bf16", engine="openvino", precision="bf16", height=SIZE[0],
                         width=SIZE[1])
    message = str(error.value)
    assert "--precision bf16" in message and "AMD EPYC 7B12" in message
    assert "avx512_bf16" in message and "amx_bf16" in message and "--precision fp32" in message
    assert not (tmp_path / "bf16").exists()  # refused before any work
    with pytest.raises(ValueError, match="--engine openvino"):
        _simulate(monkeypatch, tmp_path, SAPPHIRE_RAPIDS)
        export_to_engine(tiny_model, tmp_path / "ort", engine="onnxruntime", precision="bf16", height=SIZE[0],
                         width=SIZE[1])


def test_export_script_reports_the_missing_instructions(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "model")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"model name\t: Old Core i7\nflags\t\t: {AVX2}\n")
    env = {**os.environ, CPUINFO_ENV: str(cpuinfo), "PYTHONPATH": os.pathsep.join(
        [str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "export.py"), str(tmp_path / "model"),
                             str(tmp_path / "out"), "--precision", "bf16", "--height", "64", "--width", "64"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode != 0
    assert "Old Core i7 has no bfloat16 instructions" in result.stderr.replace("(Old Core i7)", "Old Core i7")
    assert "avx512_bf16" in result.stderr


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has neither avx512_bf16 nor AMX-BF16")
def test_bf16_export_runs_in_bf16_and_stays_close_to_fp32(tmp_path, tiny_model, monkeypatch):
    pytest.importorskip("openvino")
    folder = export_to_engine(tiny_model, tmp_path / "bf16", engine="openvino", precision="bf16", height=SIZE[0],
                              width=SIZE[1])
    config = json.loads((folder / "config.json").read_text())
    assert config["engine"]["precision"] == "bf16"
    model = load_segmentation_model(folder)
    assert model.executed_precision == "bf16"  # OpenVINO's runtime model, not the request
    fp32 = load_segmentation_model(export_to_engine(tiny_model, tmp_path / "fp32", engine="openvino", precision="fp32",
                                           height=SIZE[0], width=SIZE[1]))
    assert fp32.executed_precision == "f32"
    pixel_values = torch.randn(2, 3, 48, 80, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = tiny_model(pixel_values=pixel_values).logits
    ours, exact32 = model(pixel_values=pixel_values).logits, fp32(pixel_values=pixel_values).logits
    scale = reference.abs().max()
    assert (exact32 - reference).abs().max() / scale < 1e-4
    bf16_error = ((ours - reference).abs().max() / scale).item()
    assert 1e-4 < bf16_error < 0.2  # really bf16 (not f32), and bf16-close (8 mantissa bits through ~50 layers)
    # a bf16 folder moved to a CPU without bf16 says so instead of running emulated
    _simulate(monkeypatch, tmp_path, AVX2)
    with pytest.raises(UnsupportedPrecisionError, match="bf16 OpenVINO export"):
        load_segmentation_model(folder)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_BF16, reason="this CPU has neither avx512_bf16 nor AMX-BF16")
def test_evaluate_with_bfloat16_autocast_and_on_a_bf16_export(
    tmp_path, tiny_model, one_thread_and_fresh_accelerate_state
):
    pytest.importorskip("openvino")
    from accelerate.state import AcceleratorState

    from msaf_hf.evaluation import main as evaluate_main

    def main(argv):  # each run builds its own Accelerator, here with another mixed precision
        AcceleratorState._reset_state(True)
        return evaluate_main(argv)

    common = ["--synthetic", "--synthetic_num_labels", "4", "--synthetic_num_eval", "4", "--synthetic_num_train", "4",
              "--eval_split", "validation"]
    tiny_model.save_pretrained(tmp_path / "torch")
    fp32 = main(["--model_name_or_path", str(tmp_path / "torch"), "--output_file", str(tmp_path / "a.json"), *common])
    bf16 = main(["--model_name_or_path", str(tmp_path / "torch"), "--dtype", "bfloat16",
                 "--output_file", str(tmp_path / "b.json"), *common])
    assert fp32["inference_precision"] == "float32" and bf16["inference_precision"] == "bfloat16 (autocast)"
    assert bf16["num_images"] == 4 and bf16["confusion_matrix"] != [[0] * 4] * 4
    folder = export_to_engine(tiny_model, tmp_path / "ov", engine="openvino", precision="bf16", height=SIZE[0],
                              width=SIZE[1])
    engine = main(["--model_name_or_path", str(folder), "--output_file", str(tmp_path / "c.json"), *common])
    assert engine["inference_precision"] == "openvino bf16"
    with pytest.raises(ValueError, match="runs in the precision it was exported at"):
        main(["--model_name_or_path", str(folder), "--dtype", "bfloat16", "--output_file", str(tmp_path / "d.json"),
              *common])


def test_evaluate_refuses_bfloat16_on_a_cpu_without_it(tmp_path, tiny_model, monkeypatch,
                                                      one_thread_and_fresh_accelerate_state):
    from msaf_hf.evaluation import main

    _simulate(monkeypatch, tmp_path, AVX2, "Old Core i7")
    tiny_model.save_pretrained(tmp_path / "torch")
    with pytest.raises(UnsupportedPrecisionError, match="Old Core i7.*avx512_bf16"):
        main(["--model_name_or_path", str(tmp_path / "torch"), "--dtype", "bfloat16", "--use_cpu", "--synthetic",
              "--synthetic_num_labels", "4", "--eval_split", "validation", "--output_file", str(tmp_path / "x.json")])


# ---------------------------------------------------------------------------------------------------------------
# benchmark: the CPU header and the executed precision of each row
# ---------------------------------------------------------------------------------------------------------------


def _benchmark(tmp_path, variants, extra_env=None, autocast=("none",)):
    output = tmp_path / "benchmark.json"
    command = [sys.executable, str(REPO / "scripts" / "benchmark.py"), "inference", "--models", "dsnet", "--variants",
               *variants, "--autocast", *autocast, "--height", "32", "--width", "64", "--warmup", "0", "--repeats",
               "1", "--no-flops", "--threads", "1", "--json", str(output)]
    env = {**os.environ, **(extra_env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env), output


@pytest.mark.slow
@pytest.mark.skipif(not HAS_BF16, reason="this CPU has neither avx512_bf16 nor AMX-BF16")
def test_benchmark_header_names_the_cpu_and_rows_their_executed_precision(tmp_path):
    pytest.importorskip("openvino")
    result, output = _benchmark(tmp_path, ["eval", "openvino-fp32", "openvino-bf16"], autocast=("none", "bfloat16"))
    assert result.returncode == 0, result.stderr[-3000:]
    header = next(line for line in result.stdout.splitlines() if line.startswith("# CPU: "))
    features = detect_cpu_features()
    assert features.model_name in header
    for name, present in features.instruction_sets().items():
        assert f"{name} {'yes' if present else 'no'}" in header
    table_header = next(line for line in result.stdout.splitlines() if line.startswith("model "))
    assert "executed precision" in table_header
    results = json.loads(output.read_text())["results"]
    executed = [(r["variant"], r["executed_precision"]) for r in results]
    assert executed == [("eval", "float32"), ("eval", "bfloat16 (autocast)"), ("openvino-fp32", "openvino f32"),
                        ("openvino-bf16", "openvino bf16")]
    assert json.loads(output.read_text())["environment"]["cpu"]["instruction_sets"]["BF16"] is True


def test_benchmark_refuses_bf16_rows_on_a_cpu_without_bf16(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"model name\t: Old Core i7\nflags\t\t: {AVX2}\n")
    result, _ = _benchmark(tmp_path, ["eval"], {CPUINFO_ENV: str(cpuinfo)}, autocast=("bfloat16",))
    assert result.returncode != 0
    assert "Old Core i7" in result.stderr and "avx512_bf16" in result.stderr
