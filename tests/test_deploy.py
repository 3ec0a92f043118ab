"""Deploy mode: BatchNorms folded into convolutions, auxiliary heads dropped, channels-last; parity with the
published code, save/load, torch.compile. Speed is measured by scripts/benchmark.py, not here."""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import PARITY_CASES, load_fixture, require_reference
from torch import nn

from msaf_hf import DSNetForSemanticSegmentation, DSNetModel, load_preset
from msaf_hf.convert import convert_original_checkpoint
from msaf_hf.modeling_dsnet import ConvNormAct

BATCH_NORMS = nn.modules.batchnorm._BatchNorm


def _batch_norms(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, BATCH_NORMS)]


def _randomise_batch_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so that folding is not a no-op."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BATCH_NORMS):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.rand(shape, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(shape, generator=generator) - 0.5)
    return model


@pytest.fixture
def tiny_model(tiny_config) -> DSNetForSemanticSegmentation:
    torch.manual_seed(0)
    return _randomise_batch_norms(DSNetForSemanticSegmentation(tiny_config)).eval()


def _relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours - reference).abs().max() / reference.abs().max()).item()


# ---------------------------------------------------------------------------------------------------------------
# Parity with the published code after to_deploy()
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", PARITY_CASES)
def test_deployed_model_matches_published_logits(case):
    tensors, meta = load_fixture(case)
    names = {i: f"c{i}" for i in range(meta["num_classes"])}
    model, _ = convert_original_checkpoint(require_reference() / f"{case}.pth", id2label=names)
    deployed = model.to_deploy()
    assert deployed is model  # in place, one call

    pixel_values = tensors["pixel_values"]
    with torch.no_grad():
        out = deployed(pixel_values.contiguous(memory_format=torch.channels_last), output_auxiliary_logits=True)
    assert out.auxiliary_logits is None
    logits = F.interpolate(out.logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)
    reference = tensors["eval.logits"]
    error = _relative_error(logits, reference)
    assert error <= 1e-3, f"{case}: relative error {error:.2e} after to_deploy()"
    agreement = (logits.argmax(1) == reference.argmax(1)).float().mean()
    assert agreement > 0.999, f"{case}: argmax agrees on {agreement:.4%} of pixels"


def test_to_deploy_folds_every_batch_norm_and_drops_auxiliary_heads(tiny_model):
    assert _batch_norms(tiny_model)  # there is something to fold
    tiny_model.train()
    tiny_model.to_deploy()
    assert _batch_norms(tiny_model) == []
    assert tiny_model.auxiliary_heads is None
    assert not tiny_model.training
    assert tiny_model.config.deploy_mode is True
    assert tiny_model.config.use_auxiliary_heads is False
    units = [m for m in tiny_model.modules() if isinstance(m, ConvNormAct)]
    assert units and all(isinstance(m.norm, nn.Identity) and m.conv.bias is not None for m in units)
    convs = [m for m in tiny_model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


def test_deployed_model_matches_eval_model_and_is_idempotent(tiny_model):
    pixel_values = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        reference = tiny_model(pixel_values).logits
        deployed = copy.deepcopy(tiny_model).to_deploy()
        ours = deployed(pixel_values).logits
        # The deploy-mode contract (as for the published fixtures): 1e-3 of the largest logit. Random weights and
        # large logits make float32 rounding show at ~1e-4 here.
        assert _relative_error(ours, reference) <= 1e-3
        assert (ours.argmax(1) == reference.argmax(1)).float().mean() > 0.999
        state = {k: v.clone() for k, v in deployed.state_dict().items()}
        deployed.to_deploy()  # a second call changes nothing
        assert all(torch.equal(state[k], v) for k, v in deployed.state_dict().items())
        assert torch.equal(deployed(pixel_values).logits, ours)


def test_fuse_norm_equals_conv_then_norm_for_sync_batch_norm_and_double():
    torch.manual_seed(0)
    for norm_type, dtype in ((nn.BatchNorm2d, torch.float64), (nn.SyncBatchNorm, torch.float32)):
        unit = ConvNormAct(6, 5, 3, dilation=2, bias=True)
        unit.norm = norm_type(5)
        _randomise_batch_norms(unit)
        unit = unit.to(dtype).eval()
        inputs = torch.randn(2, 6, 9, 11, dtype=dtype)
        with torch.no_grad():
            reference = unit(inputs)
            unit.fuse_norm()
            ours = unit(inputs)
        assert isinstance(unit.norm, nn.Identity)
        assert unit.conv.weight.dtype == unit.conv.bias.dtype == dtype
        torch.testing.assert_close(ours, reference, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-6)


def test_fuse_norm_refuses_a_norm_without_running_statistics():
    unit = ConvNormAct(3, 4, 3)
    unit.norm = nn.BatchNorm2d(4, track_running_stats=False)
    with pytest.raises(ValueError, match="running statistics"):
        unit.fuse_norm()


# ---------------------------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------------------------


def test_deploy_mode_survives_save_and_load(tiny_model, tmp_path):
    from transformers import AutoModelForSemanticSegmentation

    deployed = tiny_model.to_deploy()
    pixel_values = torch.randn(1, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = deployed(pixel_values).logits
    deployed.save_pretrained(tmp_path)

    from safetensors import safe_open

    with safe_open(str(tmp_path / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert not any("running_mean" in k or ".norm." in k or "auxiliary_heads" in k for k in keys)

    for loader in (DSNetForSemanticSegmentation, AutoModelForSemanticSegmentation):
        loaded, info = loader.from_pretrained(tmp_path, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"]
        assert loaded.config.deploy_mode is True
        assert _batch_norms(loaded) == []
        assert loaded.auxiliary_heads is None
        assert not loaded.training
        assert all(
            p.is_contiguous(memory_format=torch.channels_last) for p in loaded.parameters() if p.ndim == 4
        ), "a deployed checkpoint should load channels-last, as to_deploy() left it"
        with torch.no_grad():
            assert torch.equal(loaded(pixel_values).logits, expected)

    encoder = DSNetModel.from_pretrained(tmp_path)  # the encoder alone loads fused too
    assert _batch_norms(encoder) == []


def test_deploy_mode_on_an_unfolded_checkpoint_is_refused(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)  # not deployed: BatchNorms with running statistics
    with pytest.raises(ValueError, match="to_deploy"):
        DSNetForSemanticSegmentation.from_pretrained(tmp_path, deploy_mode=True)
    loaded, info = DSNetForSemanticSegmentation.from_pretrained(tmp_path, output_loading_info=True)
    assert loaded.config.deploy_mode is False and _batch_norms(loaded) and not info["missing_keys"]


def test_config_with_deploy_mode_builds_a_fused_model(tiny_config):
    tiny_config.deploy_mode = True
    model = DSNetForSemanticSegmentation(tiny_config)
    assert _batch_norms(model) == []
    assert model.auxiliary_heads is None


# ---------------------------------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_deployed_model_traces_as_one_graph(tiny_model):
    """Dynamo captures the whole deployed forward (no graph break) and AOT autograd handles its in-place ops."""
    deployed = tiny_model.to_deploy()
    pixel_values = torch.randn(2, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    compiled = torch.compile(deployed, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        expected = deployed(pixel_values).logits
        assert _relative_error(compiled(pixel_values).logits, expected) <= 1e-6


@pytest.mark.slow
def test_torch_compile_of_deployed_model_matches_eager(tiny_model):
    """The default (inductor) backend, as a user would call it; about a minute of compilation on a CPU."""
    deployed = tiny_model.to_deploy()
    pixel_values = torch.randn(2, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    compiled = torch.compile(deployed, fullgraph=True)
    with torch.no_grad():
        expected = deployed(pixel_values).logits
        ours = compiled(pixel_values).logits
    assert ours.shape == expected.shape
    assert _relative_error(ours, expected) <= 1e-4
    assert (ours.argmax(1) == expected.argmax(1)).float().mean() > 0.999


# ---------------------------------------------------------------------------------------------------------------
# Training path: no host synchronisation in the model's forward, loss and backward
# ---------------------------------------------------------------------------------------------------------------


def test_training_step_reads_no_tensor_data_on_the_host(tiny_config):
    """On the meta device any `.item()`, `bool(tensor)`, `nonzero` or boolean-mask indexing would fail: the
    training forward with the published loss (OHEM with class weights, auxiliary heads) and its backward need
    no device-to-host read. (The label-value check reads labels only when they are CPU tensors.)"""
    config = load_preset("dsnet", base_channels=4, num_labels=5, ohem_min_kept=64, class_weights=[1, 0.5, 2, 1, 1])
    model = DSNetForSemanticSegmentation(config).to("meta").train()
    pixel_values = torch.empty(2, 3, 64, 96, device="meta")
    labels = torch.empty(2, 64, 96, dtype=torch.long, device="meta")
    out = model(pixel_values, labels=labels)
    assert out.loss.shape == () and len(out.auxiliary_losses) == 2
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------
# The benchmark script (its figures are measured by running it, not here: this only checks what it reports)
# ---------------------------------------------------------------------------------------------------------------


def _load_benchmark_script():
    """``msaf-hf benchmark`` (``scripts/benchmark.py`` is a thin wrapper over it); importing it runs nothing."""
    return importlib.import_module("msaf_hf.commands.benchmark")


@pytest.mark.slow
def test_benchmark_script_reports_eval_and_deploy(tmp_path, capsys):
    module = _load_benchmark_script()
    output = tmp_path / "benchmark.json"
    arguments = ["inference", "--models", "dsnet-head64", "--variants", "eval", "deploy", "--height", "64",
                 "--width", "96", "--warmup", "0", "--repeats", "2", "--num-labels", "5", "--json", str(output)]
    assert module.main(arguments) == 0
    table = capsys.readouterr().out
    assert "dsnet-head64" in table and "deploy" in table and "img/s" in table
    evaluated, deployed = json.loads(output.read_text())["results"]
    assert (evaluated["variant"], deployed["variant"]) == ("eval", "deploy")
    assert (evaluated["memory_format"], deployed["memory_format"]) == ("contiguous", "channels_last")
    assert evaluated["flops_per_image"] == deployed["flops_per_image"] > 0  # folding removes no convolution
    assert deployed["params"] < evaluated["params"]  # BatchNorms and auxiliary heads are gone
    assert len(deployed["latency"]["times_s"]) == 2 and deployed["images_per_s"] > 0
    assert "paired" in table
    # The float32 reference: a large convolution timed in the same rounds, each row's share of its FLOP/s.
    assert evaluated["float32_peak_flops"] > 0 and 0 < evaluated["share_of_float32_peak"] < 5
    assert "float32 peak here" in table and "float32 can beat it by about" in table


@pytest.mark.slow
def test_benchmark_times_given_weights(tmp_path, tiny_model):
    module = _load_benchmark_script()
    tiny_model.save_pretrained(tmp_path / "weights")
    output = tmp_path / "benchmark.json"
    arguments = ["inference", "--models", "dsnet", "--variants", "eval", "--height", "32", "--width", "32",
                 "--warmup", "0", "--repeats", "1", "--weights", str(tmp_path / "weights"), "--json", str(output)]
    assert module.main(arguments) == 0
    (result,) = json.loads(output.read_text())["results"]
    assert result["weights"] == str(tmp_path / "weights")
    assert result["params"] == sum(p.numel() for p in tiny_model.parameters())  # the checkpoint, not the preset


def test_benchmark_roofline_bounds_float32_by_the_first_rows_share_of_the_peak():
    module = _load_benchmark_script()
    row = {"model": "dsnet", "variant": "eval", "dtype": "float32", "float32_peak_flops": 125e9}
    rows = [dict(row, share_of_float32_peak=0.8), dict(row, variant="openvino-fp32", share_of_float32_peak=0.95),
            dict(row, variant="openvino-int8", quantization_scheme="balanced", dtype="int8", share_of_float32_peak=1.9)]
    text = module.roofline(rows)
    # eval runs at 80% of the reference convolution's FLOP/s: float32 can be about 1/0.8 = 1.25x faster at most.
    assert "125 GFLOP/s" in text and "dsnet eval (float32): 80% of the peak" in text
    assert "beat it by about 1.25x" in text and text.count("beat it") == 1  # for the first row only
    assert "openvino-fp32 (float32): 95%" in text and "openvino-int8 (balanced) (int8): 190%" in text


def test_benchmark_shares_of_the_float32_peak_are_paired_per_round(monkeypatch):
    from msaf_hf import benchmarking

    # Round 2 runs everything at half speed: the share of the peak must not move.
    rounds = iter([1.0, 0.5, 2.0, 1.0])  # (model, reference convolution) for round 1, then for round 2

    def fake_time_callables(fns, *args, **kwargs):
        times = [next(rounds) for _ in range(4)]
        return [benchmarking.Timing(times[0::2], 1), benchmarking.Timing(times[1::2], 1)]

    monkeypatch.setattr(benchmarking, "time_callables", fake_time_callables)
    monkeypatch.setattr(benchmarking, "count_flops", lambda model, shape: benchmarking.PEAK_CONVOLUTION_FLOPS / 2)
    (result,) = benchmarking.benchmark_inference_cases([benchmarking.InferenceCase("dsnet-head64")], height=32,
                                                        width=32, warmup=0, repeats=2, float32_peak=True)
    assert result["share_of_float32_peak"] == pytest.approx(0.25)  # half the FLOPs in twice the time, both rounds
    assert result["float32_peak_flops"] == pytest.approx(benchmarking.PEAK_CONVOLUTION_FLOPS * (1 / 0.5 + 1 / 1.0) / 2)


def test_benchmark_paired_speedup_cancels_drifting_load():
    module = _load_benchmark_script()

    def result(times, interleaved=True):
        return {"latency": {"times_s": times}, "interleaved": interleaved}

    # Load doubles every time in round 2 and 3: each round the second variant is 1.5x faster.
    reference, faster = result([1.0, 2.0, 2.0]), result([1.0 / 1.5, 2.0 / 1.5, 2.0 / 1.5])
    assert module.paired_speedup(faster, reference) == pytest.approx(1.5)
    # One round where the load hit only the faster variant moves the median of ratios not at all.
    disturbed = result([1.0 / 1.5, 2.0 / 1.5, 3.0])
    assert module.paired_speedup(disturbed, reference) == pytest.approx(1.5)
    assert module.paired_speedup(result([0.5, 1.0, 1.0], interleaved=False), reference) is None
    assert module.paired_speedup(result([0.5, 1.0]), reference) is None


def test_time_callables_goes_round_robin():
    from msaf_hf.benchmarking import time_callables

    calls = []
    timings = time_callables([lambda: calls.append("a"), lambda: calls.append("b")], warmup=1, repeats=2)
    assert calls == ["a", "b"] * 3 and [len(t.times_s) for t in timings] == [2, 2]
    calls.clear()
    time_callables([lambda: calls.append("a"), lambda: calls.append("b")], warmup=1, repeats=2, interleave=False)
    assert calls == ["a"] * 3 + ["b"] * 3
