"""Exported DSNet folders run like the PyTorch model: one class per engine, returning `SemanticSegmenterOutput`.

An exported folder (`msaf_hf.engines.export_to_engine`, `msaf-hf export`) holds the engine's files, the model's
`config.json` with an `engine` entry, and `preprocessor_config.json`:

    config.json            {..., "engine": {"name": "openvino", "precision": "int8", "input_size": null, ...}}
    openvino_model.xml/.bin     (OpenVINO)    or    model.onnx    (ONNX Runtime)

`input_size` is null where the engine takes any height and width (OpenVINO keeps DSNet's adaptive context pools
as its own adaptive pooling op), else the fixed `[height, width]` the file was exported at (ONNX has no adaptive
pool: the exporter turns MSAF's context pools into fixed average pools). The batch size is always free.

The engine models subclass transformers' `PreTrainedModel` (with no parameters), so they have a `config`, work in
`msaf-hf evaluate` and in `pipeline("image-segmentation", model=..., image_processor=...)`; they run on the CPU
and return CPU tensors. Like the PyTorch model they have `sliding_window_logits`: a fixed-size export segments any
image through windows of its size (`fixed_input_size`), padded where the image is smaller.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from transformers.modeling_outputs import SemanticSegmenterOutput

from ..configuration_dsnet import DSNetConfig
from ..modeling_dsnet import DSNetPreTrainedModel
from ._dependencies import require

ENGINES = ("openvino", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "int8")  # bf16: OpenVINO only, on CPUs with avx512_bf16 or AMX (msaf_hf.cpu_features)
# OpenVINO's INFERENCE_PRECISION_HINT per precision: "fp32" pins f32 (OpenVINO's default on bf16 CPUs is bf16), int8
# runs its quantised layers in int8 and the rest in f32.
OPENVINO_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
ENGINE_CONFIG_KEY = "engine"  # the entry of config.json that marks an exported folder
ENGINE_FILES = {"openvino": ("openvino_model.xml", "openvino_model.bin"), "onnxruntime": ("model.onnx",)}


@dataclass
class EngineSpec:
    """What an exported folder holds, as recorded under `engine` in its config.json.

    Args:
        name: `openvino` or `onnxruntime`.
        precision: `fp32` or `int8`.
        input_size: `(height, width)` the engine file is fixed to, or None if it takes any size.
        example_size: the `(height, width)` traced at export (and used for calibration when fixed).
        files: the engine's files in the folder (the first is the one to load).
        quantization: for int8, the quantization scheme and calibration set used (see `msaf_hf.engines.quantization`).
        precision_choice: for `--precision auto`, the precision chosen, why, and the CPU it was chosen on.
    """

    name: str
    precision: str = "fp32"
    input_size: tuple[int, int] | None = None
    example_size: tuple[int, int] = (512, 1024)
    files: tuple[str, ...] = ()
    quantization: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    precision_choice: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.name!r}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}.")
        if self.precision == "bf16" and self.name != "openvino":
            raise ValueError("bf16 exports are OpenVINO's only (ONNX Runtime's CPU provider runs fp32 and int8).")
        self.input_size = None if self.input_size is None else (int(self.input_size[0]), int(self.input_size[1]))
        self.example_size = (int(self.example_size[0]), int(self.example_size[1]))
        self.files = tuple(self.files) or ENGINE_FILES[self.name]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["input_size"] = None if self.input_size is None else list(self.input_size)
        out["example_size"] = list(self.example_size)
        out["files"] = list(self.files)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EngineSpec:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in values.items() if k in known}
        quantization = values.get("quantization")
        if isinstance(quantization, dict) and "recipe" in quantization and "scheme" not in quantization:
            # Folders exported before the int8 setting was called a quantization scheme.
            values["quantization"] = {("scheme" if k == "recipe" else k): v for k, v in quantization.items()}
        return cls(**values)


def read_engine_spec(folder: str | os.PathLike) -> EngineSpec | None:
    """The `engine` entry of `folder/config.json`, or None for a plain PyTorch checkpoint folder."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        return None
    values = json.loads(config_file.read_text(encoding="utf-8"))
    entry = values.get(ENGINE_CONFIG_KEY)
    return None if entry is None else EngineSpec.from_dict(entry)


class EngineSegmenter(DSNetPreTrainedModel):
    """Base class of the engine models: checks inputs, converts them to float32 NumPy, wraps the logits.

    Subclasses set `engine_name` and implement `_load(folder, spec, num_threads)` and `_run(array) -> array`.
    Load with `from_pretrained(folder, num_threads=None)`; `num_threads=None` lets the engine use every core."""

    engine_name: ClassVar[str] = ""
    main_input_name = "pixel_values"

    def __init__(self, config: DSNetConfig, spec: EngineSpec, folder: Path, num_threads: int | None = None):
        super().__init__(config)
        self.spec = spec
        self.folder = Path(folder)
        self.num_threads = num_threads
        self._lock = threading.Lock()  # an engine request object is not safe to share between threads
        self._load(self.folder, spec, num_threads)

    # -- transformers plumbing: no parameters, always on the CPU in float32 ---------------------------------------
    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def fixed_input_size(self) -> tuple[int, int] | None:
        # A fixed-size export takes any image through `sliding_window_logits`: windows of this size, padded.
        return self.spec.input_size

    def _init_weights(self, module: torch.nn.Module) -> None:  # nothing to initialise
        pass

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, *args: Any, num_threads: int | None = None, **kwargs: Any):
        """Load an exported folder. Raises if it was exported for another engine or is a PyTorch checkpoint."""
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{str(folder)!r} has no config.json: pass a folder written by msaf-hf export.")
        spec = read_engine_spec(folder)
        if spec is None:
            raise ValueError(
                f"{str(folder)!r} is a PyTorch checkpoint, not an exported engine folder: load it with "
                "AutoModelForSemanticSegmentation.from_pretrained, or export it first with msaf-hf export "
                f"--engine {cls.engine_name}."
            )
        if spec.name != cls.engine_name:
            raise ValueError(
                f"{str(folder)!r} was exported for {spec.name}, not {cls.engine_name}: load it with "
                f"{ENGINE_CLASSES[spec.name].__name__} (or msaf_hf.engines.load_segmentation_model, which picks the "
                "engine)."
            )
        missing = [name for name in spec.files if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{str(folder)!r} lacks the engine file(s) {missing}; export it again.")
        config_values = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        config_values.pop(ENGINE_CONFIG_KEY, None)
        config_values.pop("auto_map", None)
        if config_values.get("model_type") != DSNetConfig.model_type:
            raise ValueError(f"{str(folder)!r} holds a {config_values.get('model_type')!r} model, not DSNet.")
        config = DSNetConfig.from_dict(config_values)
        return cls(config, spec, folder, num_threads=num_threads)

    def save_pretrained(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "An engine model is saved by msaf-hf export (msaf_hf.engines.export_to_engine); copy its folder."
        )

    # -- inference ------------------------------------------------------------------------------------------------
    def _check_input(self, pixel_values: torch.Tensor) -> None:
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
            shape = tuple(pixel_values.shape) if hasattr(pixel_values, "shape") else type(pixel_values).__name__
            raise ValueError(f"pixel_values must be a 4-D tensor (batch, channels, height, width), got {shape}.")
        if pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels, the model takes {self.config.num_channels}."
            )
        size = tuple(pixel_values.shape[-2:])
        if self.spec.input_size is not None and size != self.spec.input_size:
            height, width = self.spec.input_size
            raise ValueError(
                f"This {self.engine_name} export of {str(self.folder)!r} takes {height}x{width} images only (ONNX has "
                f"no adaptive average pool, so MSAF's context pools were fixed at export), got {size[0]}x{size[1]}. "
                f"Resize the input to {height}x{width} (the folder's image processor does), run larger images "
                f"through {height}x{width} windows (model.sliding_window_logits, --sliding_window {height} {width}), "
                f"export again with --height {size[0]} --width {size[1]}, or export with --engine openvino, which "
                "takes any size."
            )
        if min(size) < 8:
            raise ValueError(f"pixel_values must be at least 8x8 pixels, got {size[0]}x{size[1]}.")

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SemanticSegmenterOutput | tuple:
        if labels is not None:
            raise ValueError("An exported engine model is for inference: it computes no loss (drop `labels`).")
        extra_outputs = ("output_hidden_states", "output_attentions", "output_auxiliary_logits")
        unsupported = [k for k in extra_outputs if kwargs.get(k)]
        if unsupported:
            raise ValueError(f"An exported engine model returns logits only; {unsupported} are not available.")
        self._check_input(pixel_values)
        array = np.ascontiguousarray(pixel_values.detach().to("cpu", torch.float32).numpy())
        with self._lock:
            logits = torch.from_numpy(np.array(self._run(array), dtype=np.float32, copy=True))
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not return_dict:
            return (logits,)
        return SemanticSegmenterOutput(logits=logits)

    def _load(self, folder: Path, spec: EngineSpec, num_threads: int | None) -> None:  # pragma: no cover
        raise NotImplementedError

    def _run(self, pixel_values: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def extra_repr(self) -> str:
        size = "any size" if self.spec.input_size is None else "x".join(map(str, self.spec.input_size))
        return f"engine={self.engine_name}, precision={self.spec.precision}, input={size}, folder={str(self.folder)!r}"


class OpenVINOSegmenter(EngineSegmenter):
    """A DSNet exported to OpenVINO IR (`openvino_model.xml`/`.bin`), compiled for the CPU in float32 arithmetic
    (int8 layers run in int8), or in bfloat16 for a bf16 export. Takes any input size unless the folder says
    otherwise. `executed_precision` says what the compiled model runs (OpenVINO's runtime model, not the request)."""

    engine_name = "openvino"

    def _load(self, folder: Path, spec: EngineSpec, num_threads: int | None) -> None:
        ov = require("openvino")
        if spec.precision == "bf16":
            from ..cpu_features import check_bf16_supported

            check_bf16_supported(f"{str(folder)!r} is a bf16 OpenVINO export", alternatives=("an fp32 or int8 export",))
        core = ov.Core()
        # f32 explicitly for fp32/int8: on CPUs with bf16/AMX, OpenVINO would otherwise run the f32 layers in bf16.
        hint = OPENVINO_PRECISION_HINTS[spec.precision]
        properties = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if num_threads:
            properties["INFERENCE_NUM_THREADS"] = int(num_threads)
        model = core.read_model(str(folder / spec.files[0]))
        self._compiled = core.compile_model(model, "CPU", properties)
        self._request = self._compiled.create_infer_request()

    @property
    def executed_precision(self) -> str:
        """What the compiled model runs, from OpenVINO itself: the precision of its convolutions in the runtime
        model (e.g. `bf16`, `f32`, `int8 (96/103 convolutions; rest f32)`), not the precision asked for."""
        from .precision import runtime_precision_summary

        return runtime_precision_summary(self._compiled)

    def _run(self, pixel_values: np.ndarray) -> np.ndarray:
        self._request.infer({0: pixel_values})
        return self._request.get_output_tensor(0).data


class ONNXRuntimeSegmenter(EngineSegmenter):
    """A DSNet exported to ONNX (`model.onnx`), run with ONNX Runtime's CPU provider. MSAF models are fixed to the
    exported input size (see the module docstring); the batch size is free."""

    engine_name = "onnxruntime"

    def _load(self, folder: Path, spec: EngineSpec, num_threads: int | None) -> None:
        self._session = onnxruntime_session(folder / spec.files[0], num_threads)
        self._input_name = self._session.get_inputs()[0].name

    @property
    def executed_precision(self) -> str:
        """ONNX Runtime's CPU provider runs a float32 graph in f32 and fuses an int8 QDQ graph into int8 kernels."""
        return "int8 (QDQ)" if self.spec.precision == "int8" else "f32"

    def _run(self, pixel_values: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input_name: pixel_values})[0]


def onnxruntime_session(path: str | os.PathLike, num_threads: int | None = None) -> Any:
    """The one ONNX Runtime session of msaf_hf: an `InferenceSession` on the CPU provider, all graph optimisations,
    `num_threads` intra-op threads (default: ONNX Runtime's)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


ENGINE_CLASSES: dict[str, type[EngineSegmenter]] = {"openvino": OpenVINOSegmenter, "onnxruntime": ONNXRuntimeSegmenter}


def load_segmentation_model(
    name_or_path: str | os.PathLike, *, num_threads: int | None = None, **from_pretrained_kwargs: Any
) -> torch.nn.Module:
    """A model for a folder or Hub id: the engine model for a folder written by `msaf-hf export`, else the
    PyTorch `DSNetForSemanticSegmentation.from_pretrained(name_or_path, **from_pretrained_kwargs)`. Both return
    `SemanticSegmenterOutput` logits at 1/4 of the input resolution. `num_threads` applies to engines."""
    folder = Path(name_or_path)
    spec = read_engine_spec(folder) if folder.is_dir() else None
    if spec is not None:
        return ENGINE_CLASSES[spec.name].from_pretrained(folder, num_threads=num_threads)
    from ..modeling_dsnet import DSNetForSemanticSegmentation

    return DSNetForSemanticSegmentation.from_pretrained(name_or_path, **from_pretrained_kwargs)
