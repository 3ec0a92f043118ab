"""Helpers to measure DSNet (and a transformers peer, SegFormer-B0): parameters, FLOPs, inference latency and
throughput, in PyTorch and in the exported engines (training throughput: `msaf_hf.training.throughput`).
`msaf-hf benchmark` is the command-line front end; the functions here return plain dictionaries so that results
can be tabulated or written as JSON.

Timing protocol: the callable is run `warmup` times untimed, then `repeats` times, each repeat timing `number`
consecutive calls (the device is synchronised before and after each repeat). Latency is reported per call
(one batch); throughput is `batch_size / median latency`.
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

DSNET_PRESETS = ("dsnet", "dsnet-head64", "dsnet-head256", "dsnet-base")
PEER_MODELS = ("segformer-b0",)
MODEL_NAMES = DSNET_PRESETS + PEER_MODELS
INFERENCE_VARIANTS = ("eval", "deploy")
# Exported engines (msaf_hf.engines; DSNet only): exported from the same weights at the benchmarked size, run with
# torch's thread count. int8 is calibrated on a few random images (speed only) with the default quantization scheme of
# msaf_hf.engines.quantization, or the one an `InferenceCase` names. bf16 (OpenVINO) needs avx512_bf16 or AMX.
ENGINE_VARIANTS = ("openvino-fp32", "openvino-bf16", "openvino-int8", "onnxruntime-fp32", "onnxruntime-int8")
# torch.autocast dtypes of the torch variants: "none", or "bfloat16" (on the CPU: avx512_bf16 or AMX).
AUTOCAST_DTYPES = ("none", "bfloat16")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ------------------------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------------------------


def build_benchmark_model(name: str, num_labels: int = 19, seed: int = 0, weights: str | None = None) -> nn.Module:
    """A randomly initialised model by name: a DSNet preset (`dsnet`, `dsnet-head64`, `dsnet-head256`,
    `dsnet-base`, with auxiliary heads as published) or the peer `segformer-b0` (transformers'
    `SegformerForSemanticSegmentation` with the B0 defaults of `SegformerConfig`). Nothing is downloaded.

    DSNet's BatchNorms get non-trivial running statistics so that folding them is not a no-op. With `weights` (a
    `from_pretrained` source), a DSNet name loads that checkpoint instead (its own configuration and classes)."""
    torch.manual_seed(seed)
    if name in DSNET_PRESETS and weights is not None:
        from .modeling_dsnet import DSNetForSemanticSegmentation

        return DSNetForSemanticSegmentation.from_pretrained(weights)
    if name in DSNET_PRESETS:
        from .modeling_dsnet import DSNetForSemanticSegmentation
        from .presets import load_preset

        model = DSNetForSemanticSegmentation(load_preset(name, num_labels=num_labels))
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    shape = module.running_mean.shape
                    module.running_mean.copy_(torch.rand(shape, generator=generator) * 0.2 - 0.1)
                    module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                    module.weight.copy_(torch.rand(shape, generator=generator) * 0.5 + 0.75)
                    module.bias.copy_(torch.rand(shape, generator=generator) * 0.2 - 0.1)
        return model
    if name == "segformer-b0":
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        return SegformerForSemanticSegmentation(SegformerConfig(num_labels=num_labels))
    raise ValueError(f"Unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}.")


def is_dsnet(model: nn.Module) -> bool:
    return getattr(getattr(model, "config", None), "model_type", None) == "dsnet"


def resolve_memory_format(memory_format: str, variant: str) -> torch.memory_format:
    """`auto` keeps the model as its variant leaves it: contiguous for `eval`, channels-last for `deploy`."""
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}.")
    if memory_format == "auto":
        return torch.channels_last if variant == "deploy" else torch.contiguous_format
    return torch.channels_last if memory_format == "channels_last" else torch.contiguous_format


def prepare_inference_model(
    model: nn.Module,
    variant: str = "eval",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
    compile_mode: str = "none",
) -> nn.Module:
    """Put `model` in the benchmarked form. `eval`: `model.eval()`; `deploy` (DSNet only): `model.to_deploy()`
    (BatchNorms folded, auxiliary heads dropped). Folding happens in float32 before any dtype cast."""
    if variant not in INFERENCE_VARIANTS:
        raise ValueError(f"variant must be one of {INFERENCE_VARIANTS}, got {variant!r}.")
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}.")
    model = model.eval()
    if variant == "deploy":
        if not hasattr(model, "to_deploy"):
            raise ValueError(f"variant 'deploy' needs a DSNet model; {type(model).__name__} has no to_deploy().")
        model = model.to_deploy()
    model = model.to(device=device, dtype=dtype).to(memory_format=memory_format)
    if compile_mode != "none":
        model = torch.compile(model, mode=None if compile_mode == "default" else compile_mode)
    return model


# ------------------------------------------------------------------------------------------------------------------
# Counting
# ------------------------------------------------------------------------------------------------------------------


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, pixel_values_shape: tuple[int, int, int, int], **forward_kwargs: Any) -> int:
    """FLOPs of one forward pass, from `torch.utils.flop_counter.FlopCounterMode` (a multiply-add counts as
    2 FLOPs; convolutions and matrix products only, elementwise ops and normalisation are not counted). Run on
    a copy of the model on the meta device, so nothing is computed."""
    from torch.utils.flop_counter import FlopCounterMode

    meta_model = copy.deepcopy(model).to("meta")
    dtype = next(meta_model.parameters()).dtype
    pixel_values = torch.empty(pixel_values_shape, device="meta", dtype=dtype)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(pixel_values=pixel_values, **forward_kwargs)
    return int(counter.get_total_flops())


# ------------------------------------------------------------------------------------------------------------------
# Timing
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Seconds per call of each timed repeat, with summary statistics."""

    times_s: list[float]
    number: int
    median_s: float = field(init=False)
    min_s: float = field(init=False)
    max_s: float = field(init=False)
    iqr_s: float = field(init=False)
    stdev_s: float = field(init=False)

    def __post_init__(self) -> None:
        if not self.times_s:
            raise ValueError("Timing needs at least one timed repeat.")
        ordered = sorted(self.times_s)
        self.median_s = statistics.median(ordered)
        self.min_s, self.max_s = ordered[0], ordered[-1]
        if len(ordered) >= 4:
            quartiles = statistics.quantiles(ordered, n=4)
            self.iqr_s = quartiles[2] - quartiles[0]
        else:
            self.iqr_s = self.max_s - self.min_s
        self.stdev_s = statistics.stdev(ordered) if len(ordered) > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    elif device.type == "xpu":
        torch.xpu.synchronize(device)


def time_callable(
    fn: Callable[[], Any],
    device: torch.device | str = "cpu",
    warmup: int = 2,
    repeats: int = 5,
    number: int = 1,
) -> Timing:
    """Run `fn` `warmup` times, then time `repeats` repeats of `number` calls each; seconds per call."""
    if repeats < 1 or number < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1, number >= 1, warmup >= 0; got {repeats}, {number}, {warmup}.")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - start) / number)
    return Timing(times, number)


def time_callables(
    fns: list[Callable[[], Any]],
    device: torch.device | str = "cpu",
    warmup: int = 2,
    repeats: int = 5,
    number: int = 1,
    interleave: bool = True,
) -> list[Timing]:
    """`time_callable` for several callables. With `interleave` the warm-up calls and the timed repeats go
    round-robin (one repeat of each in turn), so that a change in background load hits all of them alike;
    otherwise each is timed to completion in turn."""
    if not interleave:
        return [time_callable(fn, device, warmup, repeats, number) for fn in fns]
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for index, fn in enumerate(fns):
            times[index] += time_callable(fn, device, warmup=0, repeats=1, number=number).times_s
    return [Timing(t, number) for t in times]


# ------------------------------------------------------------------------------------------------------------------
# Benchmarks
# ------------------------------------------------------------------------------------------------------------------


# The float32 reference: one large 3x3 convolution in channels-last (oneDNN's fastest float32 path here), the
# best rate float32 convolutions reach on this machine; measured 10-25% above a large matrix product on AVX2.
PEAK_CONVOLUTION = {"channels": 256, "height": 64, "width": 128}
PEAK_CONVOLUTION_FLOPS = 2 * 9 * 256 * 256 * 64 * 128


def _peak_convolution_step() -> Callable[[], torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    channels, height, width = PEAK_CONVOLUTION.values()
    x = torch.randn(1, channels, height, width, generator=generator).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, channels, 3, 3, generator=generator).contiguous(memory_format=torch.channels_last)
    return lambda: torch.nn.functional.conv2d(x, weight, padding=1)


def measure_float32_peak(repeats: int = 5) -> float:
    """FLOP/s of one large float32 3x3 convolution on the CPU with torch's current thread count (median of repeats):
    the rate a convolutional network's float32 layers can hope for on this machine."""
    with torch.inference_mode():
        timing = time_callable(_peak_convolution_step(), "cpu", warmup=2, repeats=repeats)
    return PEAK_CONVOLUTION_FLOPS / timing.median_s


@dataclass
class InferenceCase:
    """One model variant to time: a model name, `eval`, `deploy` or an engine variant (`openvino-int8`, ...), a
    memory format (`auto`, `contiguous`, `channels_last`), a compile mode, for an int8 engine the quantization
    scheme (a name in `msaf_hf.engines.QUANTIZATION_SCHEMES`; None: the default scheme), and for a torch variant an
    autocast dtype (`none` or `bfloat16`)."""

    name: str
    variant: str = "eval"
    memory_format: str = "auto"
    compile_mode: str = "none"
    quantization_scheme: str | None = None
    autocast: str = "none"

    def __post_init__(self) -> None:
        if self.name not in MODEL_NAMES:
            raise ValueError(f"Unknown model {self.name!r}; choose from {', '.join(MODEL_NAMES)}.")
        if self.variant not in INFERENCE_VARIANTS + ENGINE_VARIANTS:
            raise ValueError(f"variant must be one of {INFERENCE_VARIANTS + ENGINE_VARIANTS}, got {self.variant!r}.")
        if self.variant in ENGINE_VARIANTS and self.compile_mode != "none":
            raise ValueError(f"variant {self.variant!r} runs an exported engine: it cannot be torch.compiled.")
        if self.name in PEER_MODELS and self.variant != "eval":
            raise ValueError(f"{self.name} has only the 'eval' variant, got {self.variant!r}.")
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, got {self.memory_format!r}.")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}.")
        if self.quantization_scheme is not None and not self.variant.endswith("-int8"):
            raise ValueError(f"a quantization scheme applies to the int8 engine variants, not {self.variant!r}.")
        if self.autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be one of {AUTOCAST_DTYPES}, got {self.autocast!r}.")
        if self.autocast != "none" and self.variant in ENGINE_VARIANTS:
            raise ValueError(f"autocast applies to the torch variants; {self.variant!r} runs as exported.")


def benchmark_inference_cases(
    cases: list[InferenceCase],
    height: int = 512,
    width: int = 1024,
    batch_size: int = 1,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    warmup: int = 2,
    repeats: int = 5,
    number: int = 1,
    num_labels: int = 19,
    count_flops_too: bool = True,
    inductor_freezing: bool = False,
    interleave: bool = True,
    dsnet_weights: str | None = None,
    float32_peak: bool = False,
) -> list[dict[str, Any]]:
    """Parameters, FLOPs and forward latency / images per second of several model variants (no labels: the
    inference path, under `torch.inference_mode`).

    With `interleave` (the default) every variant is built first and the timed repeats go round-robin (one
    repeat of each variant in turn), so that a change in background load on a shared machine hits all of them
    alike and their ratios stay meaningful; otherwise each variant is timed to completion in turn.
    `inductor_freezing` compiles with `torch._inductor.config.freezing` (weights as constants: on CPU,
    prepacked oneDNN convolutions fused with their activations). `dsnet_weights`: a `from_pretrained` source whose
    weights the DSNet rows use instead of random ones (see `build_benchmark_model`).

    `float32_peak` (CPU): a large float32 convolution (`measure_float32_peak`) is timed in every round too, and each
    record gets `float32_peak_flops` (its median FLOP/s) and `share_of_float32_peak` (the median over rounds of the
    record's FLOP/s over the convolution's in the same round), so that drifting machine speed cancels."""
    if repeats < 1 or number < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1, number >= 1, warmup >= 0; got {repeats}, {number}, {warmup}.")
    device = torch.device(device)
    shape = (batch_size, 3, height, width)
    if device.type == "cpu" and any(c.autocast == "bfloat16" or c.variant == "openvino-bf16" for c in cases):
        from .cpu_features import check_bf16_supported

        check_bf16_supported("bf16 rows (--autocast bfloat16, openvino-bf16)", alternatives=("float32 rows", "int8"))
    if any(case.compile_mode != "none" for case in cases):
        import torch._dynamo.config as dynamo_config
        import torch._inductor.config as inductor_config

        torch._dynamo.reset()
        inductor_config.freezing = inductor_freezing
        dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, 8 * len(cases))

    prepared = []
    engine_dir = None
    for case in cases:
        if case.variant in ENGINE_VARIANTS:
            import tempfile

            engine_dir = engine_dir or tempfile.TemporaryDirectory(prefix="msaf_hf-benchmark-")
            prepared.append(
                _prepare_engine_case(case, engine_dir.name, shape, num_labels, count_flops_too, dsnet_weights)
            )
            continue
        fmt = resolve_memory_format(case.memory_format, case.variant)
        record_dtype = str(dtype).removeprefix("torch.")
        model = build_benchmark_model(case.name, num_labels, weights=dsnet_weights)
        model = prepare_inference_model(model, case.variant, device, dtype, fmt, "none")
        record: dict[str, Any] = {
            "mode": "inference",
            "model": case.name,
            "variant": case.variant,
            "batch_size": batch_size,
            "height": height,
            "width": width,
            "dtype": record_dtype,
            "device": str(device),
            "memory_format": "channels_last" if fmt == torch.channels_last else "contiguous",
            "compile": case.compile_mode + ("+freezing" if case.compile_mode != "none" and inductor_freezing else ""),
            "params": count_parameters(model),
            "flops_per_image": count_flops(model, shape) / batch_size if count_flops_too else None,
            "weights": dsnet_weights if is_dsnet(model) and dsnet_weights else "random",
            "autocast": case.autocast,
            "executed_precision": f"{case.autocast} (autocast)" if case.autocast != "none" else record_dtype,
        }
        if case.compile_mode != "none":
            model = torch.compile(model, mode=None if case.compile_mode == "default" else case.compile_mode)
        pixel_values = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)

        def step(
            model: nn.Module = model, pixel_values: torch.Tensor = pixel_values, autocast: str = case.autocast
        ) -> torch.Tensor:
            with torch.autocast(device.type, dtype=DTYPES.get(autocast), enabled=autocast != "none"):
                return model(pixel_values=pixel_values, return_dict=False)[0]

        with torch.inference_mode():
            start = time.perf_counter()
            step()  # the first call pays for compilation (when compiling) and one-off allocations
            synchronize(device)
            record["first_call_s"] = time.perf_counter() - start
        prepared.append((record, step))

    steps = [step for _, step in prepared]
    float32_peak = float32_peak and device.type == "cpu"
    if float32_peak:
        steps.append(_peak_convolution_step())
    with torch.inference_mode():
        timings = time_callables(steps, device, warmup, repeats, number, interleave)
    peak_flops = [PEAK_CONVOLUTION_FLOPS / t for t in timings[-1].times_s] if float32_peak else []
    results = []
    for (record, _), timing in zip(prepared, timings, strict=False):
        record.update(latency=timing.as_dict(), images_per_s=batch_size / timing.median_s, interleaved=interleave)
        if peak_flops:
            record["float32_peak_flops"] = statistics.median(peak_flops)
            flops = record.get("flops_per_image")
            if flops:
                shares = [flops * batch_size / t / peak for t, peak in zip(timing.times_s, peak_flops, strict=False)]
                record["share_of_float32_peak"] = statistics.median(shares)
        results.append(record)
    if engine_dir is not None:
        engine_dir.cleanup()
    return results


def _prepare_engine_case(
    case: InferenceCase,
    folder: str,
    shape: tuple[int, int, int, int],
    num_labels: int,
    count_flops_too: bool,
    weights: str | None = None,
) -> tuple[dict[str, Any], Callable[[], Any]]:
    """Export `case.name`'s weights (the same seed as the torch variants) to `case.variant`'s engine and return the
    benchmark record and the timed step. The export's parity check (max relative difference of the logits to the
    torch eval model, argmax agreement) goes into the record."""
    import json

    from .engines import export_to_engine, load_segmentation_model

    if case.name not in DSNET_PRESETS:
        raise ValueError(f"variant {case.variant!r} needs a DSNet model, got {case.name!r}.")
    engine, precision = case.variant.split("-")
    batch_size, channels, height, width = shape
    model = build_benchmark_model(case.name, num_labels, weights=weights).eval()
    calibration = None
    if precision == "int8":
        generator = torch.Generator().manual_seed(0)
        calibration = [torch.randn(1, channels, height, width, generator=generator) for _ in range(4)]
    path = export_to_engine(model, os.path.join(folder, f"{case.variant}-{case.quantization_scheme}"), engine=engine,
                            precision=precision, height=height, width=width, calibration_images=calibration,
                            quantization_scheme=case.quantization_scheme)
    check = json.loads(open(os.path.join(path, "config.json"), encoding="utf-8").read())["engine"].get("check")
    engine_model = load_segmentation_model(path, num_threads=torch.get_num_threads())
    pixel_values = torch.randn(shape)
    record: dict[str, Any] = {
        "mode": "inference", "model": case.name, "variant": case.variant, "batch_size": batch_size,
        "height": height, "width": width, "dtype": {"int8": "int8", "bf16": "bfloat16"}.get(precision, "float32"),
        "device": "cpu", "executed_precision": f"{engine} {engine_model.executed_precision}",
        "memory_format": "-", "compile": "none", "params": count_parameters(model),
        "flops_per_image": count_flops(model, shape) / batch_size if count_flops_too else None,  # the same network
        "engine_check": check, "weights": weights or "random",
    }
    if precision == "int8":
        record["quantization_scheme"] = json.loads(open(os.path.join(path, "config.json"), encoding="utf-8").read())[
            "engine"]["quantization"]["scheme"]["name"]

    def step(engine_model: nn.Module = engine_model, pixel_values: torch.Tensor = pixel_values) -> Any:
        return engine_model(pixel_values=pixel_values).logits

    start = time.perf_counter()
    step()
    record["first_call_s"] = time.perf_counter() - start
    return record, step


def benchmark_inference(
    name: str,
    variant: str = "eval",
    memory_format: str = "auto",
    compile_mode: str = "none",
    **kwargs: Any,
) -> dict[str, Any]:
    """`benchmark_inference_cases` for a single variant (keyword arguments as there)."""
    return benchmark_inference_cases([InferenceCase(name, variant, memory_format, compile_mode)], **kwargs)[0]


def environment() -> dict[str, Any]:
    """What the figures depend on: versions, threads, device name and the load average."""
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    if hasattr(os, "getloadavg"):
        info["load_average"] = list(os.getloadavg())
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    from .cpu_features import detect_cpu_features

    info["cpu"] = detect_cpu_features().to_dict()
    return info


def cpu_header() -> str:
    """The benchmark table's first line: the CPU model and which of AVX2, AVX-512, VNNI, BF16, AMX it has (with the
    flags behind them), which decide how fast each precision runs here."""
    from .cpu_features import detect_cpu_features

    return f"# CPU: {detect_cpu_features().summary()}"


__all__ = [
    "AUTOCAST_DTYPES",
    "COMPILE_MODES",
    "DSNET_PRESETS",
    "DTYPES",
    "INFERENCE_VARIANTS",
    "InferenceCase",
    "MEMORY_FORMATS",
    "MODEL_NAMES",
    "Timing",
    "synchronize",
    "time_callables",
    "benchmark_inference",
    "benchmark_inference_cases",
    "build_benchmark_model",
    "count_flops",
    "count_parameters",
    "cpu_header",
    "environment",
    "measure_float32_peak",
    "prepare_inference_model",
    "resolve_memory_format",
    "time_callable",
]
