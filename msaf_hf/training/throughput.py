"""Training throughput: images per second of full DSNet (or SegFormer-B0) training steps, for
`msaf-hf benchmark training`. Models and timing come from `msaf_hf.benchmarking`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..benchmarking import (
    COMPILE_MODES,
    DSNET_PRESETS,
    MODEL_NAMES,
    build_benchmark_model,
    count_parameters,
    synchronize,
    time_callables,
)


def random_labels(
    batch_size: int,
    height: int,
    width: int,
    num_labels: int,
    ignore_index: int = 255,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Random class ids with about 10% of the pixels set to `ignore_index`."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, num_labels, (batch_size, height, width), generator=generator)
    labels[torch.rand(labels.shape, generator=generator) < 0.1] = ignore_index
    return labels.to(device)


@dataclass
class TrainingCase:
    """One training configuration to time: a model name, channels-last or not, a compile mode."""

    name: str
    channels_last: bool = False
    compile_mode: str = "none"

    def __post_init__(self) -> None:
        if self.name not in MODEL_NAMES:
            raise ValueError(f"Unknown model {self.name!r}; choose from {', '.join(MODEL_NAMES)}.")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {self.compile_mode!r}.")


def _prepare_training_step(
    case: TrainingCase,
    height: int,
    width: int,
    batch_size: int,
    dtype: torch.dtype,
    device: torch.device,
    num_labels: int,
) -> tuple[dict[str, Any], Callable[[], torch.Tensor]]:
    if batch_size < 2 and case.name in DSNET_PRESETS:
        raise ValueError("DSNet training needs at least 2 images per batch (the pooled BatchNorms).")
    fmt = torch.channels_last if case.channels_last else torch.contiguous_format
    model = build_benchmark_model(case.name, num_labels).to(device).to(memory_format=fmt).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    use_autocast = dtype != torch.float32
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    pixel_values = torch.randn(batch_size, 3, height, width, device=device).contiguous(memory_format=fmt)
    labels = random_labels(batch_size, height, width, num_labels, device=device)
    forward = model
    if case.compile_mode != "none":
        forward = torch.compile(model, mode=None if case.compile_mode == "default" else case.compile_mode)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=use_autocast):
            loss = forward(pixel_values=pixel_values, labels=labels).loss
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    record = {
        "mode": "training",
        "model": case.name,
        "variant": "train",
        "batch_size": batch_size,
        "height": height,
        "width": width,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "memory_format": "channels_last" if case.channels_last else "contiguous",
        "compile": case.compile_mode,
        "params": count_parameters(model),
        "flops_per_image": None,
    }
    return record, step


def benchmark_training_cases(
    cases: list[TrainingCase],
    height: int = 512,
    width: int = 1024,
    batch_size: int = 2,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    warmup: int = 1,
    repeats: int = 3,
    num_labels: int = 19,
    interleave: bool = True,
) -> list[dict[str, Any]]:
    """Images per second of full training steps: forward with labels (the model's own loss; DSNet: the
    published OHEM + auxiliary loss), backward, SGD step (lr 0.01, momentum 0.9, weight decay 5e-4, as
    published). Float32 weights; with `dtype` float16/bfloat16 the forward runs under autocast (float16 with
    a gradient scaler). No host synchronisation inside the step other than the model's own (DSNet: the
    label-value check, for CPU labels only). With `interleave` the timed steps go round-robin over the cases
    (see `benchmark_inference_cases`)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0; got {repeats}, {warmup}.")
    device = torch.device(device)
    if any(case.compile_mode != "none" for case in cases):
        import torch._dynamo.config as dynamo_config

        torch._dynamo.reset()
        dynamo_config.cache_size_limit = max(dynamo_config.cache_size_limit, 8 * len(cases))
    prepared = []
    for case in cases:
        record, step = _prepare_training_step(case, height, width, batch_size, dtype, device, num_labels)
        start = time.perf_counter()
        record["first_loss"] = float(step().detach())  # pays for compilation and one-off allocations
        synchronize(device)
        record["first_call_s"] = time.perf_counter() - start
        prepared.append((record, step))
    timings = time_callables([step for _, step in prepared], device, warmup, repeats, interleave=interleave)
    results = []
    for (record, step), timing in zip(prepared, timings, strict=False):
        final_loss = float(step().detach())
        if not math.isfinite(final_loss):
            raise RuntimeError(f"{record['model']}: the training loss became {final_loss} during the benchmark.")
        record.update(latency=timing.as_dict(), images_per_s=batch_size / timing.median_s, interleaved=interleave)
        results.append(record)
    return results


def benchmark_training(
    name: str, channels_last: bool = False, compile_mode: str = "none", **kwargs: Any
) -> dict[str, Any]:
    """`benchmark_training_cases` for a single configuration (keyword arguments as there)."""
    return benchmark_training_cases([TrainingCase(name, channels_last, compile_mode)], **kwargs)[0]


__all__ = ["TrainingCase", "benchmark_training", "benchmark_training_cases", "random_labels"]
