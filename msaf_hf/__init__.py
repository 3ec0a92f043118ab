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
from .image_processing_dsnet import DSNetImageProcessor
from .modeling_dsnet import (
    MSAF,
    DSNetForSemanticSegmentation,
    DSNetModel,
    DSNetModelOutput,
    DSNetPreTrainedModel,
    DSNetSemanticSegmenterOutput,
)
from .metrics import SegmentationConfusionMatrix, metrics_from_confusion_matrix
from .presets import list_presets, load_preset

__version__ = "0.1.0"

AutoConfig.register(DSNetConfig.model_type, DSNetConfig, exist_ok=True)
AutoModel.register(DSNetConfig, DSNetModel, exist_ok=True)
AutoModelForSemanticSegmentation.register(DSNetConfig, DSNetForSemanticSegmentation, exist_ok=True)
AutoImageProcessor.register(DSNetConfig, image_processor_classes={"pil": DSNetImageProcessor}, exist_ok=True)

DSNetConfig.register_for_auto_class()
DSNetModel.register_for_auto_class("AutoModel")
DSNetForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
DSNetImageProcessor.register_for_auto_class("AutoImageProcessor")


def _integrate_with_pipelines() -> None:
    """Make `pipeline("image-segmentation")` treat DSNet like the built-in segmenters.

    The pipeline checks the model's class name against transformers' own name table (registered classes are not
    consulted), and it probes for a video processor, which for a folder with a remote-code image processor means
    an interactive trust prompt about a `DSNetVideoProcessor` that does not exist. Segmentation never uses one.
    """
    from transformers.models.auto import modeling_auto
    from transformers.pipelines.image_segmentation import ImageSegmentationPipeline

    modeling_auto.MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES.setdefault(
        DSNetConfig.model_type, DSNetForSemanticSegmentation.__name__
    )
    ImageSegmentationPipeline._load_video_processor = False


_integrate_with_pipelines()

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
