"""DSNet model configuration.

DSNet ("DSNet: A Novel Way to Use Atrous Convolutions in Semantic Segmentation", IEEE TCSVT 2024) is a
real-time dual-branch segmenter: a context branch of atrous convolution blocks and a detail branch of plain
residual blocks, fused three times by MSAF (Multi-Scale Attention Fusion).

This file must stay importable as Hub remote code: it imports only transformers and huggingface_hub.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

HEAD_TYPES = ("head64", "head128", "head256")
FUSION_TYPES = ("msaf", "aff", "add")

# Per-class weights of the published Cityscapes recipe (19 train ids), used by both loss terms.
CITYSCAPES_CLASS_WEIGHTS = (
    0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786, 1.0023,
    0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529, 1.0507,
)  # fmt: skip


@strict
class DSNetConfig(PreTrainedConfig):
    r"""
    Configuration of a DSNet model ([`DSNetModel`], [`DSNetForSemanticSegmentation`]). The defaults describe the
    published "DSNet" variant (`dsnet_head128`: base width 32, head128, auxiliary heads on, MSAF fusion with
    context pools (4, 8, 16)). Presets for the other published variants are available with
    `msaf_hf.DSNetConfig.from_preset(name)` (`"dsnet"`, `"dsnet-head64"`, `"dsnet-head256"`, `"dsnet-base"`).

    Args:
        num_channels (`int`, *optional*, defaults to 3):
            Number of input image channels.
        base_channels (`int`, *optional*, defaults to 32):
            The base width `p`. The stem and first stage have `p` channels, the second stage `2p`, the detail
            branch `4p` and the context branch `8p` (DSNet-Base uses 64).
        shared_depth (`int`, *optional*, defaults to 2):
            Number of residual blocks in each of the two stages shared by both branches (1/4 and 1/8
            resolution; `m` in the paper).
        detail_depth (`int`, *optional*, defaults to 2):
            Number of residual blocks in each of the first two detail-branch stages (`n` in the paper;
            DSNet-Base uses 3).
        context_depth (`int`, *optional*, defaults to 2):
            Number of atrous (MFACB) blocks in the second context-branch stage (DSNet-Base uses 3).
        head_type (`str`, *optional*, defaults to `"head128"`):
            Width of the decoder: `"head64"`, `"head128"` or `"head256"` (the published head variants).
        use_auxiliary_heads (`bool`, *optional*, defaults to `True`):
            Whether to build the two auxiliary segmentation heads used for deep supervision during training.
            They are not needed for inference.
        fusion_type (`str`, *optional*, defaults to `"msaf"`):
            How the context branch is fused into the detail branch: `"msaf"` (local, global and multi-scale
            context attention), `"aff"` (local and global attention only) or `"add"` (a plain sum).
        fusion_reduction (`int`, *optional*, defaults to 4):
            Channel reduction ratio `r` of the attention paths inside each fusion module.
        fusion_context_sizes (`list[int]`, *optional*, defaults to `[4, 8, 16]`):
            Output sizes of the adaptive average pools of MSAF's context paths, in order. The published
            weights use (4, 8, 16); the two-context form of the module uses (4, 8).
        pyramid_dilations (`list[int]`, *optional*, defaults to `[6, 12, 18, 24]`):
            Dilations of the serial-parallel atrous pyramid (SPASPP).
        batch_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of every BatchNorm.
        batch_norm_momentum (`float`, *optional*, defaults to 0.1):
            Momentum of every BatchNorm.
        semantic_loss_ignore_index (`int`, *optional*, defaults to 255):
            Label value that is ignored by the loss and the metrics.
        main_loss_weight (`float`, *optional*, defaults to 0.6):
            Weight of the main head's loss in the total loss.
        auxiliary_loss_weights (`list[float]`, *optional*, defaults to `[0.2, 0.2]`):
            Weights of the two auxiliary heads' cross-entropy losses.
        use_ohem (`bool`, *optional*, defaults to `True`):
            Whether the main head uses online hard example mining (OHEM) cross-entropy, as published.
        ohem_threshold (`float`, *optional*, defaults to 0.9):
            OHEM keeps pixels whose true-class probability is below `max(threshold, p_(min_kept))`.
        ohem_min_kept (`int`, *optional*, defaults to 131072):
            Minimum number of pixels OHEM keeps per batch.
        class_weights (`list[float]`, *optional*):
            Optional per-class loss weights (the published Cityscapes recipe uses them), one per label.
        deploy_mode (`bool`, *optional*, defaults to `False`):
            Set by `DSNetForSemanticSegmentation.to_deploy()`: every BatchNorm is folded into its convolution
            and the auxiliary heads are dropped. Stored so that a deployed model saves and loads as such.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Kept for compatibility with transformers utilities; convolutions use Kaiming initialisation as
            published.
        label2color (`dict[int, list[int]]`, *optional*):
            Colour of each class in pictures of the predictions (overlays, palette masks, legends, the demo):
            class id -> `[r, g, b]` (integers 0-255; `"#rrggbb"` strings are accepted and stored as lists). May
            name only some classes. Classes without a colour get the default: the official Cityscapes colours
            when `id2label` is the Cityscapes label set (CamVid's for CamVid), otherwise a fixed palette of
            distinct colours (see `msaf_hf.visualization.label_colors`).

    `num_labels` (a common [`PreTrainedConfig`] argument) sets the number of classes; `num_labels=1` makes a binary
    segmenter (one foreground logit per pixel, sigmoid binary cross-entropy on labels 0/1, OHEM and class weights
    not used), as transformers' segmenters do.

    Example:

    ```python
    >>> from msaf_hf import DSNetConfig, DSNetForSemanticSegmentation

    >>> config = DSNetConfig(num_labels=19)
    >>> model = DSNetForSemanticSegmentation(config)
    ```"""

    model_type = "dsnet"

    num_channels: int = 3
    base_channels: int = 32
    shared_depth: int = 2
    detail_depth: int = 2
    context_depth: int = 2
    head_type: str = "head128"
    use_auxiliary_heads: bool = True
    fusion_type: str = "msaf"
    fusion_reduction: int = 4
    fusion_context_sizes: list[int] | tuple[int, ...] = (4, 8, 16)
    pyramid_dilations: list[int] | tuple[int, ...] = (6, 12, 18, 24)
    batch_norm_eps: float = 1e-5
    batch_norm_momentum: float = 0.1
    semantic_loss_ignore_index: int = 255
    main_loss_weight: float | int = 0.6
    auxiliary_loss_weights: list[float] | tuple[float, ...] = (0.2, 0.2)
    use_ohem: bool = True
    ohem_threshold: float | int = 0.9
    ohem_min_kept: int = 131072
    class_weights: list[float] | tuple[float, ...] | None = None
    deploy_mode: bool = False
    initializer_range: float = 0.02
    label2color: dict | None = None

    def __post_init__(self, **kwargs):
        # JSON turns tuples into lists; keep one canonical type so save -> load compares equal.
        self.fusion_context_sizes = [int(s) for s in self.fusion_context_sizes]
        self.pyramid_dilations = [int(d) for d in self.pyramid_dilations]
        self.auxiliary_loss_weights = [float(w) for w in self.auxiliary_loss_weights]
        if self.class_weights is not None:
            self.class_weights = [float(w) for w in self.class_weights]
        if self.label2color is not None:
            self.label2color = _normalize_label2color(self.label2color)
        super().__post_init__(**kwargs)
        # Checked here rather than in `validate_*` methods so that users get a plain ValueError.
        self._check_architecture()
        self._check_loss()

    # ----------------------------------------------------------------------------------------------------------
    # Derived widths. The head kinds differ only in these four numbers (published code: head64/128/256).
    @property
    def detail_channels(self) -> int:
        """Width of the detail branch and of the fusions (4p)."""
        return 4 * self.base_channels

    @property
    def context_channels(self) -> int:
        """Width of the deep context branch (8p)."""
        return 8 * self.base_channels

    @property
    def skip_channels(self) -> int:
        """Width of the 1/4-resolution skip feature given to the decoder."""
        return 2 * self.base_channels if self.head_type == "head256" else self.base_channels

    @property
    def pyramid_channels(self) -> int:
        """Inner and output width of the atrous pyramid."""
        return 8 * self.base_channels if self.head_type == "head256" else 4 * self.base_channels

    @property
    def decoder_channels(self) -> int:
        """Width of the pyramid projection and of the main head's hidden layer."""
        return {"head64": 2, "head128": 4, "head256": 8}[self.head_type] * self.base_channels

    # ----------------------------------------------------------------------------------------------------------
    # Validation
    def _check_architecture(self) -> None:
        for name in ("num_channels", "base_channels", "shared_depth", "detail_depth", "context_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"DSNetConfig.{name} must be a positive integer, got {value!r}.")
        if self.head_type not in HEAD_TYPES:
            raise ValueError(f"DSNetConfig.head_type must be one of {HEAD_TYPES}, got {self.head_type!r}.")
        if self.fusion_type not in FUSION_TYPES:
            raise ValueError(f"DSNetConfig.fusion_type must be one of {FUSION_TYPES}, got {self.fusion_type!r}.")
        if self.fusion_reduction <= 0 or self.fusion_reduction > self.detail_channels:
            raise ValueError(
                f"DSNetConfig.fusion_reduction must be in [1, {self.detail_channels}] (the fusion width 4 * "
                f"base_channels), got {self.fusion_reduction}."
            )
        if self.fusion_type == "msaf" and len(self.fusion_context_sizes) == 0:
            raise ValueError(
                "DSNetConfig.fusion_context_sizes must not be empty when fusion_type='msaf' (the published weights "
                "use [4, 8, 16]); use fusion_type='aff' for fusion without context pools."
            )
        if any(s <= 0 for s in self.fusion_context_sizes):
            raise ValueError(
                f"DSNetConfig.fusion_context_sizes must be positive pool sizes, got {self.fusion_context_sizes}."
            )
        if len(self.pyramid_dilations) == 0 or any(d <= 0 for d in self.pyramid_dilations):
            raise ValueError(
                f"DSNetConfig.pyramid_dilations must be a non-empty list of positive dilations (published: "
                f"[6, 12, 18, 24]), got {self.pyramid_dilations}."
            )
        if not 0 < self.batch_norm_eps < 1:
            raise ValueError(f"DSNetConfig.batch_norm_eps must be in (0, 1), got {self.batch_norm_eps}.")
        if not 0 <= self.batch_norm_momentum <= 1:
            raise ValueError(f"DSNetConfig.batch_norm_momentum must be in [0, 1], got {self.batch_norm_momentum}.")

    def _check_loss(self) -> None:
        if len(self.auxiliary_loss_weights) != 2:
            raise ValueError(
                "DSNetConfig.auxiliary_loss_weights must hold 2 weights (one per auxiliary head, published "
                f"[0.2, 0.2]), got {self.auxiliary_loss_weights}."
            )
        if self.main_loss_weight < 0 or any(w < 0 for w in self.auxiliary_loss_weights):
            raise ValueError("DSNetConfig loss weights (main_loss_weight, auxiliary_loss_weights) must be >= 0.")
        if not 0 < self.ohem_threshold <= 1:
            raise ValueError(f"DSNetConfig.ohem_threshold must be in (0, 1], got {self.ohem_threshold}.")
        if self.ohem_min_kept < 1:
            raise ValueError(f"DSNetConfig.ohem_min_kept must be >= 1, got {self.ohem_min_kept}.")
        if self.num_labels is not None and self.num_labels < 1:
            raise ValueError(f"DSNetConfig.num_labels must be >= 1, got {self.num_labels}.")
        if self.class_weights is not None:
            if len(self.class_weights) != self.num_labels:
                raise ValueError(
                    f"DSNetConfig.class_weights has {len(self.class_weights)} entries but num_labels is "
                    f"{self.num_labels}: give one weight per label, or class_weights=None."
                )
            if any(w < 0 for w in self.class_weights):
                raise ValueError("DSNetConfig.class_weights must be non-negative.")
        for class_id in self.label2color or {}:
            if not 0 <= class_id < (self.num_labels or 0):
                raise ValueError(
                    f"DSNetConfig.label2color has a colour for class id {class_id}, but num_labels is "
                    f"{self.num_labels} (ids 0..{(self.num_labels or 0) - 1}); fix or remove that entry."
                )
        if 0 <= self.semantic_loss_ignore_index < (self.num_labels or 0):
            raise ValueError(
                f"DSNetConfig.semantic_loss_ignore_index ({self.semantic_loss_ignore_index}) collides with a class "
                f"id (num_labels={self.num_labels}); use a value outside [0, num_labels), e.g. 255."
            )


def _normalize_label2color(label2color: object) -> dict[int, list[int]]:
    """`{class id: [r, g, b]}` with int keys (JSON turns them into strings) and list values; hex strings parsed."""
    if not isinstance(label2color, dict):
        raise ValueError(
            f"DSNetConfig.label2color must be a dict of class id -> [r, g, b], got {type(label2color).__name__}."
        )
    out: dict[int, list[int]] = {}
    for key, value in label2color.items():
        try:
            class_id = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"DSNetConfig.label2color keys must be class ids, got {key!r}.") from None
        color = value
        if isinstance(value, str) and len(value.strip().lstrip("#")) == 6:
            text = value.strip().lstrip("#")
            try:
                color = [int(text[i : i + 2], 16) for i in (0, 2, 4)]
            except ValueError:
                pass
        if not (
            isinstance(color, (list, tuple))
            and len(color) == 3
            and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
        ):
            raise ValueError(
                f"DSNetConfig.label2color[{class_id}] must be [r, g, b] with integers in 0..255 or '#rrggbb', "
                f"got {value!r}."
            )
        out[class_id] = [int(c) for c in color]
    return dict(sorted(out.items()))


__all__ = ["DSNetConfig", "CITYSCAPES_CLASS_WEIGHTS", "HEAD_TYPES", "FUSION_TYPES"]
