"""msaf_hf: DSNet with Multi-Scale Attention Fusion (MSAF) as a native Hugging Face transformers model.

Importing the package registers DSNet with the transformers Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForSemanticSegmentation`, `AutoImageProcessor`) and marks the classes for remote code, so that
`save_pretrained` also writes the code and an `auto_map` (loadable with `trust_remote_code=True` where
msaf_hf is not installed).
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForSemanticSegmentation,
)

from .configuration_dsnet import CITYSCAPES_CLASS_WEIGHTS, DSNetConfig
from .evaluation.metrics import SegmentationConfusionMatrix, metrics_from_confusion_matrix
from .image_processing_dsnet import DSNetImageProcessor
from .modeling_dsnet import (
    MSAF,
    DSNetForSemanticSegmentation,
    DSNetModel,
    DSNetModelOutput,
    DSNetPreTrainedModel,
    DSNetSemanticSegmenterOutput,
    DSNetSlidingWindow,
)
from .presets import list_presets, load_preset
from .version import __version__ as __version__

AutoConfig.register(DSNetConfig.model_type, DSNetConfig, exist_ok=True)
AutoModel.register(DSNetConfig, DSNetModel, exist_ok=True)
AutoModelForSemanticSegmentation.register(DSNetConfig, DSNetForSemanticSegmentation, exist_ok=True)
AutoImageProcessor.register(DSNetConfig, image_processor_classes={"pil": DSNetImageProcessor}, exist_ok=True)

DSNetConfig.register_for_auto_class()
DSNetModel.register_for_auto_class("AutoModel")
DSNetForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
DSNetImageProcessor.register_for_auto_class("AutoImageProcessor")


def _pipeline_workarounds() -> None:
    """The package's only changes to transformers internals, all here, applied only to the versions they were
    verified on (transformers 5.x; checked against 5.24 by tests/test_integration.py's pipeline tests).

    `pipeline("image-segmentation")` on a DSNet folder, without these:
    1. logs an error that DSNet "is not supported": `check_model_type` compares the class name with a plain copy
       of transformers' own name table, so classes registered with `AutoModelForSemanticSegmentation.register`
       are not seen. Fix: add DSNet's names to that table (the model and its sliding-window form,
       `model.with_sliding_window(...)`; the table takes a tuple of class names for one configuration).
    2. probes for a video processor, which for a folder with a remote-code image processor asks an interactive
       "trust remote code?" question about a `DSNetVideoProcessor` that does not exist. Segmentation never uses
       one: the pipeline class is told not to load it.
    Remove this once transformers consults registered classes (and skips the video probe) in these pipelines.
    """
    import transformers
    from packaging.version import Version

    if not Version("5.0") <= Version(Version(transformers.__version__).base_version) < Version("6.0"):
        return
    from transformers.models.auto import modeling_auto
    from transformers.pipelines.image_segmentation import ImageSegmentationPipeline

    modeling_auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES.setdefault(
        DSNetConfig.model_type, (DSNetForSemanticSegmentation.__name__, DSNetSlidingWindow.__name__)
    )
    ImageSegmentationPipeline._load_video_processor = False


_pipeline_workarounds()

__all__ = [
    "CITYSCAPES_CLASS_WEIGHTS",
    "DSNetConfig",
    "DSNetForSemanticSegmentation",
    "DSNetImageProcessor",
    "DSNetModel",
    "DSNetModelOutput",
    "DSNetPreTrainedModel",
    "DSNetSemanticSegmenterOutput",
    "MSAF",
    "SegmentationConfusionMatrix",
    "metrics_from_confusion_matrix",
    "list_presets",
    "load_preset",
]
