"""msaf_hf: DSNet with Multi-Scale Attention Fusion (MSAF) as a native Hugging Face transformers model."""

from .configuration_dsnet import DSNetConfig
from .modeling_dsnet import MSAF, DSNetForSemanticSegmentation, DSNetModel, DSNetPreTrainedModel
from .presets import list_presets, load_preset

__version__ = "0.1.0"
