"""Export DSNet to an inference engine folder: OpenVINO or ONNX Runtime, float32 or int8.

    msaf-hf export MODEL OUTPUT_DIR --engine {openvino,onnxruntime} --precision {fp32,bf16,int8,auto}
        [--height H --width W] [--calibration_dataset NAME_OR_IMAGE_FOLDER --calibration_split S
         --calibration_samples N]

The model is exported in its deploy form (`to_deploy()`: BatchNorms folded, auxiliary heads dropped) as a
`pixel_values -> logits` graph with a free batch size. OpenVINO converts it from PyTorch directly, which keeps the
adaptive context pools of MSAF as OpenVINO's `AdaptiveAvgPool`: the export takes any input size. ONNX has no
adaptive pool, so an ONNX Runtime export of an MSAF model is fixed to `--height`x`--width` (its
preprocessor_config.json resizes to that size; another size is a clear error).

int8 quantises with NNCF's post-training quantisation on calibration images, with a
quantization scheme of `msaf_hf.engines.quantization` (`--quantization_scheme`: `balanced` by default, `accurate`
keeps the shared trunk in float32; see docs/int8.md).

bf16 (OpenVINO only) keeps the float32 IR and compiles it with OpenVINO's bf16 inference precision; it needs a CPU with
avx512_bf16 or AMX-BF16 (a clear error elsewhere). `auto` picks int8 when calibration images are given, else bf16
where the CPU has it, else fp32, and records the choice and its reason under `engine.precision_choice` in config.json
(`msaf_hf.engines.precision`).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..export import SegmentationLogits, export_onnx, has_context_pools
from ..modeling_dsnet import DSNetForSemanticSegmentation
from ._dependencies import require
from .modeling import (
    ENGINE_CONFIG_KEY,
    ENGINE_FILES,
    ENGINES,
    PRECISIONS,
    EngineSpec,
    load_segmentation_model,
    onnxruntime_session,
)
from .precision import choose_precision
from .quantization import (
    DEFAULT_QUANTIZATION_SCHEME,
    QUANTIZATION_SCHEMES,
    QuantizationScheme,
    load_calibration_images,
    quantize,
)

logger = logging.getLogger(__name__)

_ALL_ENGINE_FILES = {name for files in ENGINE_FILES.values() for name in files}
EXPORT_PRECISIONS = (*PRECISIONS, "auto")


def _check_size(height: int, width: int) -> None:
    if height < 16 or width < 16 or height % 8 or width % 8:
        raise ValueError(
            f"--height/--width must be multiples of 8 and at least 16 (got {height}x{width}): the sizes at which "
            "DSNet matches the published model."
        )


def deployed_copy(model: DSNetForSemanticSegmentation) -> DSNetForSemanticSegmentation:
    """A float32, eval-mode, deploy-mode (BatchNorms folded), contiguous copy of ``model``: what is exported."""
    if not isinstance(model, DSNetForSemanticSegmentation):
        raise TypeError(f"export_to_engine needs a DSNetForSemanticSegmentation, got {type(model).__name__}.")
    model = copy.deepcopy(model).float().eval()
    if not model.config.deploy_mode:
        model.to_deploy()
    return model.to(memory_format=torch.contiguous_format)


def convert_openvino(model: torch.nn.Module, example: torch.Tensor, dynamic_spatial: bool):
    """The OpenVINO graph of ``model`` traced on ``example`` (batch always dynamic; height and width too with
    ``dynamic_spatial``)."""
    ov = require("openvino")
    shape = ov.PartialShape([-1, example.shape[1], -1, -1] if dynamic_spatial else [-1, *example.shape[1:]])
    with torch.no_grad():
        return ov.convert_model(SegmentationLogits(model).eval(), example_input=example, input=[shape])


def _export_onnx_model(model: torch.nn.Module, path: Path, example: torch.Tensor):
    for module in ("onnx", "onnxscript"):
        require(module)
    export_onnx(model, path, example, dynamic_batch=True, dynamic_spatial=not has_context_pools(model))
    onnx = require("onnx")
    return onnx.load(str(path))


def _versions(engine: str, precision: str) -> dict[str, str]:
    import transformers

    from ..version import __version__

    versions = {"msaf_hf": __version__, "torch": torch.__version__, "transformers": transformers.__version__}
    modules = ["openvino"] if engine == "openvino" else ["onnxruntime", "onnx"]
    if precision == "int8":
        modules.append("nncf")
    for name in modules:
        versions[name] = getattr(require(name), "__version__", "unknown")
    return versions


def _install(staging: Path, output_dir: Path) -> None:
    """Move the staged files into `output_dir`, replacing files of an earlier export (of any engine) there;
    files that are not an export's are kept. Each file is moved with an atomic rename."""
    output_dir.mkdir(parents=True, exist_ok=True)
    staged = {p.name for p in staging.iterdir()}
    for stale in _ALL_ENGINE_FILES - staged:
        (output_dir / stale).unlink(missing_ok=True)
    # config.json last: a folder is only read as an export once its config names the engine files.
    for name in sorted(staged, key=lambda n: n == "config.json"):
        os.replace(staging / name, output_dir / name)


def export_to_engine(
    model: DSNetForSemanticSegmentation | str | os.PathLike,
    output_dir: str | os.PathLike,
    engine: str = "openvino",
    precision: str = "fp32",
    height: int = 512,
    width: int = 1024,
    calibration_images: Sequence[torch.Tensor] | None = None,
    quantization_scheme: QuantizationScheme | str | None = None,
    image_processor: Any = None,
    check: bool = True,
) -> Path:
    """Export a DSNet to `output_dir` for `engine` (`openvino` or `onnxruntime`) at `precision` (`fp32`, `bf16`,
    `int8` or `auto`).

    Args:
        model: a `DSNetForSemanticSegmentation` or any `from_pretrained` source.
        output_dir: the folder to write (created; an earlier export there is replaced).
        engine, precision: see the module docstring.
        height, width: the traced example size; the fixed input size where the engine cannot take any size.
        calibration_images: for int8, normalised `(3, H, W)` or `(1, 3, H, W)` tensors, e.g. from
            `load_calibration_images` (for a fixed-size engine they must be `height`x`width`).
        quantization_scheme: how to quantise to int8 (a `QuantizationScheme` or a name in `QUANTIZATION_SCHEMES`);
            default: `DEFAULT_QUANTIZATION_SCHEME`.
        image_processor: written as preprocessor_config.json (default: the model's own, or DSNet's default);
            for a fixed-size engine it is set to resize to `height`x`width`.
        check: run the export once (fp32: on a random image; int8: on the first calibration image) and record its
            difference to the PyTorch model in the config.

    Returns the output folder, loadable with `msaf_hf.engines.load_segmentation_model`.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}.")
    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"precision must be one of {EXPORT_PRECISIONS}, got {precision!r}.")
    precision, precision_choice = _resolve_precision(engine, precision, calibration_images is not None)
    _check_size(height, width)
    # Fail before any work when a package is missing; the error names the extra to install.
    for module in (["openvino"] if engine == "openvino" else ["onnxruntime", "onnx", "onnxscript"]) + (
        ["nncf"] if precision == "int8" else []
    ):
        require(module)
    source = None
    if not isinstance(model, torch.nn.Module):
        source = str(model)
        model = DSNetForSemanticSegmentation.from_pretrained(source)
        if image_processor is None:
            image_processor = load_image_processor(source)
    if precision == "int8":
        if calibration_images is None:
            raise ValueError("int8 export needs calibration images (--calibration_dataset).")
        calibration_images = [
            torch.as_tensor(x).reshape(-1, *torch.as_tensor(x).shape[-3:]) for x in calibration_images
        ]
        if not calibration_images:
            raise ValueError("The calibration set is empty: int8 needs at least one calibration image.")
    scheme = quantization_scheme
    scheme = QUANTIZATION_SCHEMES[scheme] if isinstance(scheme, str) else (scheme or DEFAULT_QUANTIZATION_SCHEME)
    deployed = deployed_copy(model)
    dynamic_spatial = engine == "openvino" or not has_context_pools(deployed)
    input_size = None if dynamic_spatial else (height, width)
    if input_size is not None and calibration_images:
        wrong = [tuple(x.shape[-2:]) for x in calibration_images if tuple(x.shape[-2:]) != input_size]
        if wrong:
            raise ValueError(
                f"This {engine} export is fixed to {height}x{width}, but calibration images have size {wrong[0]}: "
                "resize them to the export size (load_calibration_images(..., size=(height, width)))."
            )
    example = torch.randn(1, deployed.config.num_channels, height, width, generator=torch.Generator().manual_seed(0))

    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.export-", dir=output_dir.parent))
    try:
        quantization_record = None
        if engine == "openvino":
            ov = require("openvino")
            graph = convert_openvino(deployed, example, dynamic_spatial)
            if precision == "int8":
                graph, quantization_record = quantize(graph, "openvino", calibration_images, scheme)
            ov.save_model(graph, str(staging / ENGINE_FILES["openvino"][0]), compress_to_fp16=False)
        else:
            path = staging / ENGINE_FILES["onnxruntime"][0]
            graph = _export_onnx_model(deployed, path, example)
            if precision == "int8":
                graph, quantization_record = quantize(graph, "onnxruntime", calibration_images, scheme)
                require("onnx").save(graph, str(path))
        spec = EngineSpec(
            name=engine, precision=precision, input_size=input_size, example_size=(height, width),
            quantization=quantization_record, versions=_versions(engine, precision), precision_choice=precision_choice,
        )
        config_values = model.config.to_dict()
        for key in ("auto_map", "architectures", ENGINE_CONFIG_KEY):
            config_values.pop(key, None)
        config_values["architectures"] = [DSNetForSemanticSegmentation.__name__]
        config_values[ENGINE_CONFIG_KEY] = spec.to_dict()
        (staging / "config.json").write_text(json.dumps(config_values, indent=2, sort_keys=True) + "\n", "utf-8")
        _write_image_processor(staging, image_processor, input_size)
        if check:
            # int8 is checked on a real (calibration) image: on random noise its argmax says nothing.
            probe = calibration_images[0][:1] if precision == "int8" else example
            report = compare_with_torch(staging, model.eval(), probe)  # against the model as given (eval)
            report["input"] = "the first calibration image" if precision == "int8" else "random normal"
            config_values[ENGINE_CONFIG_KEY]["check"] = report
            (staging / "config.json").write_text(json.dumps(config_values, indent=2, sort_keys=True) + "\n", "utf-8")
        _install(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported %s (%s, %s) to %s", source or type(model).__name__, engine, precision, output_dir)
    return output_dir


def _resolve_precision(engine: str, precision: str, has_calibration: bool) -> tuple[str, dict[str, Any] | None]:
    """The precision to export at (`auto` resolved for this CPU, with its record) after checking that it can run."""
    from .. import cpu_features

    choice = None
    if precision == "auto":
        choice = choose_precision(engine, has_calibration, cpu_features.detect_cpu_features())
        logger.info("--precision auto: %s (%s)", choice.precision, choice.reason)
        precision = choice.precision
    if precision == "bf16":
        if engine != "openvino":
            raise ValueError(
                f"--precision bf16 is for --engine openvino: ONNX Runtime's CPU provider runs fp32 and int8 only "
                f"(got --engine {engine})."
            )
        cpu_features.check_bf16_supported("--precision bf16", alternatives=("--precision fp32", "int8"))
    return precision, None if choice is None else dict(choice)


def load_image_processor(source: str) -> Any:
    """The image processor saved with a checkpoint (folder or Hub id), or None when it has none."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError):
        return None


def _write_image_processor(folder: Path, image_processor: Any, input_size: tuple[int, int] | None) -> None:
    from ..image_processing_dsnet import DSNetImageProcessor

    if image_processor is None:
        image_processor = DSNetImageProcessor()
    image_processor = copy.deepcopy(image_processor)
    if input_size is not None:  # the engine takes one size: the processor brings every image to it
        image_processor.do_resize = True
        image_processor.size = {"height": input_size[0], "width": input_size[1]}
    image_processor.save_pretrained(str(folder))
    # Only the preprocessor config belongs in an engine folder (no remote code: the engine runs without it).
    for stray in folder.glob("*.py"):
        stray.unlink()
    config_file = folder / "preprocessor_config.json"
    values = json.loads(config_file.read_text("utf-8"))
    values.pop("auto_map", None)
    config_file.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", "utf-8")


def compare_with_torch(
    export: str | os.PathLike, model: torch.nn.Module, pixel_values: torch.Tensor, num_threads: int | None = None
) -> dict[str, Any]:
    """Run an export and `model` on `pixel_values`: the max |difference| of the logits relative to max |torch
    logits|, and the share of pixels whose argmax class agrees. `export` is a folder written by `export_to_engine`
    or an ONNX file written by `msaf_hf.export.export_onnx` (run with ONNX Runtime).

    Also against the model run in float64 (the exact result, up to float64 rounding), for the engine and for torch's
    own float32: a float32 engine cannot be closer to torch float32 than float32 rounding allows, and on some weights
    (large logits that nearly cancel) that floor is itself ~1e-4."""
    path = Path(export)
    inputs = pixel_values.detach().float().cpu().contiguous()
    with torch.no_grad():
        if path.is_file():
            session = onnxruntime_session(path, num_threads)
            ours = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]).double()
        else:
            ours = load_segmentation_model(path, num_threads=num_threads)(pixel_values=inputs).logits.double()
        reference = model.eval()(pixel_values=inputs).logits.double()
        exact = copy.deepcopy(model).double()(pixel_values=inputs.double()).logits
    if ours.shape != reference.shape:
        raise ValueError(f"The export's logits have shape {tuple(ours.shape)}, PyTorch's {tuple(reference.shape)}.")

    def relative(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))

    return {
        "input_shape": list(pixel_values.shape),
        "max_relative_difference": relative(ours, reference),
        "argmax_agreement": float((ours.argmax(1) == reference.argmax(1)).float().mean()),
        "max_relative_difference_to_float64": relative(ours, exact),
        "torch_float32_to_float64": relative(reference, exact),
    }


# ------------------------------------------------------------------------------------------------------------------
# Command line (msaf-hf export)
# ------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a from_pretrained source: save_pretrained folder or Hub model id")
    parser.add_argument("output_dir", help="folder to write the engine files, config.json and preprocessor_config.json")
    parser.add_argument("--engine", choices=ENGINES, default="openvino")
    parser.add_argument("--precision", choices=EXPORT_PRECISIONS, default="fp32",
                        help="fp32; bf16 (OpenVINO, CPUs with avx512_bf16/AMX); int8 (needs --calibration_dataset); "
                             "auto: int8 with a calibration set, else bf16 where the CPU has it, else fp32")
    parser.add_argument("--height", type=int, default=512, help="example height (fixed input height for ONNX Runtime)")
    parser.add_argument("--width", type=int, default=1024, help="example width (fixed input width for ONNX Runtime)")
    parser.add_argument("--calibration_dataset", default=None,
                        help="int8: a folder of plain images (no labels needed), a Hub dataset id or a local Hub-style "
                             "dataset folder (its label column is not read), or 'synthetic' (the package's generated "
                             "shapes set, as in configuration/quickstart.yaml); prepared by the checkpoint's image "
                             "processor")
    parser.add_argument("--calibration_split", default="train",
                        help="split of the calibration images (a folder of plain images is one split)")
    parser.add_argument("--calibration_samples", type=int, default=300, help="calibration images (NNCF subset size)")
    parser.add_argument("--calibration_size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="resize calibration images to H W (default: native size for OpenVINO, the export size "
                             "for a fixed-size engine)")
    # Accepted so that commands written for earlier versions still run; calibration reads images only.
    parser.add_argument("--void_labels", type=int, nargs="*", default=None,
                        help="not needed: calibration reads no labels (accepted and ignored, with a warning)")
    parser.add_argument("--id2label_file", default=None,
                        help="not needed: calibration reads no class names (accepted and ignored, with a warning)")
    parser.add_argument("--quantization_scheme", choices=sorted(QUANTIZATION_SCHEMES), default=None,
                        help=f"how int8 quantises (default {DEFAULT_QUANTIZATION_SCHEME.name!r}: keeps accuracy; see "
                             "docs/int8.md)")
    parser.add_argument("--recipe", choices=sorted(QUANTIZATION_SCHEMES), default=None,
                        help="deprecated spelling of --quantization_scheme")
    parser.add_argument("--no_check", action="store_true", help="skip the parity check against PyTorch")
    return parser


def _quantization_scheme(args: argparse.Namespace) -> str:
    """--quantization_scheme, or its deprecated spelling --recipe (with a warning)."""
    if args.recipe is not None:
        if args.quantization_scheme not in (None, args.recipe):
            raise SystemExit(f"--recipe {args.recipe} and --quantization_scheme {args.quantization_scheme} disagree; "
                             "pass --quantization_scheme only (--recipe is its deprecated spelling).")
        logger.warning("--recipe is deprecated: pass --quantization_scheme %s.", args.recipe)
        return args.recipe
    return args.quantization_scheme or DEFAULT_QUANTIZATION_SCHEME.name


def main(argv: Sequence[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    model = DSNetForSemanticSegmentation.from_pretrained(args.model)
    image_processor = load_image_processor(args.model)  # the checkpoint's: calibration and the export use it
    calibration = None
    if args.precision == "int8" or (args.precision == "auto" and args.calibration_dataset is not None):
        if args.calibration_dataset is None:
            raise SystemExit(
                "--precision int8 needs --calibration_dataset (a Hub id, a dataset folder or 'synthetic')."
            )
        for flag, value in (("--void_labels", args.void_labels), ("--id2label_file", args.id2label_file)):
            if value is not None:
                logger.warning("%s is not needed: int8 calibration reads images only; ignoring it.", flag)
        fixed = args.engine == "onnxruntime" and has_context_pools(model)
        size = tuple(args.calibration_size) if args.calibration_size else ((args.height, args.width) if fixed else None)
        if image_processor is None:
            logger.warning("%s has no preprocessor_config.json: calibrating with DSNet's default preprocessing "
                           "(ImageNet normalisation).", args.model)
        calibration = load_calibration_images(
            args.calibration_dataset, image_processor, split=args.calibration_split,
            num_samples=args.calibration_samples, size=size,
        )
    output = export_to_engine(
        model, args.output_dir, engine=args.engine, precision=args.precision, height=args.height, width=args.width,
        calibration_images=calibration, quantization_scheme=_quantization_scheme(args), image_processor=image_processor,
        check=not args.no_check,
    )
    spec = json.loads((output / "config.json").read_text("utf-8"))[ENGINE_CONFIG_KEY]
    size = "any size" if spec["input_size"] is None else "x".join(map(str, spec["input_size"]))
    print(f"exported {args.model} -> {output} ({args.engine}, {spec['precision']}, input {size})")
    if spec.get("precision_choice"):
        print(f"--precision auto chose {spec['precision']}: {spec['precision_choice']['reason']}")
    if spec.get("check"):
        check = spec["check"]
        print(f"check on {check.get('input', 'a')} {check['input_shape']} input: max relative difference to PyTorch "
              f"{check['max_relative_difference']:.2e}, argmax agreement {100 * check['argmax_agreement']:.3f}%; to "
              f"float64 {check['max_relative_difference_to_float64']:.2e} (PyTorch float32's own: "
              f"{check['torch_float32_to_float64']:.2e})")
    return output
