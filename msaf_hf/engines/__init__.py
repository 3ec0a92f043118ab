"""Deploy DSNet on CPU inference engines: OpenVINO and ONNX Runtime, in float32 or int8.

    from transformers import AutoImageProcessor
    from msaf_hf.engines import export_to_engine, load_calibration_images, load_segmenter
    processor = AutoImageProcessor.from_pretrained("outputs/camvid/final")  # the checkpoint's preprocessing
    export_to_engine("outputs/camvid/final", "camvid-openvino-int8", engine="openvino", precision="int8",
                     calibration_images=load_calibration_images("photos/", processor))  # a folder of plain images
    model = load_segmenter("camvid-openvino-int8")        # OpenVINOSegmenter: SemanticSegmenterOutput logits

Needs the extras: `pip install 'msaf_hf[openvino]'` (OpenVINO and NNCF) and/or `pip install 'msaf_hf[onnxruntime]'`.
This package imports without them; a call that needs a missing one raises `MissingEngineError` naming the extra.
"""

from ._dependencies import MissingEngineError
from .exporting import compare_with_torch, export_to_engine
from .modeling import (
    ENGINES,
    PRECISIONS,
    EngineSegmenter,
    EngineSpec,
    ONNXRuntimeSegmenter,
    OpenVINOSegmenter,
    load_segmenter,
    read_engine_spec,
)
from .quantization import DEFAULT_RECIPE, RECIPES, QuantizationRecipe, load_calibration_images, quantize

__all__ = [
    "DEFAULT_RECIPE",
    "ENGINES",
    "EngineSegmenter",
    "EngineSpec",
    "MissingEngineError",
    "ONNXRuntimeSegmenter",
    "OpenVINOSegmenter",
    "PRECISIONS",
    "QuantizationRecipe",
    "RECIPES",
    "compare_with_torch",
    "export_to_engine",
    "load_calibration_images",
    "load_segmenter",
    "quantize",
    "read_engine_spec",
]
