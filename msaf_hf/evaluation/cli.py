"""``scripts/evaluate.py``: evaluate a saved model on a dataset split, print a per-class table, write the results.

The model comes from ``--model_name_or_path`` (a ``save_pretrained`` folder or a Hub model id) with the
preprocessing it was saved with (``preprocessor_config.json``: size, normalisation) unless ``--eval_size`` overrides
it; the data from ``DataArguments`` (a training recipe may be reused with ``--config``: its training-only keys are
ignored). The steps are separate functions so that other model kinds can reuse them: :func:`load_evaluation_model`,
:func:`evaluation_image_processor`, :func:`evaluation_data_args`, :func:`write_evaluation_results`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import DataArguments, load_segmentation_data
from ..image_processing_dsnet import DSNetImageProcessor
from ..recipes import parse_command_line
from .evaluator import accelerator_available, evaluate, format_results_table, results_to_json
from .results import dataset_description, write_results_file

logger = logging.getLogger(__name__)

__all__ = [
    "EvaluationArguments",
    "evaluation_data_args",
    "evaluation_image_processor",
    "load_evaluation_model",
    "main",
    "write_evaluation_results",
]


@dataclass
class EvaluationArguments:
    """What to evaluate and how (``scripts/evaluate.py``); the data comes from ``DataArguments``."""

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



def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``scripts/evaluate.py``: evaluate a checkpoint on a dataset split; print a per-class table; write JSON."""
    from accelerate import Accelerator

    # Training recipes may be reused (--config configuration/camvid.yaml): their training-only keys are ignored,
    # and the model always comes from the command line.
    eval_args, data_args = parse_command_line(
        argv, (EvaluationArguments, DataArguments), ignore_unknown_recipe_keys=True,
        recipe_exclude=("model_name_or_path",),
    )
    if not eval_args.model_name_or_path:
        raise ValueError("scripts/evaluate.py: pass --model_name_or_path (a save_pretrained folder or a Hub model id).")
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
    image_processor, preprocessing = evaluation_image_processor(eval_args, data_args)
    data_args, names_file = evaluation_data_args(data_args, model.config.id2label)
    try:
        with accelerator.main_process_first():
            data = load_segmentation_data(data_args, image_processor=image_processor)
    finally:
        if names_file is not None:
            os.unlink(names_file)
    if data.eval is None:
        raise ValueError("scripts/evaluate.py: no evaluation data; pass --eval_split <split> (or --eval_image_dir).")
    if data.num_labels != model.config.num_labels:
        raise ValueError(
            f"The dataset has {data.num_labels} classes but {eval_args.model_name_or_path!r} predicts "
            f"{model.config.num_labels}; pass --id2label_file with the model's classes or check --void_labels."
        )
    result = evaluate(
        model, data.eval, accelerator=accelerator, batch_size=eval_args.per_device_eval_batch_size,
        num_workers=data_args.num_workers, flip=eval_args.flip, scales=eval_args.scales,
        channels_last=eval_args.channels_last, id2label={int(k): v for k, v in model.config.id2label.items()},
        ignore_index=data.ignore_index,
    )
    payload = results_to_json(
        result,
        model=eval_args.model_name_or_path,
        **dataset_description(data_args),
        eval_size=preprocessing,
        test_time_augmentation={"flip": eval_args.flip, "scales": list(eval_args.scales)},
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
    from ..engines import load_segmenter

    # A folder written by scripts/export.py loads as its engine model (OpenVINO / ONNX Runtime), anything else as
    # the PyTorch model.
    model = load_segmenter(eval_args.model_name_or_path, revision=eval_args.revision)
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
                             alternatives=("--dtype float32", "an int8 export (scripts/export.py --precision int8)"))
    if accelerator.mixed_precision != "no":
        model = accelerator.prepare_model(model, evaluation_mode=True)  # autocast wrapper only
    if eval_args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


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
    size = processor.to_dict()["size"] if processor.do_resize else "native"
    logger.info("Preprocessing from %s: size %s", eval_args.model_name_or_path, size)
    return processor, size


def evaluation_data_args(data_args: DataArguments, model_id2label: dict[Any, str]) -> tuple[DataArguments, str | None]:
    """Only the evaluation split is needed: read the training side from it too, and name the classes as the model
    does unless --id2label_file says otherwise (the model's class ids are what its logits mean). Returns the
    arguments and the temporary class-name file written for that (to delete after loading), if any."""
    updates: dict[str, Any] = {}
    names_file = None
    if data_args.eval_split is not None and data_args.eval_split_fraction is None and data_args.image_dir is None:
        updates["train_split"] = data_args.eval_split
    if data_args.id2label_file is None:
        handle = tempfile.NamedTemporaryFile("w", suffix="_id2label.json", delete=False, encoding="utf-8")
        with handle:
            json.dump({str(k): v for k, v in model_id2label.items()}, handle)
        updates["id2label_file"] = names_file = handle.name
    return (dataclasses.replace(data_args, **updates) if updates else data_args), names_file
