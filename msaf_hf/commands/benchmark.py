"""``msaf-hf benchmark``: benchmark DSNet (and SegFormer-B0 as a peer): parameters, FLOPs, latency and images/s.

Modes:
  inference  forward passes without labels, for each model and variant (`eval`: the model in eval mode;
             `deploy`: `model.to_deploy()`, BatchNorms folded, auxiliary heads dropped, channels-last)
  training   full training steps (forward with the model's own loss, backward, SGD), with and/or without
             channels-last
  metrics    the evaluation metrics (confusion-matrix mIoU etc.) against reference implementations, from
             scripts/benchmark_metrics.py (a development script: this mode runs from a source checkout)

Examples (CPU, the figures in the README):
  msaf-hf benchmark inference --models dsnet segformer-b0 --variants eval deploy --height 512 --width 1024
  msaf-hf benchmark inference --models dsnet --variants eval deploy --memory_format contiguous channels_last
  msaf-hf benchmark inference --models dsnet --variants eval deploy --compile none default --freezing
  msaf-hf benchmark inference --models dsnet segformer-b0 --variants eval deploy openvino-fp32 \
      openvino-int8 onnxruntime-fp32 onnxruntime-int8 --quantization_schemes balanced accurate --compile none default \
      --freezing --weights outputs/dsnet-published      # inference engines (needs the openvino/onnxruntime extras)
  msaf-hf benchmark training --models dsnet --height 512 --width 1024 --batch_size 2 --channels_last both
  msaf-hf benchmark metrics
GPU (the paper's setting, 1024x2048, fp16; the paper reports 81.9 FPS for DSNet on an RTX 4090-class GPU):
  msaf-hf benchmark inference --device cuda --dtype float16 --height 1024 --width 2048 \\
      --models dsnet dsnet-head64 dsnet-head256 dsnet-base segformer-b0 --variants eval deploy \\
      --memory_format channels_last --compile none default --repeats 10 --number 10

Timed repeats go round-robin over the measured configurations (`--sequential` to time each in turn), so that
background load on a shared machine hits them alike; the `vs first` column divides images/s by the first row
of the same model, and `paired` is the median over rounds of that ratio within each round (robust to load
that drifts during the run). FLOPs come from torch.utils.flop_counter.FlopCounterMode (a multiply-add is 2 FLOPs;
convolutions and matrix products only).

Engine variants export the same weights (random, or `--weights`) to OpenVINO / ONNX Runtime at the benchmarked
size (int8: one row per `--quantization_schemes` scheme, calibrated on random inputs, so only its speed means
anything) and report their logits against the eval model. For float32 on the CPU one large 3x3 convolution is timed in
every round: each row's share of its FLOP/s shows how close the row runs to what float32 reaches on this machine.

One table on stdout; `--json PATH` (or `--json -`) also writes every figure with the environment.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..benchmarking import (
    AUTOCAST_DTYPES,
    COMPILE_MODES,
    DSNET_PRESETS,
    DTYPES,
    ENGINE_VARIANTS,
    INFERENCE_VARIANTS,
    MEMORY_FORMATS,
    MODEL_NAMES,
    InferenceCase,
    benchmark_inference_cases,
    cpu_header,
    environment,
)
from ..engines.quantization import DEFAULT_QUANTIZATION_SCHEME, QUANTIZATION_SCHEMES
from ..training.throughput import TrainingCase, benchmark_training_cases

# The metrics benchmark compares against torchmetrics / scikit-learn: a development script of the source checkout.
METRICS_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark_metrics.py"
PAPER_FPS = {"dsnet": 81.9}  # DSNet at 1024x2048 on an RTX 4090-class GPU (published)


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=None, choices=MODEL_NAMES, metavar="MODEL",
                        help=f"models to measure ({', '.join(MODEL_NAMES)})")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--batch_size", "--batch-size", type=int, default=None)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--compile", nargs="+", choices=COMPILE_MODES, default=["none"],
                        help="torch.compile modes to measure ('none' = eager)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls after the first one")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (median and spread over these)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--num_labels", "--num-labels", type=int, default=19)
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON ('-': stdout)")
    parser.add_argument("--sequential", action="store_true",
                        help="time each configuration to completion in turn (default: repeats go round-robin over "
                             "them, so background load on a shared machine hits them alike)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)

    inference = modes.add_parser("inference", help="forward latency and images/s")
    _common_arguments(inference)
    inference.add_argument("--variants", nargs="+", choices=INFERENCE_VARIANTS + ENGINE_VARIANTS,
                           default=list(INFERENCE_VARIANTS),
                           help="DSNet variants (SegFormer is always 'eval'); the engine variants export the same "
                                "weights to OpenVINO / ONNX Runtime (msaf_hf.engines; needs the extras)")
    inference.add_argument("--quantization_schemes", "--int8-recipes", dest="quantization_schemes", nargs="+",
                           choices=sorted(QUANTIZATION_SCHEMES), default=[DEFAULT_QUANTIZATION_SCHEME.name],
                           help="quantization schemes of the int8 engine variants (one row each; see docs/int8.md; "
                                "--int8-recipes is the deprecated spelling)")
    inference.add_argument("--memory_format", "--memory-format", nargs="+", choices=MEMORY_FORMATS, default=["auto"],
                           help="auto: contiguous for eval, channels-last for deploy (as to_deploy leaves it)")
    inference.add_argument("--autocast", nargs="+", choices=AUTOCAST_DTYPES, default=["none"],
                           help="torch rows under torch.autocast in these dtypes, one row each (bfloat16 on the CPU "
                                "needs avx512_bf16 or AMX; the engine rows run as exported, e.g. openvino-bf16)")
    inference.add_argument("--number", type=int, default=1, help="calls per timed repeat (use >1 on GPUs)")
    inference.add_argument("--no_flops", "--no-flops", action="store_true", help="skip the FLOP count")
    inference.add_argument("--weights", default=None, metavar="SOURCE",
                           help="DSNet weights to time (a from_pretrained folder or Hub id, e.g. a converted published "
                                "checkpoint) instead of random ones; the DSNet rows use its configuration")
    inference.add_argument("--freezing", action="store_true",
                           help="compile with torch._inductor.config.freezing (CPU: prepacked, fused oneDNN convs)")

    training = modes.add_parser("training", help="images/s of full training steps")
    _common_arguments(training)
    training.add_argument("--channels_last", "--channels-last", choices=("no", "yes", "both"), default="both")

    metrics = modes.add_parser(
        "metrics",
        help="evaluation metrics (msaf_hf.evaluation.metrics) vs torchmetrics / scikit-learn, CamVid-sized data",
    )
    metrics.add_argument("--num_samples", "--num-samples", type=int, default=101)
    metrics.add_argument("--height", type=int, default=360)
    metrics.add_argument("--width", type=int, default=480)
    metrics.add_argument("--num_classes", "--num-classes", type=int, default=11)
    metrics.add_argument("--ignore_fraction", "--ignore-fraction", type=float, default=0.1)
    metrics.add_argument("--batch_size", "--batch-size", type=int, default=1, help="maps per update() call")
    metrics.add_argument("--repeats", type=int, default=5)
    metrics.add_argument("--warmup", type=int, default=1)
    metrics.add_argument("--device", default="cpu")
    metrics.add_argument("--seed", type=int, default=0)
    metrics.add_argument("--threads", type=int, default=None)
    metrics.add_argument("--skip_slow_baselines", "--skip-slow-baselines", action="store_true",
                         help="skip torchmetrics with validate_args=True and the scikit-learn timing")
    metrics.add_argument("--json", default=None, metavar="PATH")
    return parser


# ------------------------------------------------------------------------------------------------------------------
# Table
# ------------------------------------------------------------------------------------------------------------------


def _format_row(result: dict[str, Any], reference: dict[str, Any] | None) -> list[str]:
    latency = result["latency"]
    flops = result.get("flops_per_image")
    speedup = f"{result['images_per_s'] / reference['images_per_s']:.2f}x" if reference else "-"
    paired = paired_speedup(result, reference) if reference else None
    return [
        result["model"],
        result["variant"] + (f" ({result['quantization_scheme']})" if result.get("quantization_scheme") else ""),
        result["memory_format"],
        result["dtype"],
        result.get("executed_precision", result["dtype"]),
        result["compile"],
        f"{result['batch_size']}x{result['height']}x{result['width']}",
        f"{result['params'] / 1e6:.2f}",
        "-" if flops is None else f"{flops / 1e9:.1f}",
        f"{latency['median_s'] * 1e3:.1f}",
        f"{latency['min_s'] * 1e3:.1f}-{latency['max_s'] * 1e3:.1f}",
        f"{result['images_per_s']:.3f}" if result["images_per_s"] < 10 else f"{result['images_per_s']:.1f}",
        "-" if flops is None else f"{flops * result['images_per_s'] / 1e9:.0f}",
        speedup,
        "-" if paired is None else f"{paired:.2f}x",
        _format_check(result.get("engine_check")),
    ]


def _format_check(check: dict[str, Any] | None) -> str:
    """An engine's logits against the torch eval model on one random input: max relative difference, argmax
    agreement; then both the engine's and torch float32's difference to the model run in float64."""
    if not check:
        return "-"
    text = f"{check['max_relative_difference']:.1e} / {100 * check['argmax_agreement']:.2f}%"
    if "max_relative_difference_to_float64" in check:
        text += f" / {check['max_relative_difference_to_float64']:.1e} ({check['torch_float32_to_float64']:.1e})"
    return text


def paired_speedup(result: dict[str, Any], reference: dict[str, Any]) -> float | None:
    """Median over the round-robin rounds of `reference time / result time` within each round: unlike the
    ratio of medians, it cancels background load that drifts between rounds. None unless both were timed
    interleaved with the same number of repeats."""
    times, reference_times = result["latency"]["times_s"], reference["latency"]["times_s"]
    if not (result.get("interleaved") and reference.get("interleaved")) or len(times) != len(reference_times):
        return None
    return statistics.median(r / t for r, t in zip(reference_times, times, strict=False))


def format_table(results: list[dict[str, Any]]) -> str:
    """One row per result; `vs first` compares images/s with the first row of the same model (ratio of medians),
    `paired` is the same comparison as the median of per-round ratios (see `paired_speedup`)."""
    header = ["model", "variant", "format", "dtype", "executed precision", "compile", "input", "params(M)",
              "GFLOPs/img",
              "median ms", "min-max ms", "img/s", "GFLOP/s", "vs first", "paired",
              "logits vs eval: rel / argmax / vs float64 (eval's own)"]
    first: dict[str, dict[str, Any]] = {}
    rows = []
    for result in results:
        reference = first.setdefault(result["model"], result)
        rows.append(_format_row(result, None if reference is result else reference))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) for row in rows]
    return "\n".join(lines)


def roofline(results: list[dict[str, Any]]) -> str:
    """How close each row runs to what float32 convolutions reach here. A large float32 3x3 convolution, timed in
    every round beside the variants (`msaf_hf.benchmarking.measure_float32_peak`), is the reference; each row's
    share of its FLOP/s is the median over rounds, so drifting machine speed cancels. The first row's share
    inverted is about the largest float32 speed-up over it this machine allows (a network's many smaller layers run
    below the reference's rate; int8 is not bound by it)."""
    peaks = [r["float32_peak_flops"] for r in results if "float32_peak_flops" in r]
    lines = [f"# float32 peak here (one large 3x3 convolution, timed in every round): "
             f"{statistics.median(peaks) / 1e9:.0f} GFLOP/s"]
    first: dict[str, dict[str, Any]] = {}
    for result in results:
        reference = first.setdefault(result["model"], result)
        share = result.get("share_of_float32_peak")
        if share is None:
            continue
        label = result["variant"] + (f" ({result['quantization_scheme']})" if result.get("quantization_scheme") else "")
        label += "" if result.get("compile", "none") == "none" else f" compiled ({result['compile']})"
        line = f"# {result['model']} {label} ({result['dtype']}): {100 * share:.0f}% of the peak"
        if reference is result and result["dtype"] == "float32":
            line += f"; float32 can beat it by about {1 / share:.2f}x at most here"
        lines.append(line)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------------
# Modes
# ------------------------------------------------------------------------------------------------------------------


def run_inference(args: argparse.Namespace) -> list[dict[str, Any]]:
    cases = []
    for name in args.models or ["dsnet", "segformer-b0"]:
        variants = [v for v in args.variants if name in DSNET_PRESETS or v == "eval"] or ["eval"]
        for variant in variants:
            for memory_format in args.memory_format:
                for compile_mode in args.compile:
                    torch_side_variation = compile_mode != "none" or memory_format != args.memory_format[0]
                    if variant in ENGINE_VARIANTS and torch_side_variation:
                        continue  # an engine runs as exported: once, whatever the torch-side settings
                    schemes = args.quantization_schemes if variant.endswith("-int8") else [None]
                    autocasts = ["none"] if variant in ENGINE_VARIANTS else args.autocast
                    cases += [InferenceCase(name, variant, memory_format, compile_mode, scheme, autocast)
                              for scheme in schemes for autocast in autocasts]
    print(f"# timing {len(cases)} variants{' round-robin' if not args.sequential else ''} ...", file=sys.stderr,
          flush=True)
    return benchmark_inference_cases(
        cases,
        height=args.height,
        width=args.width,
        batch_size=args.batch_size or 1,
        dtype=DTYPES[args.dtype],
        device=args.device,
        warmup=2 if args.warmup is None else args.warmup,
        repeats=args.repeats or 5,
        number=args.number,
        num_labels=args.num_labels,
        count_flops_too=not args.no_flops,
        inductor_freezing=args.freezing,
        interleave=not args.sequential,
        dsnet_weights=args.weights,
        float32_peak=args.device == "cpu" and args.dtype == "float32",
    )


def run_training(args: argparse.Namespace) -> list[dict[str, Any]]:
    choices = {"no": [False], "yes": [True], "both": [False, True]}[args.channels_last]
    cases = [
        TrainingCase(name, channels_last, compile_mode)
        for name in args.models or ["dsnet"]
        for channels_last in choices
        for compile_mode in args.compile
    ]
    print(f"# timing {len(cases)} training configurations ...", file=sys.stderr, flush=True)
    return benchmark_training_cases(
        cases,
        height=args.height,
        width=args.width,
        batch_size=args.batch_size or 2,
        dtype=DTYPES[args.dtype],
        device=args.device,
        warmup=1 if args.warmup is None else args.warmup,
        repeats=args.repeats or 3,
        num_labels=args.num_labels,
        interleave=not args.sequential,
    )


def load_metrics_benchmark() -> Any:
    """The metrics engineer's benchmark module (scripts/benchmark_metrics.py), or None when it is absent."""
    if not METRICS_SCRIPT.is_file():
        return None
    spec = importlib.util.spec_from_file_location("benchmark_metrics", METRICS_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def run_metrics(args: argparse.Namespace) -> dict[str, Any]:
    """The evaluation-metric benchmark of scripts/benchmark_metrics.py (its `run_from_args`); prints its table."""
    module = load_metrics_benchmark()
    if module is None or not hasattr(module, "run_from_args"):
        raise SystemExit(
            f"The evaluation-metric benchmark needs run_from_args() from {METRICS_SCRIPT}, a development "
            "script of the source checkout (an installed package does not ship it): run it from a checkout."
        )
    return module.run_from_args(args)


def _write_json(path: str, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2, default=str)
    if path == "-":
        print(text)
    else:
        Path(path).write_text(text + "\n")
        print(f"# wrote {path}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None) and args.mode != "metrics":
        torch.set_num_threads(args.threads)
    env_before = environment()
    command = " ".join(["msaf-hf benchmark", *(argv if argv is not None else sys.argv[1:])])
    if args.mode == "metrics":
        print(f"# {command}")
        print(f"# load average before {_load(env_before)}")
        report = run_metrics(args)
        print(f"# load average after {_load(environment())}")
        if args.json:
            _write_json(args.json, {"command": command, "environment": env_before, "results": report})
        return 0 if report.get("all_agree", True) else 1
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    results = run_inference(args) if args.mode == "inference" else run_training(args)
    env_after = environment()
    print(f"# {command}")
    print(cpu_header())
    print(f"# torch {env_before['torch']}, {env_before.get('cuda_device', env_before['processor'])}, "
          f"{env_before['torch_threads']} threads, load average before {_load(env_before)} / after {_load(env_after)}")
    print(format_table(results))
    if any("share_of_float32_peak" in result for result in results):
        print(roofline(results))
    for result in results:
        paper_setting = (result["height"], result["width"]) == (1024, 2048)
        if args.mode == "inference" and result["model"] in PAPER_FPS and paper_setting:
            print(f"# {result['model']} {result['variant']} compile={result['compile']}: {result['images_per_s']:.1f} "
                  f"img/s here vs {PAPER_FPS[result['model']]} FPS published (RTX 4090 class, 1024x2048)")
    if args.json:
        _write_json(args.json, {"command": command, "environment": env_before,
                                "load_average_after": env_after.get("load_average"), "results": results})
    return 0


def _load(env: dict[str, Any]) -> str:
    load = env.get("load_average")
    return "n/a" if load is None else "/".join(f"{v:.2f}" for v in load)
