"""``msaf-hf evaluate``: evaluate a saved model on a dataset split, print a per-class table, write the results.

The model comes from ``--model_name_or_path`` (a ``save_pretrained`` folder or a Hub model id) with the
preprocessing it was saved with (``preprocessor_config.json``: size, normalisation) unless ``--eval_size`` overrides
it; the data from ``DataArguments`` (a training recipe may be reused with ``--config``: its training-only keys are
ignored). The steps are separate functions so that other model kinds can reuse them: :func:`load_evaluation_model`,
:func:`evaluation_image_processor`, :func:`load_evaluation_data`, :func:`write_evaluation_results`. The data is
read with ``msaf_hf.data.load_split`` (purpose ``"evaluation"``) with the model's classes and the checkpoint's image
processor given directly: nothing is written to disk.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import DataArguments, SegmentationDataset, color_table_from_config, load_id2label_file, load_split
from ..image_processing_dsnet import DSNetImageProcessor
from ..modeling_dsnet import check_sliding_window
from ..recipes import parse_command_line
from ..results import dataset_description, write_results_file
from .evaluator import accelerator_available, evaluate, format_results_table, results_to_json

logger = logging.getLogger(__name__)

__all__ = [
    "EvaluationArguments",
    "evaluation_image_processor",
    "evaluation_split",
    "load_evaluation_data",
    "load_evaluation_model",
    "main",
    "sliding_window_description",
    "window_flags",
    "write_evaluation_results",
]


@dataclass
class EvaluationArguments:
    """What to evaluate and how (``msaf-hf evaluate``); the data comes from ``DataArguments``."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A save_pretrained folder or a Hub model id (required)."}
    )
    revision: str = field(default="main", metadata={"help": "Hub revision of the model."})
    output_file: str | None = field(
        default=None, metadata={"help": "Where to write the JSON results (default: ./eval_results.json)."}
    )
    flip: bool = field(default=False, metadata={"help": "Test-time augmentation: average with the flipped image."})
    scales: list[float] = field(
        default_factory=lambda: [1.0],
        metadata={"help": "Test-time augmentation: input scales whose predictions are averaged, e.g. 0.75 1.0 1.25."},
    )
    per_device_eval_batch_size: int = field(default=1, metadata={"help": "Images per process per batch."})
    mixed_precision: str | None = field(
        default=None,
        metadata={"help": "no, fp16 or bf16 (default: the accelerate config).", "choices": ["no", "fp16", "bf16"]},
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "float32, or bfloat16: run the model under torch.autocast in bfloat16 (--mixed_precision "
                  "bf16; on the CPU it needs avx512_bf16 or AMX). Engine folders run in their exported precision.",
                  "choices": ["float32", "bfloat16"]},
    )
    channels_last: bool = field(default=False, metadata={"help": "Use channels-last memory format."})
    use_cpu: bool = field(default=False, metadata={"help": "Evaluate on the CPU even if an accelerator is present."})
    sliding_window: list[int] | None = field(
        default=None,
        metadata={"help": "Sliding-window inference: window height width (multiples of 8; logits averaged over "
                  "overlapping windows). Without --eval_size the images are evaluated at native size."},
    )
    stride: list[int] | None = field(
        default=None, metadata={"help": "Sliding-window stride: height width (default: 2/3 of the window)."}
    )
    window_batch_size: int = field(default=4, metadata={"help": "Sliding windows per forward pass."})

    def __post_init__(self) -> None:
        self.sliding_window, self.stride = window_flags(self.sliding_window, self.stride)
        if self.window_batch_size < 1:
            raise ValueError(f"--window_batch_size must be at least 1, got {self.window_batch_size}.")


def window_flags(
    sliding_window: Sequence[int] | None, stride: Sequence[int] | None
) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """``--sliding_window H W`` and ``--stride H W`` checked (positive, stride no larger than the window, a stride
    only with a window) and as tuples; the stride defaults to 2/3 of the window. Raises ``ValueError`` naming the
    flag."""
    if sliding_window is None:
        if stride is not None:
            raise ValueError("--stride needs --sliding_window HEIGHT WIDTH (the window it moves).")
        return None, None
    for flag, values in (("--sliding_window", sliding_window), ("--stride", stride)):
        if values is not None and len(values) != 2:
            raise ValueError(f"{flag} takes two numbers, HEIGHT WIDTH, got {list(values)}.")
    try:
        window, strides = check_sliding_window(
            tuple(int(v) for v in sliding_window), None if stride is None else tuple(int(v) for v in stride)
        )
    except ValueError as error:
        raise ValueError(f"--sliding_window/--stride: {error}") from None
    return window, strides


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``msaf-hf evaluate``: evaluate a checkpoint on a dataset split; print a per-class table; write JSON."""
    from accelerate import Accelerator

    # Training recipes may be reused (--config configuration/camvid.yaml): their training-only keys are ignored,
    # and the model always comes from the command line.
    eval_args, data_args = parse_command_line(
        argv, (EvaluationArguments, DataArguments), ignore_unknown_recipe_keys=True,
        recipe_exclude=("model_name_or_path",),
    )
    if not eval_args.model_name_or_path:
        raise ValueError("msaf-hf evaluate: pass --model_name_or_path (a save_pretrained folder or a Hub model id).")
    if eval_args.dtype == "bfloat16":
        if eval_args.mixed_precision not in (None, "bf16"):
            raise ValueError(f"--dtype bfloat16 and --mixed_precision {eval_args.mixed_precision} disagree: pass one.")
        eval_args.mixed_precision = "bf16"
    accelerator = Accelerator(
        cpu=eval_args.use_cpu or not accelerator_available(), mixed_precision=eval_args.mixed_precision
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if accelerator.is_main_process else logging.WARNING)

    model = load_evaluation_model(eval_args, accelerator)
    if eval_args.sliding_window is not None and hasattr(model, "resolve_sliding_window"):
        try:  # DSNet's own rules (multiples of 8, a fixed-size export's size), before any data is loaded
            model.resolve_sliding_window(eval_args.sliding_window, eval_args.stride)
        except ValueError as error:
            raise ValueError(f"--sliding_window/--stride: {error}") from None
    image_processor, preprocessing = evaluation_image_processor(eval_args, data_args)
    with accelerator.main_process_first():
        dataset = load_evaluation_data(data_args, model.config.id2label, image_processor, model_config=model.config)
    result = evaluate(
        model, dataset, accelerator=accelerator, batch_size=eval_args.per_device_eval_batch_size,
        num_workers=data_args.num_workers, flip=eval_args.flip, scales=eval_args.scales,
        channels_last=eval_args.channels_last, id2label={int(k): v for k, v in model.config.id2label.items()},
        ignore_index=data_args.ignore_index, sliding_window=eval_args.sliding_window, stride=eval_args.stride,
        window_batch_size=eval_args.window_batch_size,
    )
    payload = results_to_json(
        result,
        model=eval_args.model_name_or_path,
        **dataset_description(data_args),
        eval_size=preprocessing,
        test_time_augmentation={"flip": eval_args.flip, "scales": list(eval_args.scales)},
        **sliding_window_description(eval_args),
        num_processes=accelerator.num_processes,
        inference_precision=inference_precision(model, accelerator),
    )
    if accelerator.is_main_process:
        print(format_results_table(result.metrics, result.id2label))
        output_file = write_evaluation_results(payload, eval_args.output_file)
        print(f"mIoU: {result.metrics['mean_iou']:.4f} on {result.num_images} images; results written to {output_file}")
    return payload


def load_evaluation_model(eval_args: EvaluationArguments, accelerator: Any) -> torch.nn.Module:
    """The model to evaluate, on ``accelerator``'s device (in its mixed precision, channels-last if asked)."""
    from ..engines import load_segmentation_model

    # A folder written by msaf-hf export loads as its engine model (OpenVINO / ONNX Runtime), anything else as
    # the PyTorch model.
    model = load_segmentation_model(eval_args.model_name_or_path, revision=eval_args.revision)
    model.to(accelerator.device)
    if accelerator.mixed_precision != "no" and hasattr(model, "engine_name"):
        raise ValueError(
            f"{eval_args.model_name_or_path!r} is an exported {model.engine_name} folder: it runs in the precision "
            f"it was exported at ({model.spec.precision}); drop --dtype/--mixed_precision, or export with --precision "
            "bf16."
        )
    if accelerator.mixed_precision == "bf16" and accelerator.device.type == "cpu":
        from ..cpu_features import check_bf16_supported

        check_bf16_supported("--dtype bfloat16 (--mixed_precision bf16) on the CPU",
                             alternatives=("--dtype float32", "an int8 export (msaf-hf export --precision int8)"))
    if accelerator.mixed_precision != "no":
        model = accelerator.prepare_model(model, evaluation_mode=True)  # autocast wrapper only
    if eval_args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def sliding_window_description(eval_args: EvaluationArguments) -> dict[str, Any]:
    """The ``sliding_window`` entry of the results (window, stride, windows per forward), or nothing."""
    if eval_args.sliding_window is None:
        return {}
    return {"sliding_window": {"window": list(eval_args.sliding_window), "stride": list(eval_args.stride),
                               "window_batch_size": eval_args.window_batch_size}}


def inference_precision(model: torch.nn.Module, accelerator: Any) -> str:
    """What the evaluated model ran in: an engine's executed precision, else the autocast dtype or float32."""
    engine_precision = getattr(model, "executed_precision", None)
    if isinstance(engine_precision, str):
        return f"{model.engine_name} {engine_precision}"
    return {"bf16": "bfloat16 (autocast)", "fp16": "float16 (autocast)"}.get(accelerator.mixed_precision, "float32")


def write_evaluation_results(payload: dict[str, Any], output_file: str | None) -> Path:
    """Write the results (``--output_file``, default ``./eval_results.json``) and the evaluation figures beside them
    (confusion matrix, per-class IoU; skipped with one log line without matplotlib); returns the path written."""
    from ..visualization.figures import write_result_figures

    path = write_results_file(Path(output_file or "eval_results.json"), payload)
    write_result_figures(path, payload)
    return path


def evaluation_image_processor(eval_args: EvaluationArguments, data_args: DataArguments) -> tuple[Any, Any]:
    """The preprocessing the checkpoint was saved with (its preprocessor_config.json: size, normalisation), unless
    --eval_size overrides the size; and how to describe it in the results. Returns (None, ...) to let the data
    module build the processor of --eval_size (or the native-size default when the checkpoint has none)."""
    if data_args.eval_size is not None:
        return None, list(data_args.eval_size)
    try:
        processor = DSNetImageProcessor.from_pretrained(eval_args.model_name_or_path, revision=eval_args.revision)
    except OSError:
        logger.warning(
            "%s has no preprocessor_config.json: evaluating at native size with ImageNet normalisation (pass "
            "--eval_size to resize).", eval_args.model_name_or_path,
        )
        return None, "native"
    if eval_args.sliding_window is not None and processor.do_resize:
        # Windows are for images larger than the model's input: resizing them to it would leave one window.
        logger.info("Sliding windows: evaluating at native size, not the checkpoint's (pass --eval_size to resize).")
        processor.do_resize = False
    size = processor.to_dict()["size"] if processor.do_resize else "native"
    logger.info("Preprocessing from %s: size %s", eval_args.model_name_or_path, size)
    return processor, size


def evaluation_split(data_args: DataArguments) -> str:
    """The split to evaluate: ``--eval_split`` (with ``--eval_split_fraction``, the part of the training split it
    carves out; with ``--eval_image_dir``, that folder). ``--eval_split none`` is an error: there is nothing to
    evaluate."""
    if data_args.eval_split is not None:
        return data_args.eval_split
    if data_args.eval_split_fraction is not None or data_args.eval_image_dir is not None:
        return "validation"
    raise ValueError(
        "msaf-hf evaluate: no evaluation data (--eval_split none); pass --eval_split <split> (or --eval_image_dir/"
        "--eval_mask_dir, or --eval_split_fraction)."
    )


def load_evaluation_data(
    data_args: DataArguments, model_id2label: dict[Any, str], image_processor: Any = None, model_config: Any = None
) -> SegmentationDataset:
    """The evaluation split (:func:`evaluation_split`) labelled with the model's classes (what its logits mean) and
    prepared by ``image_processor`` (the checkpoint's; ``None``: the processor of ``--eval_size``). Colour masks
    with ``--label_colors model`` are decoded with ``model_config``'s ``label2color``.

    A ``--id2label_file`` (e.g. from a reused training recipe) must name as many classes as the model predicts."""
    id2label = {int(k): str(v) for k, v in model_id2label.items()}
    if data_args.id2label_file is not None:
        named = load_id2label_file(data_args.id2label_file)
        if len(named) != len(id2label):
            raise ValueError(
                f"--id2label_file {data_args.id2label_file!r} names {len(named)} classes but the model predicts "
                f"{len(id2label)}; pass the model's classes (or leave --id2label_file out: the model's are used)."
            )
    color_table = None
    if (data_args.label_colors or "").strip().lower() == "model" and model_config is not None:
        color_table = color_table_from_config(model_config, data_args.ignore_index, data_args.unknown_colors_to_ignore)
    return load_split(data_args, evaluation_split(data_args), "evaluation", id2label=id2label,
                      image_processor=image_processor, split_flag="--eval_split", color_table=color_table)
