"""Convert checkpoints written by the published DSNet code into `save_pretrained` folders.

Handles the four layouts the published code writes (see `load_original_state_dict`): training checkpoints
(`{'epoch', 'best_mIoU', 'state_dict': {'model.*', loss buffers}, 'optimizer'}`), best/final weights
(`{'model.*'}`), ImageNet-pretrained or DDP-wrapped weights (`{'state_dict': {'module.*'}}`) and inference-only
models without auxiliary heads. Only `torch.load(weights_only=True)` is used.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .configuration_dsnet import DSNetConfig
from .modeling_dsnet import DSNetForSemanticSegmentation
from .presets import ORIGINAL_MODEL_NAMES, load_preset

logger = logging.getLogger(__name__)

_PREFIXES = ("module.", "model.")
_LOSS_BUFFERS = {"sem_loss.criterion.weight": "main", "ce_loss.criterion.weight": "auxiliary"}

# Original attribute paths -> ours. Applied in order, first match wins; `{}` groups carry indices through.
_BLOCK_RULES = [
    # inside residual blocks
    (r"conv(\d)\.(weight|bias)$", r"conv\1.conv.\2"),
    (r"bn(\d)\.(.+)$", r"conv\1.norm.\2"),
    (r"downsample\.0\.(.+)$", r"shortcut.conv.\1"),
    (r"downsample\.1\.(.+)$", r"shortcut.norm.\1"),
]
_ATROUS_RULES = [
    (r"conv_list\.(\d+)\.conv\.(.+)$", r"atrous_convs.\1.conv.\2"),
    (r"conv_list\.(\d+)\.bn\.(.+)$", r"atrous_convs.\1.norm.\2"),
    (r"process1\.0\.(.+)$", r"shortcut.conv.\1"),
    (r"process1\.1\.(.+)$", r"shortcut.norm.\1"),
    (r"process2\.0\.(.+)$", r"fuse.conv.\1"),
    (r"process2\.1\.(.+)$", r"fuse.norm.\1"),
    (r"process3\.0\.(.+)$", r"output.conv.\1"),
    (r"process3\.1\.(.+)$", r"output.norm.\1"),
    (r"pooling\.1\.(.+)$", r"pooled.conv.\1"),
    (r"pooling\.2\.(.+)$", r"pooled.norm.\1"),
]


def _fusion_rules() -> list[tuple[str, str]]:
    rules = [
        (r"local_att\.0\.(.+)$", r"local_attention.reduce.conv.\1"),
        (r"local_att\.1\.(.+)$", r"local_attention.reduce.norm.\1"),
        (r"local_att\.3\.(.+)$", r"local_attention.expand.conv.\1"),
        (r"local_att\.4\.(.+)$", r"local_attention.expand.norm.\1"),
    ]
    for original, ours in [(r"global_att", "global_attention")] + [
        (rf"context{k}", f"context_attentions.{k - 1}") for k in range(1, 10)
    ]:
        rules += [
            (rf"{original}\.1\.(.+)$", rf"{ours}.reduce.conv.\1"),
            (rf"{original}\.2\.(.+)$", rf"{ours}.reduce.norm.\1"),
            (rf"{original}\.4\.(.+)$", rf"{ours}.expand.conv.\1"),
            (rf"{original}\.5\.(.+)$", rf"{ours}.expand.norm.\1"),
        ]
    return rules


_HEAD_RULES = [
    (r"conv1\.(.+)$", r"conv.conv.\1"),
    (r"bn2\.(.+)$", r"conv.norm.\1"),
    (r"conv2\.(.+)$", r"classifier.\1"),
    (r"bn1\.(.+)$", r"input_norm.\1"),
]

# top-level original module -> (our module path, rules for the rest of the key)
_TOP_LEVEL = {
    "layer1": ("dsnet.shared_stage1", "blocks"),
    "layer1_a": ("dsnet.skip_stage", "blocks"),
    "layer2": ("dsnet.shared_stage2", "blocks"),
    "layer3": ("dsnet.context_branch.0", "atrous_blocks"),
    "layer4": ("dsnet.context_branch.1", "atrous_blocks"),
    "layer5": ("dsnet.context_branch.2", "blocks"),
    "layer3_": ("dsnet.detail_branch.0", "blocks"),
    "layer4_": ("dsnet.detail_branch.1", "blocks"),
    "layer5_": ("dsnet.detail_branch.2", "blocks"),
    "aff1": ("dsnet.fusions.0", "fusion"),
    "aff2": ("dsnet.fusions.1", "fusion"),
    "aff3": ("dsnet.fusions.2", "fusion"),
    "spp": ("dsnet.pyramid", "atrous"),
    "lastlayer": ("decode_head", "head"),
    "seghead_p": ("auxiliary_heads.0", "head"),
    "seghead_d": ("auxiliary_heads.1", "head"),
}
_FIXED = {
    "conv1.0": "dsnet.stem.0.conv",
    "conv1.1": "dsnet.stem.0.norm",
    "conv1.3": "dsnet.stem.1.conv",
    "conv1.4": "dsnet.stem.1.norm",
    "compression3.0": "dsnet.context_projections.0.conv",
    "compression3.1": "dsnet.context_projections.0.norm",
    "compression4.0": "dsnet.context_projections.1.conv",
    "compression4.1": "dsnet.context_projections.1.norm",
    "compression5.0": "dsnet.context_projections.2.conv",
    "compression5.1": "dsnet.context_projections.2.norm",
    "up8.0": "dsnet.pyramid_projection.conv",
    "up8.1": "dsnet.pyramid_projection.norm",
}
_RULE_SETS = {
    "blocks": _BLOCK_RULES,
    "atrous": _ATROUS_RULES,
    "fusion": _fusion_rules(),
    "head": _HEAD_RULES,
}


def _apply(rules: list[tuple[str, str]], rest: str) -> str | None:
    for pattern, replacement in rules:
        if re.fullmatch(pattern, rest):
            return re.sub(pattern, replacement, rest)
    return None


def rename_original_key(key: str) -> str:
    """Our parameter name for a key of the published model's state dict; KeyError for unknown keys."""
    for prefix, target in _FIXED.items():
        if key.startswith(prefix + "."):
            return f"{target}.{key[len(prefix) + 1:]}"
    top, _, rest = key.partition(".")
    if top in _TOP_LEVEL:
        target, kind = _TOP_LEVEL[top]
        renamed = None
        if kind in ("blocks", "atrous_blocks"):
            index, _, inner = rest.partition(".")
            if index.isdigit():
                inner_renamed = _apply(_BLOCK_RULES if kind == "blocks" else _ATROUS_RULES, inner)
                renamed = f"{index}.{inner_renamed}" if inner_renamed else None
        else:
            renamed = _apply(_RULE_SETS[kind], rest)
        if renamed is not None:
            return f"{target}.{renamed}"
    raise KeyError(
        f"Unknown key {key!r} in the original DSNet checkpoint: it matches no module of the published model."
    )


@dataclass
class OriginalCheckpoint:
    """A published-format checkpoint, unwrapped: the model's state dict plus what came with it."""

    state_dict: dict[str, torch.Tensor]
    layout: str
    class_weights: list[float] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def load_original_state_dict(path: str | Path) -> OriginalCheckpoint:
    """Load any of the published layouts with `torch.load(weights_only=True)` and strip wrappers.

    Optimizer state is dropped; the loss buffers' class weights are kept; `epoch` / `best_mIoU` go to metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {str(path)!r} does not exist.")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors, truncated files, non-weights objects
        raise ValueError(
            f"Could not load {str(path)!r} as a weights-only PyTorch checkpoint ({type(error).__name__}: {error}). "
            "Only plain tensor checkpoints are accepted (torch.load(weights_only=True))."
        ) from error
    if not isinstance(raw, dict):
        raise ValueError(f"{str(path)!r} holds a {type(raw).__name__}, not a state dict or checkpoint dict.")

    metadata: dict[str, Any] = {}
    if "state_dict" in raw and isinstance(raw["state_dict"], dict):
        state = raw["state_dict"]
        metadata = {k: raw[k] for k in ("epoch", "best_mIoU") if k in raw and not isinstance(raw[k], dict)}
        layout = "training-checkpoint" if "optimizer" in raw else "wrapped-state-dict"
    else:
        state, layout = raw, "state-dict"

    tensors = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"Entry {key!r} of {str(path)!r} is a {type(value).__name__}, not a tensor.")
        while key.startswith(_PREFIXES):
            key = key.split(".", 1)[1]
        tensors[key] = value

    loss_weights = {role: tensors.pop(key) for key, role in _LOSS_BUFFERS.items() if key in tensors}
    class_weights = None
    if loss_weights:
        main = loss_weights.get("main", loss_weights.get("auxiliary"))
        if "auxiliary" in loss_weights and not torch.equal(main, loss_weights["auxiliary"]):
            logger.warning("The checkpoint's OHEM and auxiliary loss class weights differ; using the OHEM ones.")
        class_weights = [float(w) for w in main]
    if not any(k.startswith("lastlayer.") for k in tensors):
        layout = "encoder-only"
    elif not any(k.startswith("seghead_") for k in tensors):
        layout = "inference-only"
    return OriginalCheckpoint(tensors, layout, class_weights, metadata)


def infer_config_values(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Read the architecture off the weights' shapes (what a `DSNetConfig` needs to rebuild the model)."""

    def count(prefix: str) -> int:
        return len({k.split(".")[1] for k in state_dict if k.startswith(prefix + ".")})

    if "conv1.0.weight" not in state_dict:
        raise ValueError("The checkpoint has no 'conv1.0.weight': this is not a DSNet state dict.")
    stem = state_dict["conv1.0.weight"]
    p = stem.shape[0]
    values: dict[str, Any] = {"base_channels": p, "num_channels": stem.shape[1]}
    for name, prefix in (("shared_depth", "layer1"), ("detail_depth", "layer3_"), ("context_depth", "layer4")):
        if count(prefix):
            values[name] = count(prefix)
    if "up8.0.weight" in state_dict:
        ratio = state_dict["up8.0.weight"].shape[0] // p
        values["head_type"] = {2: "head64", 4: "head128", 8: "head256"}.get(ratio, "head128")
    elif "layer1_a.0.downsample.0.weight" in state_dict:
        values["head_type"] = "head256"
    if "lastlayer.conv2.weight" in state_dict:
        values["num_labels"] = state_dict["lastlayer.conv2.weight"].shape[0]
    values["use_auxiliary_heads"] = any(k.startswith("seghead_") for k in state_dict)
    if "aff1.local_att.0.weight" in state_dict:
        num_contexts = len({k.split(".")[1] for k in state_dict if re.match(r"aff1\.context\d+\.", k)})
        values["fusion_type"] = "msaf" if num_contexts else "aff"
        values["fusion_context_sizes"] = [4, 8, 16][:num_contexts] if num_contexts <= 3 else [4, 8, 16]
        if num_contexts > 3:
            raise ValueError(
                f"The checkpoint's fusions have {num_contexts} context paths; pass --variant with a config whose "
                "fusion_context_sizes has that many entries."
            )
        values["fusion_reduction"] = state_dict["aff1.local_att.0.weight"].shape[1] // state_dict[
            "aff1.local_att.0.weight"
        ].shape[0]
    elif "lastlayer.conv2.weight" in state_dict:
        values["fusion_type"] = "add"
    return values


@dataclass
class ConversionReport:
    layout: str
    config: DSNetConfig
    missing_keys: list[str]
    metadata: dict[str, Any]

    def __str__(self) -> str:
        lines = [
            f"layout: {self.layout}",
            f"variant: base_channels={self.config.base_channels} head_type={self.config.head_type} "
            f"num_labels={self.config.num_labels} auxiliary_heads={self.config.use_auxiliary_heads}",
        ]
        if self.config.class_weights:
            lines.append(f"class weights: {len(self.config.class_weights)} (from the loss buffers)")
        if self.metadata:
            lines.append(f"metadata: {self.metadata}")
        if self.missing_keys:
            lines.append(f"freshly initialised ({len(self.missing_keys)} tensors, not in the checkpoint):")
            modules = sorted({".".join(k.split(".")[:2]) for k in self.missing_keys})
            lines += [f"  {m}" for m in modules]
        return "\n".join(lines)


def convert_original_checkpoint(
    checkpoint_path: str | Path,
    variant: str | None = None,
    num_labels: int | None = None,
    id2label: dict[int, str] | None = None,
    **config_overrides: Any,
) -> tuple[DSNetForSemanticSegmentation, ConversionReport]:
    """Build a `DSNetForSemanticSegmentation` holding a published checkpoint's weights.

    The variant and `num_labels` are inferred from the weights; `variant` (a preset name or a published
    MODEL.NAME) and `num_labels` override them. Encoder-only checkpoints get freshly initialised heads (listed
    in the report); unknown keys and shape mismatches are errors naming the key.
    """
    checkpoint = load_original_state_dict(checkpoint_path)
    inferred = infer_config_values(checkpoint.state_dict)
    if variant is not None:
        base = load_preset(variant).to_dict()
        # Preset architecture, but a checkpoint's inferred facts about what is present win where they conflict
        # only for heads; mismatches in widths surface as shape errors below.
        values = {k: base[k] for k in ("base_channels", "shared_depth", "detail_depth", "context_depth", "head_type",
                                       "fusion_type", "fusion_reduction", "fusion_context_sizes")}
        values["use_auxiliary_heads"] = inferred["use_auxiliary_heads"] or checkpoint.layout == "encoder-only"
        if "num_labels" in inferred:
            values["num_labels"] = inferred["num_labels"]
    else:
        values = dict(inferred)
        if checkpoint.layout == "encoder-only":
            values["use_auxiliary_heads"] = True
    if num_labels is not None:
        if checkpoint.layout != "encoder-only" and "num_labels" in values and values["num_labels"] != num_labels:
            raise ValueError(
                f"--num_labels {num_labels} contradicts the checkpoint's classifier, which has {values['num_labels']} "
                "classes (lastlayer.conv2.weight). Convert with the checkpoint's classes, then fine-tune with "
                "from_pretrained(..., num_labels=N, ignore_mismatched_sizes=True)."
            )
        values["num_labels"] = num_labels
    if "num_labels" not in values:
        raise ValueError(
            "The checkpoint has no classifier (encoder-only), so the number of classes is unknown: pass --num_labels."
        )
    if id2label is None:
        id2label = default_id2label(values["num_labels"])
    values["id2label"] = id2label
    values["label2id"] = {name: index for index, name in id2label.items()}
    if checkpoint.class_weights is not None:
        values["class_weights"] = checkpoint.class_weights
    values.update(config_overrides)
    values.pop("num_labels")  # implied by id2label
    config = DSNetConfig(**values)

    model = DSNetForSemanticSegmentation(config).eval()
    expected = model.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in checkpoint.state_dict.items():
        ours = rename_original_key(key)
        if ours.startswith("auxiliary_heads.") and not config.use_auxiliary_heads:
            continue
        if ours not in expected:
            raise KeyError(
                f"Checkpoint key {key!r} (ours: {ours!r}) has no counterpart in the model built for this variant "
                f"({config.head_type}, base_channels={config.base_channels}); check --variant."
            )
        if tuple(expected[ours].shape) != tuple(tensor.shape):
            raise ValueError(
                f"Shape mismatch for checkpoint key {key!r}: checkpoint {tuple(tensor.shape)}, model "
                f"{tuple(expected[ours].shape)} (ours: {ours!r}); check --variant / --num_labels."
            )
        renamed[ours] = tensor
    missing = [k for k in expected if k not in renamed]
    if missing and checkpoint.layout != "encoder-only":
        raise ValueError(
            f"The checkpoint lacks {len(missing)} tensors the model needs, e.g. {missing[:5]}; it does not match "
            "the inferred variant (pass --variant)."
        )
    model.load_state_dict(renamed, strict=False)
    if missing:
        logger.warning("Encoder-only checkpoint: %d tensors of the heads are freshly initialised.", len(missing))
    return model, ConversionReport(checkpoint.layout, config, missing, checkpoint.metadata)


def default_id2label(num_labels: int) -> dict[int, str]:
    """Class names for the datasets the published checkpoints were trained on, else generic names."""
    from .data.labels import CITYSCAPES_ID2LABEL, load_id2label_file  # local: data pulls in torch's data tools
    from .presets import configuration_dir

    if num_labels == 19:  # Cityscapes (BDD10K shares its classes)
        return dict(CITYSCAPES_ID2LABEL)
    if num_labels == 11:
        return load_id2label_file(configuration_dir() / "camvid_id2label.json")
    return {i: f"class_{i}" for i in range(num_labels)}


def convert_to_folder(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    variant: str | None = None,
    num_labels: int | None = None,
    **kwargs: Any,
) -> ConversionReport:
    """Convert and write a `save_pretrained` folder (safetensors, config.json, preprocessor_config.json)."""
    from .image_processing_dsnet import DSNetImageProcessor

    model, report = convert_original_checkpoint(checkpoint_path, variant=variant, num_labels=num_labels, **kwargs)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    DSNetImageProcessor().save_pretrained(output_dir)
    return report


__all__ = [
    "ORIGINAL_MODEL_NAMES",
    "ConversionReport",
    "OriginalCheckpoint",
    "convert_original_checkpoint",
    "convert_to_folder",
    "infer_config_values",
    "load_original_state_dict",
    "rename_original_key",
]
