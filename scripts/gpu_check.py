#!/usr/bin/env python
"""One prepared GPU check of msaf_hf, in under 8 minutes on one CUDA GPU, written as one JSON report.

    python scripts/gpu_check.py --output gpu_check.json          # on a CUDA machine (nothing is downloaded)
    python scripts/gpu_check.py --tiny --output smoke.json        # the same code path at tiny sizes (CPU is fine)

What it runs, each part timed and recorded (a part that fails is recorded with its error; the others still run):

1. **data**: a generated dataset in the Cityscapes layout (`leftImg8bit/` + `gtFine/*_labelIds.png`, 19 classes
   through the official labelId -> trainId table): blocky scenes with valid labelIds and some ignored ones, at
   1024x2048 (tiny: 64x128). Nothing can be downloaded on the check machine.
2. **train bf16 / fp16**: `--steps` (50) optimiser steps of the Cityscapes recipe (`configuration/cityscapes.yaml`:
   1024x1024 crops, OHEM + class weights, SGD poly, 3 images per GPU) with `--mixed_precision bf16`, then `fp16`.
   Checked: every logged loss is finite; for fp16 the GradScaler exists, its scale is recorded per step and not every
   step was skipped (a scaler that skips everything trains nothing); for bf16 no scaler is used.
3. **multi-GPU**: with more than one GPU, 2 steps under `accelerate launch --multi_gpu` on all of them.
4. **evaluate**: `scripts/evaluate.py`'s code on the generated validation images (whole 1024x2048 images, fp16).
5. **fps**: DSNet at 1x3x1024x2048 in float16 (tiny: 1x3x64x128 float32 on the CPU): `eval`, `to_deploy()` and
   both under `torch.compile`, against the paper's 81.9 FPS on an RTX 4090.

The report (`--output`) holds the environment, each part's result and `"ok"`: whether every part passed. Parts left
when the time budget (`--budget_s`, 450) runs out are recorded as skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from msaf_hf.presets import packaged_path

RECIPE = packaged_path("configuration") / "cityscapes.yaml"  # in a source checkout or an installed package
PAPER_FPS = 81.9  # DSNet, 1024x2048, RTX 4090 (published)
# labelIds of the 19 Cityscapes training classes (road .. bicycle), and two that are ignored (unlabeled, sky-less)
CITYSCAPES_TRAIN_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
IGNORED_LABEL_IDS = (0, 4)


def sizes(tiny: bool) -> dict[str, Any]:
    """The sizes of each part: the published setting, or tiny ones that run the same code on a CPU in seconds."""
    if tiny:
        return {"image": (64, 128), "crop": 64, "base_size": 128, "train_images": 6, "val_images": 2,
                "fps_shape": (1, 3, 64, 128), "fps_dtype": "float32", "repeats": 2, "number": 1}
    return {"image": (1024, 2048), "crop": 1024, "base_size": 2048, "train_images": 12, "val_images": 2,
            "fps_shape": (1, 3, 1024, 2048), "fps_dtype": "float16", "repeats": 5, "number": 10}


# ------------------------------------------------------------------------------------------------------------------
# Parts
# ------------------------------------------------------------------------------------------------------------------


def make_cityscapes_like(root: Path, num_train: int, num_val: int, size: tuple[int, int], seed: int = 0) -> Path:
    """Blocky scenes in the Cityscapes layout: each image a grid of rectangles whose colour follows its labelId (so
    the task is learnable), labelIds from the 19 training classes plus ignored ones."""
    rng = np.random.default_rng(seed)
    height, width = size
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    ids = np.array(CITYSCAPES_TRAIN_LABEL_IDS + IGNORED_LABEL_IDS)
    for split, count in (("train", num_train), ("val", num_val)):
        for index in range(count):
            rows, cols = rng.integers(2, 6), rng.integers(3, 9)
            grid = rng.choice(ids, size=(rows, cols))
            label = np.kron(grid, np.ones((math.ceil(height / rows), math.ceil(width / cols)), dtype=grid.dtype))
            label = label[:height, :width].astype(np.uint8)
            image = palette[label] // 2 + rng.integers(0, 128, (height, width, 3), dtype=np.uint8)
            stem = f"synthcity_{index:06d}_000019"
            image_dir = root / "leftImg8bit" / split / "synthcity"
            label_dir = root / "gtFine" / split / "synthcity"
            image_dir.mkdir(parents=True, exist_ok=True)
            label_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(image_dir / f"{stem}_leftImg8bit.png", compress_level=1)
            Image.fromarray(label).save(label_dir / f"{stem}_gtFine_labelIds.png")
    return root


def recipe_arguments(data_root: Path, output_dir: Path, steps: int, mixed_precision: str, size: dict[str, Any],
                     cpu: bool) -> list[str]:
    """The Cityscapes recipe's command line on the generated data, shortened to `steps` steps."""
    argv = ["--config", str(RECIPE), "--cityscapes_root", str(data_root), "--output_dir", str(output_dir),
            "--overwrite_output_dir", "--max_steps", str(steps), "--mixed_precision", mixed_precision,
            "--logging_steps", "1", "--eval_steps", "no", "--checkpointing_steps", "no", "--report_to", "none",
            "--num_workers", "2" if cpu else "6", "--disable_tqdm", "--crop_size", str(size["crop"]),
            str(size["crop"]), "--base_size", str(size["base_size"]), "--save_best_model", "false"]
    if cpu:
        argv.append("--use_cpu")
    return argv


def fresh_accelerate_state() -> None:
    """Each part builds its own Accelerator (another mixed precision): forget the previous one's process state."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def train_check(data_root: Path, output_dir: Path, steps: int, mixed_precision: str, size: dict[str, Any],
                cpu: bool) -> dict[str, Any]:
    """Train with the recipe; record every step's loss, and the GradScaler's scale and skipped steps."""
    from msaf_hf.training.arguments import parse_args
    from msaf_hf.training.trainer import DSNetTrainer

    fresh_accelerate_state()
    model_args, data_args, args = parse_args(recipe_arguments(data_root, output_dir, steps, mixed_precision, size, cpu))
    trainer = DSNetTrainer(model_args, data_args, args)
    scales: list[float | None] = []
    skipped: list[bool] = []

    def record(state: Any) -> None:
        scaler = trainer.accelerator.scaler
        scales.append(float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else None)
        skipped.append(bool(trainer.accelerator.optimizer_step_was_skipped))

    start = time.perf_counter()
    try:
        output = trainer.train([record])
    finally:
        trainer.release()
    seconds = time.perf_counter() - start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    uses_scaler = any(scale is not None for scale in scales)
    result = {
        "mixed_precision": mixed_precision, "steps": output.global_step, "seconds": seconds,
        "steps_per_s": output.global_step / seconds if seconds else None, "losses": losses,
        "all_losses_finite": bool(losses) and all(math.isfinite(v) for v in losses),
        "grad_scaler": uses_scaler, "grad_scaler_checked": mixed_precision == "fp16" and not cpu,
        "scales": scales, "skipped_steps": sum(skipped),
        "final_dir": str(output.final_dir) if output.final_dir else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }
    checks = [result["all_losses_finite"], output.global_step == steps]
    if mixed_precision == "fp16" and not cpu:
        # fp16: a working GradScaler exists and lets steps through (skips only while it finds its scale)
        checks += [uses_scaler, sum(skipped) < len(skipped)]
    if mixed_precision == "bf16":
        checks.append(not uses_scaler)  # bf16 has float32's range: no loss scaling
    result["ok"] = all(checks)
    return result


def multi_gpu_check(data_root: Path, output_dir: Path, size: dict[str, Any], num_gpus: int) -> dict[str, Any]:
    """2 steps on every GPU under `accelerate launch --multi_gpu` (a fresh process group, as users run it)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_gpus),
               "--mixed_precision", "bf16", "-m", "msaf_hf", "train",
               *recipe_arguments(data_root, output_dir, 2, "bf16", size, cpu=False)]
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    return {"num_gpus": num_gpus, "returncode": run.returncode, "seconds": time.perf_counter() - start,
            "ok": run.returncode == 0 and (output_dir / "final" / "config.json").is_file(),
            "stderr_tail": run.stderr[-2000:]}


def evaluate_check(model_dir: Path, data_root: Path, output_file: Path, cpu: bool) -> dict[str, Any]:
    """scripts/evaluate.py on the generated validation images, whole images, in fp16 on the GPU."""
    from msaf_hf.evaluation import main

    argv = ["--model_name_or_path", str(model_dir), "--config", str(RECIPE), "--cityscapes_root", str(data_root),
            "--eval_split", "val", "--output_file", str(output_file), "--num_workers", "2"]
    argv += ["--use_cpu"] if cpu else ["--mixed_precision", "fp16"]
    fresh_accelerate_state()
    start = time.perf_counter()
    payload = main(argv)
    miou = payload["mean_iou"] if "mean_iou" in payload else payload.get("metrics", {}).get("mean_iou")
    return {"num_images": payload["num_images"], "mean_iou": miou, "seconds": time.perf_counter() - start,
            "inference_precision": payload.get("inference_precision"),
            "ok": payload["num_images"] > 0 and miou is not None and math.isfinite(miou)}


def fps_check(size: dict[str, Any], device: str, compile_modes: list[str]) -> dict[str, Any]:
    """DSNet eval and to_deploy(), eager and compiled, at the paper's input in fp16 (msaf_hf.benchmarking)."""
    from msaf_hf.benchmarking import InferenceCase, benchmark_inference_cases

    batch, _, height, width = size["fps_shape"]
    cases = [InferenceCase("dsnet", variant, "channels_last", mode) for mode in compile_modes
             for variant in ("eval", "deploy")]
    results = benchmark_inference_cases(
        cases, height=height, width=width, batch_size=batch, dtype=getattr(torch, size["fps_dtype"]), device=device,
        warmup=3, repeats=size["repeats"], number=size["number"], count_flops_too=False,
    )
    rows = [{"variant": r["variant"], "compile": r["compile"], "dtype": r["dtype"], "fps": r["images_per_s"],
             "median_ms": r["latency"]["median_s"] * 1000, "first_call_s": r["first_call_s"],
             "vs_paper": r["images_per_s"] / PAPER_FPS} for r in results]
    return {"input": list(size["fps_shape"]), "device": device, "paper_fps": PAPER_FPS, "rows": rows,
            "ok": all(math.isfinite(row["fps"]) and row["fps"] > 0 for row in rows)}


# ------------------------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda_available": torch.cuda.is_available(), "platform": platform.platform()}
    if torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info.update(cuda=torch.version.cuda, gpus=gpus, bf16_supported=torch.cuda.is_bf16_supported())
    return info


def run_part(report: dict[str, Any], name: str, deadline: float, function: Callable[[], dict[str, Any]]) -> Any:
    """Run one part into `report["parts"][name]`: its result, or its error; skipped past the deadline."""
    if time.monotonic() > deadline:
        report["parts"][name] = {"ok": False, "skipped": "the time budget ran out"}
        return None
    start = time.perf_counter()
    try:
        result = function()
    except Exception as error:  # recorded; the other parts still run
        result = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-4000:]}
    result.setdefault("seconds", time.perf_counter() - start)
    report["parts"][name] = result
    print(f"# {name}: {'ok' if result.get('ok') else 'FAILED'} ({result['seconds']:.1f} s)", flush=True)
    return result


def run_checks(tiny: bool, steps: int, output: Path, budget_s: float, work_dir: Path,
               skip_compile: bool = False, precisions: tuple[str, ...] = ("bf16", "fp16")) -> dict[str, Any]:
    cpu = not torch.cuda.is_available()
    if cpu and not tiny:
        raise SystemExit("scripts/gpu_check.py needs a CUDA GPU; on a CPU run the same code at tiny sizes with --tiny.")
    deadline = time.monotonic() + budget_s
    size = sizes(tiny)
    report: dict[str, Any] = {"command": " ".join(sys.argv), "tiny": tiny, "steps": steps,
                              "environment": environment(), "parts": {}}
    started = time.perf_counter()
    data_root = work_dir / "cityscapes-like"
    run_part(report, "data", deadline, lambda: {
        "root": str(make_cityscapes_like(data_root, size["train_images"], size["val_images"], size["image"])),
        "image_size": list(size["image"]), "ok": True})
    trained = {}
    for precision in precisions:
        result = run_part(report, f"train_{precision}", deadline,
                          lambda p=precision: train_check(data_root, work_dir / f"train-{p}", steps, p, size, cpu))
        if result and result.get("final_dir"):
            trained[precision] = Path(result["final_dir"])
    num_gpus = torch.cuda.device_count()
    if num_gpus > 1:
        run_part(report, "multi_gpu", deadline, lambda: multi_gpu_check(data_root, work_dir / "multi", size, num_gpus))
    else:
        report["parts"]["multi_gpu"] = {"ok": True, "skipped": f"{num_gpus} GPU(s): needs more than one"}
    if trained:
        model_dir = trained.get("fp16", next(iter(trained.values())))
        run_part(report, "evaluate", deadline,
                 lambda: evaluate_check(model_dir, data_root, work_dir / "eval_results.json", cpu))
    else:
        report["parts"]["evaluate"] = {"ok": False, "skipped": "no model was trained"}
    modes = ["none"] + ([] if skip_compile else ["default"])
    run_part(report, "fps", deadline, lambda: fps_check(size, "cpu" if cpu else "cuda", modes))
    report["seconds"] = time.perf_counter() - started
    report["ok"] = all(part.get("ok") for part in report["parts"].values())
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"# gpu_check: {'all parts passed' if report['ok'] else 'FAILED'} in {report['seconds']:.0f} s; "
          f"report in {output}")
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("gpu_check.json"), help="the JSON report to write")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny sizes and few steps: the same code path on a CPU in about a minute")
    parser.add_argument("--steps", type=int, default=None, help="training steps per precision (50; tiny: 3)")
    parser.add_argument("--budget_s", type=float, default=450.0,
                        help="stop starting new parts after this many seconds (the check must fit in 8 minutes)")
    parser.add_argument("--work_dir", type=Path, default=None, help="where the data and runs go (default: a temp dir)")
    parser.add_argument("--skip_compile", action="store_true", help="time eager eval/deploy only (no torch.compile)")
    parser.add_argument("--precisions", nargs="+", choices=("bf16", "fp16"), default=["bf16", "fp16"],
                        help="mixed precisions to train with")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    steps = args.steps or (3 if args.tiny else 50)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        report = run_checks(args.tiny, steps, args.output, args.budget_s, args.work_dir, args.skip_compile,
                            tuple(args.precisions))
    else:
        with tempfile.TemporaryDirectory(prefix="msaf_hf-gpu-check-") as work_dir:
            report = run_checks(args.tiny, steps, args.output, args.budget_s, Path(work_dir), args.skip_compile,
                                tuple(args.precisions))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
