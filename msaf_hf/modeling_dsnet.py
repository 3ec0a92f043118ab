"""PyTorch DSNet: a real-time dual-branch semantic segmenter whose branches are fused by MSAF.

Read top to bottom: the building blocks (conv-norm-activation unit, residual blocks, the multi-scale atrous
block, the atrous pyramid, MSAF), then the encoder `DSNetModel`, then the task model
`DSNetForSemanticSegmentation` with its published loss (OHEM cross-entropy on the main head plus two auxiliary
cross-entropy heads).

Numerically this follows the published DSNet code (see the repository's parity tests), with two deliberate
differences that do not change results on inputs whose sides are multiples of 8: the decoder upsamples to the
skip feature's size instead of by a fixed factor of 2 (so any input size works), and the pyramid's pooled branch
is broadcast instead of bilinearly upsampled from 1x1 (the same values).

This file must stay loadable as Hub remote code: it imports only torch, transformers and its sibling
configuration file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_dsnet import DSNetConfig

# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------


class ConvNormAct(nn.Module):
    """Conv2d -> BatchNorm2d -> optional ReLU, with "same" padding for any dilation.

    Every BatchNorm of DSNet that directly follows a convolution lives in one of these, so that
    `fuse_norm()` can fold it into the convolution for deployment.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        bias: bool = False,
        activation: bool = True,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            bias=bias,
        )
        self.norm: nn.Module = nn.BatchNorm2d(out_channels, eps=eps, momentum=momentum)
        # In place: it only ever sees the fresh output of the norm (or, once fused, of the convolution), which
        # neither backward pass needs; this saves an allocation and a memory pass per unit.
        self.act = nn.ReLU(inplace=True) if activation else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(hidden_states)))

    @torch.no_grad()
    def fuse_norm(self) -> None:
        """Fold the BatchNorm's running statistics and affine parameters into the convolution (eval only).

        Computed in at least float32 precision (a float16/bfloat16 model is folded in float32, then cast back);
        also folds a `SyncBatchNorm`. A no-op once fused."""
        norm, conv = self.norm, self.conv
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm):
            return
        if norm.running_mean is None or norm.running_var is None:
            raise ValueError("Cannot fold a BatchNorm without running statistics (track_running_stats=False).")
        dtype = torch.promote_types(torch.promote_types(conv.weight.dtype, norm.running_var.dtype), torch.float32)
        weight = conv.weight.to(dtype)
        gamma = norm.weight.to(dtype) if norm.weight is not None else torch.ones_like(norm.running_var, dtype=dtype)
        beta = norm.bias.to(dtype) if norm.bias is not None else torch.zeros_like(norm.running_mean, dtype=dtype)
        scale = gamma / torch.sqrt(norm.running_var.to(dtype) + norm.eps)
        bias = conv.bias.to(dtype) if conv.bias is not None else torch.zeros_like(scale)
        fused_bias = (bias - norm.running_mean.to(dtype)) * scale + beta
        conv.weight.copy_(weight * scale.reshape(-1, 1, 1, 1))
        if conv.bias is None:
            conv.bias = nn.Parameter(fused_bias.to(conv.weight.dtype))
        else:
            conv.bias.copy_(fused_bias)
        self.norm = nn.Identity()


class DSNetCheckpointedBlock(GradientCheckpointingLayer):
    """A block that `model.activation_checkpointing_enable()` (formerly `gradient_checkpointing_enable()`)
    checkpoints (transformers' GradientCheckpointingLayer).

    DSNet's blocks hold BatchNorms, whose training-mode forward also updates running statistics: the backward
    pass's recomputation would update them a second time. So the recomputation runs with momentum 0 (it
    normalises with batch statistics either way), which keeps training with checkpointing identical to training
    without it (same gradients, same running statistics).
    """

    @property
    def _gradient_checkpointing_func(self):
        return self.__dict__.get("_checkpoint_keeping_statistics")

    @_gradient_checkpointing_func.setter
    def _gradient_checkpointing_func(self, checkpoint) -> None:
        # Set by `gradient_checkpointing_enable()`: wrap the library's checkpoint function so that the block's
        # second run (the recomputation) leaves the running statistics as the first run left them.
        def checkpoint_keeping_statistics(function, *args, **kwargs):
            runs = []

            def run(*inner_args, **inner_kwargs):
                if runs:
                    with _batch_norm_statistics_kept(self):
                        return function(*inner_args, **inner_kwargs)
                runs.append(True)
                return function(*inner_args, **inner_kwargs)

            return checkpoint(run, *args, **kwargs)

        self.__dict__["_checkpoint_keeping_statistics"] = checkpoint_keeping_statistics if checkpoint else None

    @_gradient_checkpointing_func.deleter
    def _gradient_checkpointing_func(self) -> None:  # gradient_checkpointing_disable()
        self.__dict__.pop("_checkpoint_keeping_statistics", None)


class _batch_norm_statistics_kept:
    """Context manager: the BatchNorms of `module` run exactly as in training (so a non-reentrant checkpoint sees
    the same saved tensors) but with momentum 0, so their running statistics keep their values; the batch
    counter, which no autograd graph saves, is put back on exit."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self) -> None:
        self.saved = [
            (m, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
            for m in self.module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        for m, _, _ in self.saved:
            m.momentum = 0.0  # running = running * (1 - 0) + batch * 0

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for m, momentum, batches in self.saved:
                m.momentum = momentum
                if batches is not None:
                    m.num_batches_tracked.copy_(batches)


def _norm_args(config: DSNetConfig) -> dict:
    return {"eps": config.batch_norm_eps, "momentum": config.batch_norm_momentum}


class BasicBlock(DSNetCheckpointedBlock):
    """Two 3x3 convolutions with a residual connection (ResNet basic block, expansion 1)."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        dilation: int = 1,
        final_relu: bool = True,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ):
        super().__init__()
        norm = {"eps": eps, "momentum": momentum}
        self.conv1 = ConvNormAct(in_channels, channels, 3, stride=stride, dilation=dilation, **norm)
        self.conv2 = ConvNormAct(channels, channels, 3, dilation=dilation, activation=False, **norm)
        needs_projection = stride != 1 or in_channels != channels
        self.shortcut = (
            ConvNormAct(in_channels, channels, 1, stride=stride, activation=False, **norm)
            if needs_projection
            else nn.Identity()
        )
        self.final_act = nn.ReLU(inplace=True) if final_relu else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(hidden_states))
        # In place: the branch ends in a norm (no ReLU), whose output no backward pass needs.
        out += self.shortcut(hidden_states)
        return self.final_act(out)


class Bottleneck(DSNetCheckpointedBlock):
    """1x1 -> 3x3 (possibly dilated) -> 1x1 residual block with expansion 2."""

    expansion = 2

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        dilation: int = 1,
        final_relu: bool = False,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ):
        super().__init__()
        norm = {"eps": eps, "momentum": momentum}
        out_channels = channels * self.expansion
        self.conv1 = ConvNormAct(in_channels, channels, 1, **norm)
        self.conv2 = ConvNormAct(channels, channels, 3, stride=stride, dilation=dilation, **norm)
        self.conv3 = ConvNormAct(channels, out_channels, 1, activation=False, **norm)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = (
            ConvNormAct(in_channels, out_channels, 1, stride=stride, activation=False, **norm)
            if needs_projection
            else nn.Identity()
        )
        self.final_act = nn.ReLU(inplace=True) if final_relu else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.conv2(self.conv1(hidden_states)))
        out += self.shortcut(hidden_states)
        return self.final_act(out)


def residual_stage(
    block: type[BasicBlock] | type[Bottleneck],
    in_channels: int,
    channels: int,
    num_blocks: int,
    stride: int = 1,
    dilation: int = 1,
    eps: float = 1e-5,
    momentum: float = 0.1,
) -> nn.Sequential:
    """A stage of residual blocks, with the published placement of the final ReLUs.

    The first block keeps its block type's default (basic: ReLU, bottleneck: none); of the following blocks,
    all but the last end with a ReLU. So a multi-block stage ends without ReLU and the caller applies one
    where the published forward pass does.
    """
    norm = {"eps": eps, "momentum": momentum}
    blocks = [block(in_channels, channels, stride=stride, dilation=dilation, **norm)]
    out_channels = channels * block.expansion
    for index in range(1, num_blocks):
        is_last = index == num_blocks - 1
        blocks.append(block(out_channels, channels, dilation=dilation, final_relu=not is_last, **norm))
    return nn.Sequential(*blocks)


def _ends_with_relu(stage: nn.Sequential) -> bool:
    """Whether a residual stage's last block ends with its own ReLU (a one-block basic stage does)."""
    return isinstance(stage[-1].final_act, nn.ReLU)


class MultiScaleAtrousBlock(DSNetCheckpointedBlock):
    """Three chained dilated 3x3 convolutions whose outputs are concatenated and fused, plus a 1x1 shortcut.

    (MFACB in the paper: multi-scale fusion atrous convolution block.) No ReLU after the sum.
    """

    def __init__(
        self,
        in_channels: int,
        inner_channels: int,
        out_channels: int,
        dilations: Sequence[int],
        eps: float = 1e-5,
        momentum: float = 0.1,
    ):
        super().__init__()
        norm = {"eps": eps, "momentum": momentum}
        widths = [in_channels] + [inner_channels] * len(dilations)
        self.atrous_convs = nn.ModuleList(
            ConvNormAct(widths[i], inner_channels, 3, dilation=d, **norm) for i, d in enumerate(dilations)
        )
        self.fuse = ConvNormAct(inner_channels * len(dilations), out_channels, 1, **norm)
        self.shortcut = ConvNormAct(in_channels, out_channels, 1, **norm)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        features, current = [], hidden_states
        for conv in self.atrous_convs:
            current = conv(current)
            features.append(current)
        return self.fuse(torch.cat(features, dim=1)) + self.shortcut(hidden_states)


class AtrousPyramid(DSNetCheckpointedBlock):
    """Serial-parallel atrous pyramid (SPASPP): chained dilated convolutions whose every output, together with a
    globally pooled branch, is concatenated, fused, added to a 1x1 shortcut and refined by a 3x3 convolution."""

    def __init__(
        self,
        in_channels: int,
        inner_channels: int,
        out_channels: int,
        dilations: Sequence[int] = (6, 12, 18, 24),
        eps: float = 1e-5,
        momentum: float = 0.1,
    ):
        super().__init__()
        norm = {"eps": eps, "momentum": momentum}
        widths = [in_channels] + [inner_channels] * len(dilations)
        self.atrous_convs = nn.ModuleList(
            ConvNormAct(widths[i], inner_channels, 3, dilation=d, **norm) for i, d in enumerate(dilations)
        )
        self.pooled = ConvNormAct(in_channels, inner_channels, 1, **norm)
        self.fuse = ConvNormAct(inner_channels * (len(dilations) + 1), out_channels, 1, **norm)
        self.shortcut = ConvNormAct(in_channels, out_channels, 1, **norm)
        self.output = ConvNormAct(out_channels, out_channels, 3, bias=True, **norm)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        features, current = [], hidden_states
        for conv in self.atrous_convs:
            current = conv(current)
            features.append(current)
        pooled = self.pooled(F.adaptive_avg_pool2d(hidden_states, 1)).expand(-1, -1, *hidden_states.shape[-2:])
        if current.is_contiguous(memory_format=torch.channels_last) and not current.is_contiguous():
            # A broadcast view has no channels-last strides, which would make torch.cat fall back to a
            # contiguous (NCHW) result, transposed again by the next convolution: materialise it channels-last.
            pooled = pooled.contiguous(memory_format=torch.channels_last)
        features.append(pooled)
        # Not in place: both terms are ReLU outputs, which ReLU's backward needs.
        fused = self.fuse(torch.cat(features, dim=1)) + self.shortcut(hidden_states)
        return self.output(fused)


class AttentionPath(nn.Module):
    """1x1 bottleneck (channels -> channels // r -> channels) producing attention logits."""

    def __init__(self, channels: int, inner_channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        norm = {"eps": eps, "momentum": momentum}
        self.reduce = ConvNormAct(channels, inner_channels, 1, bias=True, **norm)
        self.expand = ConvNormAct(inner_channels, channels, 1, bias=True, activation=False, **norm)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.expand(self.reduce(hidden_states))


class MSAF(DSNetCheckpointedBlock):
    """Multi-Scale Attention Fusion: fuses two feature maps of the same shape with a learned per-pixel,
    per-channel weight.

    The attention logits are the sum of a local path (1x1 bottleneck on every pixel), a global path (on the
    image-wide average) and one context path per entry of `context_sizes` (on an adaptive average pool of that
    size, upsampled back with nearest neighbours). With `w = sigmoid(logits)` computed on `x + residual`:

        out = 2 * x * w + 2 * residual * (1 - w)

    so `w = 0.5` everywhere gives the plain sum. With `context_sizes=()` this is attentional feature fusion (AFF).

    Args:
        channels: number of channels of both inputs.
        r: channel reduction ratio of the attention paths (`channels // r` hidden channels).
        context_sizes: output sizes of the context pools, in order. DSNet's published weights use (4, 8, 16).
        eps, momentum: BatchNorm settings.

    The pooled paths contain BatchNorms over 1x1 (or tiny) maps: in training mode they need at least two images
    per batch (per BatchNorm group).

    Example:
        >>> fusion = MSAF(channels=64, r=4)
        >>> out, weights = fusion(torch.randn(2, 64, 16, 16), torch.randn(2, 64, 16, 16), return_weights=True)
    """

    def __init__(
        self,
        channels: int = 64,
        r: int = 4,
        context_sizes: Sequence[int] = (4, 8),
        eps: float = 1e-5,
        momentum: float = 0.1,
    ):
        super().__init__()
        if channels <= 0:
            raise ValueError(f"MSAF channels must be positive, got {channels}.")
        if r <= 0 or r > channels:
            raise ValueError(f"MSAF r (reduction ratio) must be in [1, channels={channels}], got {r}.")
        if any(int(s) <= 0 for s in context_sizes):
            raise ValueError(f"MSAF context_sizes must be positive pool sizes, got {tuple(context_sizes)}.")
        inner_channels = channels // r
        norm = {"eps": eps, "momentum": momentum}
        self.context_sizes = tuple(int(s) for s in context_sizes)
        self.local_attention = AttentionPath(channels, inner_channels, **norm)
        self.context_attentions = nn.ModuleList(AttentionPath(channels, inner_channels, **norm) for _ in context_sizes)
        self.global_attention = AttentionPath(channels, inner_channels, **norm)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if x.shape != residual.shape:
            raise ValueError(
                f"MSAF needs two inputs of the same shape, got {tuple(x.shape)} and {tuple(residual.shape)}."
            )
        height, width = x.shape[-2:]
        summed = x + residual
        # Same summation order as the published module: local, global, then contexts from small to large pools.
        # In place on the local path's fresh output, which no backward pass needs.
        logits = self.local_attention(summed)
        logits += self.global_attention(F.adaptive_avg_pool2d(summed, 1))
        for size, path in zip(self.context_sizes, self.context_attentions, strict=False):
            context = path(F.adaptive_avg_pool2d(summed, size))
            logits += F.interpolate(context, size=(height, width), mode="nearest")
        weights = torch.sigmoid(logits)
        # 2*x*w + 2*r*(1-w), computed as 2*(x*w + r*(1-w)): bit-identical (scaling by 2 is exact), fewer passes.
        out = x * weights
        out += residual * (1 - weights)
        out *= 2
        return (out, weights) if return_weights else out


class AdditiveFusion(DSNetCheckpointedBlock):
    """The `fusion_type="add"` ablation: a plain sum, with no weights to return."""

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor, return_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, None]:
        out = x + residual
        return (out, None) if return_weights else out


class MainHead(nn.Module):
    """The main segmentation head: ReLU -> 3x3 conv-BN-ReLU -> 1x1 classifier (published `segmenthead_c`)."""

    def __init__(
        self, in_channels: int, hidden_channels: int, num_labels: int, eps: float = 1e-5, momentum: float = 0.1
    ):
        super().__init__()
        self.input_act = nn.ReLU(inplace=True)  # its input is the decoder's fresh concatenation
        self.conv = ConvNormAct(in_channels, hidden_channels, 3, eps=eps, momentum=momentum)
        self.classifier = nn.Conv2d(hidden_channels, num_labels, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(self.input_act(hidden_states)))


class AuxiliaryHead(nn.Module):
    """An auxiliary (deep supervision) head: BN -> ReLU -> 3x3 conv-BN-ReLU -> 1x1 classifier (`segmenthead`)."""

    def __init__(
        self, in_channels: int, hidden_channels: int, num_labels: int, eps: float = 1e-5, momentum: float = 0.1
    ):
        super().__init__()
        self.input_norm = nn.BatchNorm2d(in_channels, eps=eps, momentum=momentum)
        self.input_act = nn.ReLU()
        self.conv = ConvNormAct(in_channels, hidden_channels, 3, eps=eps, momentum=momentum)
        self.classifier = nn.Conv2d(hidden_channels, num_labels, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(self.input_act(self.input_norm(hidden_states))))


# ----------------------------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------------------------


def _weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None, ignore_index: int
) -> torch.Tensor:
    """torch's mean cross-entropy (a weighted mean with class weights), but 0 instead of NaN when every pixel
    is ignored, and without a host synchronisation."""
    losses = F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index, reduction="none")
    valid = labels != ignore_index
    if weight is None:
        denominator = valid.sum()
    else:
        denominator = torch.where(valid, weight[labels.clamp(0, weight.numel() - 1)], 0).sum()
    return losses.sum() / denominator.clamp_min(torch.finfo(losses.dtype).tiny)


def _binary_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Binary segmentation (`num_labels=1`): mean sigmoid cross-entropy of the one logit channel over the
    non-ignored pixels (0 when every pixel is ignored). Softmax over a single class would always give 0."""
    valid = labels != ignore_index
    targets = torch.where(valid, labels, 0).to(logits.dtype)
    losses = F.binary_cross_entropy_with_logits(logits.squeeze(1), targets, reduction="none")
    return torch.where(valid, losses, 0).sum() / valid.sum().clamp_min(1)


def ohem_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    threshold: float = 0.9,
    min_kept: int = 131072,
    weight: torch.Tensor | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """Online hard example mining cross-entropy, as published.

    Per-pixel losses (times `weight[label]` with class weights) of non-ignored pixels whose true-class
    probability is strictly below `max(p_sorted[min(min_kept, n_valid - 1)], threshold)`, averaged plainly.
    Written without data-dependent shapes so it needs no host synchronisation; 0 when no pixel is valid.
    """
    log_probs = F.log_softmax(logits.float(), dim=1)
    valid = labels != ignore_index
    safe_labels = torch.where(valid, labels, 0)
    nll = -log_probs.gather(1, safe_labels.unsqueeze(1)).squeeze(1)
    pixel_losses = nll if weight is None else nll * weight[safe_labels]
    with torch.no_grad():
        true_class_prob = torch.exp(-nll).flatten()
        flat_valid = valid.flatten()
        # Ignored pixels sort last, so the k-th smallest valid probability sits at index k.
        sorted_probs = torch.where(flat_valid, true_class_prob, torch.inf).sort().values
        kth = (flat_valid.sum() - 1).clamp(min=0).clamp(max=min_kept)
        pivot = sorted_probs.gather(0, kth.reshape(1)).squeeze(0)
        cutoff = torch.clamp(pivot, min=threshold)
        kept = flat_valid & (true_class_prob < cutoff)
    kept_losses = torch.where(kept, pixel_losses.flatten(), 0)
    return kept_losses.sum() / kept.sum().clamp_min(1)


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class DSNetModelOutput(ModelOutput):
    """
    Output of [`DSNetModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, decoder_channels, height / 8, width / 8)`):
            The fused detail features after the atrous pyramid and its projection, the decoder's main input.
        skip_hidden_state (`torch.FloatTensor` of shape `(batch_size, skip_channels, height / 4, width / 4)`):
            The 1/4-resolution skip feature the decoder concatenates.
        fusion_hidden_states (`tuple(torch.FloatTensor)`):
            The detail-branch features right after each of the three fusions (the first two feed the auxiliary
            heads).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            stem, shared stage 1 (1/4), shared stage 2 (1/8), the three fused features and the pyramid output.
        attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            The three fusion weight maps `w` (values in (0, 1), shape `(batch_size, 4p, height / 8, width / 8)`):
            the share of the detail branch in each fused pixel is `w`, the context branch's `1 - w`. Empty with
            `fusion_type="add"` (a plain sum has no weights).

    `hidden_states` and `attentions` are recorded by transformers' output-capturing hooks (`_can_record_outputs`);
    `return_dict=False` gives `to_tuple()` of this output.
    """

    last_hidden_state: torch.FloatTensor | None = None
    skip_hidden_state: torch.FloatTensor | None = None
    fusion_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class DSNetSemanticSegmenterOutput(SemanticSegmenterOutput):
    """
    [`SemanticSegmenterOutput`] with DSNet's extras.

    Args:
        loss: total published loss (`main_loss_weight * main + sum(auxiliary_loss_weights * auxiliary)`).
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height / 4, width / 4)`):
            Main-head logits at 1/4 of the input resolution, as SegFormer does; upsample them (or use the image
            processor's `post_process_semantic_segmentation`) for full-resolution maps.
        hidden_states, attentions: as in [`DSNetModelOutput`]; attentions are the three MSAF weight maps.
        main_loss: the main head's (OHEM) loss term, unweighted.
        auxiliary_losses: the two auxiliary heads' cross-entropy terms, unweighted.
        auxiliary_logits: the two auxiliary heads' logits at 1/8 resolution (returned in training, with labels,
            or with `output_auxiliary_logits=True`).
    """

    main_loss: torch.FloatTensor | None = None
    auxiliary_losses: tuple[torch.FloatTensor, ...] | None = None
    auxiliary_logits: tuple[torch.FloatTensor, ...] | None = None


# ----------------------------------------------------------------------------------------------------------------
# Sliding-window inference
# ----------------------------------------------------------------------------------------------------------------


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Starts of the windows along one side: every `stride`, the last one moved back to end at the image's edge
    (so no window hangs over it); a single window at 0 when the side is not longer than the window."""
    if size <= window:
        return [0]
    count = -(-(size - window) // stride) + 1  # ceil((size - window) / stride) + 1 windows reach the edge
    return [min(index * stride, size - window) for index in range(count)]


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    values = (value, value) if isinstance(value, int) else tuple(value)
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"sliding window: {name} must be an int or (height, width) ints, got {value!r}.")
    if min(values) <= 0:
        raise ValueError(f"sliding window: {name} must be positive, got {values[0]}x{values[1]}.")
    return values[0], values[1]


def default_window_stride(window_size: int | Sequence[int]) -> tuple[int, int]:
    """The default stride of a sliding window: 2/3 of each side, rounded down (windows overlap by a third)."""
    height, width = _pair(window_size, "window_size")
    return max(1, 2 * height // 3), max(1, 2 * width // 3)


def check_sliding_window(
    window_size: int | Sequence[int], stride: int | Sequence[int] | None = None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Validate a window and stride; returns `((height, width), (stride_height, stride_width))`, the stride
    defaulting to `default_window_stride(window_size)`. Raises `ValueError` naming the bad value."""
    window = _pair(window_size, "window_size")
    strides = default_window_stride(window) if stride is None else _pair(stride, "stride")
    if strides[0] > window[0] or strides[1] > window[1]:
        raise ValueError(
            f"sliding window: the stride {strides[0]}x{strides[1]} is larger than the window {window[0]}x{window[1]}: "
            "pixels between windows would get no prediction. Use a stride no larger than the window (default: 2/3 "
            "of it)."
        )
    return window, strides


@torch.no_grad()
def sliding_window_logits(
    model: Callable[..., object],
    pixel_values: torch.Tensor,
    window_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    *,
    window_batch_size: int = 4,
    pad_to_window: bool = False,
    pad_value: float = 0.0,
    progress: bool | Callable[[int, int], None] = False,
) -> torch.Tensor:
    """Class scores of a large image from overlapping windows, as mmsegmentation's `mode='slide'`.

    The image is covered by windows of `window_size` every `stride` pixels (default: 2/3 of the window); the last
    window of each row and column is moved back to end at the image's edge. Each window's logits are upsampled
    bilinearly to the window's size and added into a running sum at the image's resolution; each pixel's sum is
    divided by the number of windows that covered it. Only that sum (`num_labels x H x W` per image) and one batch of
    `window_batch_size` windows are held at a time, never every window's activations.

    Where the image is smaller than the window along a side, the window shrinks to the image (the model sees the
    whole side, as in whole-image inference), or, with `pad_to_window=True` (models fixed to one input size, such as
    an ONNX export), the window is padded at the bottom/right with `pad_value` (0: the normalised mean colour) and
    its logits are cropped back to the image. A window covering the whole image gives exactly whole-image inference
    upsampled to the image size.

    Args:
        model: called as `model(pixel_values=windows)`; returns an output with `logits` (or a tuple/tensor whose first
            element is the logits), `(batch, num_labels, h, w)` at any resolution.
        pixel_values: `(batch, channels, height, width)` preprocessed images (the image processor without resizing).
        window_size, stride: `(height, width)` or one int for both.
        window_batch_size: windows per forward pass.
        pad_to_window: pad windows that do not fit the image instead of shrinking them.
        progress: True for a progress bar over the windows, or a callback `(windows_done, windows_total)`.

    Returns float32 logits `(batch, num_labels, height, width)` at the input resolution, on the input's device.
    Runs under `torch.no_grad()`; call it with the model in eval mode.
    """
    (window_h, window_w), (stride_h, stride_w) = check_sliding_window(window_size, stride)
    if window_batch_size < 1:
        raise ValueError(f"sliding window: window_batch_size must be at least 1, got {window_batch_size}.")
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
        shape = tuple(pixel_values.shape) if hasattr(pixel_values, "shape") else type(pixel_values).__name__
        raise ValueError(f"sliding window: pixel_values must be (batch, channels, height, width), got {shape}.")
    batch, _, height, width = pixel_values.shape
    if min(batch, height, width) == 0:
        raise ValueError(f"sliding window: pixel_values is empty, shape {tuple(pixel_values.shape)}.")
    rows, columns = window_starts(height, window_h, stride_h), window_starts(width, window_w, stride_w)
    crop_h, crop_w = min(window_h, height), min(window_w, width)
    windows = [(image, top, left) for image in range(batch) for top in rows for left in columns]
    # Every pixel's window count is (windows covering its row) x (windows covering its column): the windows form a
    # grid, so two 1-D counts replace an H x W count map.
    row_counts = torch.zeros(height, device=pixel_values.device)
    column_counts = torch.zeros(width, device=pixel_values.device)
    for top in rows:
        row_counts[top : top + crop_h] += 1
    for left in columns:
        column_counts[left : left + crop_w] += 1
    callback = progress if callable(progress) else None
    bar = None
    if progress is True:
        from transformers.utils.logging import tqdm

        bar = tqdm(total=len(windows), desc="sliding windows", unit="window", leave=False)
    total: torch.Tensor | None = None
    try:
        for first in range(0, len(windows), window_batch_size):
            chunk = windows[first : first + window_batch_size]
            crops = torch.stack([pixel_values[i, :, t : t + crop_h, s : s + crop_w] for i, t, s in chunk])
            if pad_to_window and (crop_h, crop_w) != (window_h, window_w):
                crops = F.pad(crops, (0, window_w - crop_w, 0, window_h - crop_h), value=pad_value)
            outputs = model(pixel_values=crops)
            logits = outputs.logits if hasattr(outputs, "logits") else outputs
            logits = logits[0] if isinstance(logits, (tuple, list)) else logits
            if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
                raise TypeError("sliding window: the model must return logits of shape (batch, classes, h, w).")
            logits = F.interpolate(logits.float(), size=crops.shape[-2:], mode="bilinear", align_corners=False)
            logits = logits[..., :crop_h, :crop_w].to(pixel_values.device)
            if total is None:
                total = torch.zeros(batch, logits.shape[1], height, width, device=pixel_values.device)
            for (image, top, left), window_logits in zip(chunk, logits, strict=True):
                total[image, :, top : top + crop_h, left : left + crop_w] += window_logits
            del crops, outputs, logits  # free this batch before the next one is built
            if bar is not None:
                bar.update(len(chunk))
            if callback is not None:
                callback(first + len(chunk), len(windows))
    finally:
        if bar is not None:
            bar.close()
    return total.div_(row_counts[:, None] * column_counts[None, :])


class DSNetSlidingWindow(nn.Module):
    """A segmentation model whose forward runs `sliding_window_logits`: `SemanticSegmenterOutput` logits at the input
    resolution, averaged over overlapping windows. Made by `model.with_sliding_window(window_size, stride)`, for
    callers that only call `model(pixel_values=...)` (transformers' image-segmentation pipeline takes no forward
    arguments, so this is how it runs windows). The wrapped model's `config`, `device` and `dtype` are its own.
    Inference only (no labels, no extra outputs)."""

    def __init__(
        self,
        model: nn.Module,
        window_size: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        window_batch_size: int = 4,
    ):
        super().__init__()
        if window_batch_size < 1:
            raise ValueError(f"sliding window: window_batch_size must be at least 1, got {window_batch_size}.")
        self.model = model
        self.window_size, self.stride = model.resolve_sliding_window(window_size, stride)
        self.window_batch_size = window_batch_size

    @property
    def config(self) -> DSNetConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def forward(self, pixel_values: torch.Tensor, return_dict: bool | None = None, **kwargs) -> SemanticSegmenterOutput:
        unsupported = [key for key, value in kwargs.items() if value is not None and value is not False]
        if unsupported:
            raise ValueError(f"A sliding-window model returns logits only; {unsupported} are not available.")
        logits = self.model.sliding_window_logits(
            pixel_values, self.window_size, self.stride, window_batch_size=self.window_batch_size
        )
        return SemanticSegmenterOutput(logits=logits) if return_dict is not False else (logits,)

    def extra_repr(self) -> str:
        return f"window={self.window_size}, stride={self.stride}, window_batch_size={self.window_batch_size}"


# ----------------------------------------------------------------------------------------------------------------
# Pretrained model base
# ----------------------------------------------------------------------------------------------------------------


class DSNetPreTrainedModel(PreTrainedModel):
    config: DSNetConfig
    config_class = DSNetConfig
    base_model_prefix = "dsnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # Checkpointed at block granularity: every residual, atrous and fusion block (see DSNetCheckpointedBlock).
    supports_gradient_checkpointing = True
    # The largest units whose tensors must stay on one device when a model is split with device_map="auto".
    _no_split_modules = ["BasicBlock", "Bottleneck", "MultiScaleAtrousBlock", "AtrousPyramid", "MSAF"]
    # Verified by tests/test_modeling_dsnet_common.py (torch.compile(fullgraph=True), no graph break).
    _can_compile_fullgraph = True
    # Recorded by transformers' output-capturing hooks (DSNetModel.forward is wrapped by `capture_outputs`):
    # the stem, both shared stages, the three fusions and the pyramid projection, in the order they run.
    _can_record_outputs = {
        "hidden_states": [
            OutputRecorder(nn.Sequential, layer_name="stem", capture_initial_hidden_state=False),
            OutputRecorder(nn.Sequential, layer_name="shared_stage1", capture_initial_hidden_state=False),
            OutputRecorder(nn.Sequential, layer_name="shared_stage2", capture_initial_hidden_state=False),
            OutputRecorder(DSNetCheckpointedBlock, layer_name="fusions", capture_initial_hidden_state=False),
            OutputRecorder(ConvNormAct, layer_name="pyramid_projection", capture_initial_hidden_state=False),
        ],
        "attentions": OutputRecorder(MSAF, index=1),
    }

    def _init_weights(self, module: nn.Module) -> None:
        # The published code: Kaiming-normal (fan_out, ReLU) convolutions, BatchNorms at identity.
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            if getattr(module, "num_batches_tracked", None) is not None:
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, DSNetForSemanticSegmentation) and module.class_weights is not None:
            # A non-persistent buffer: no checkpoint carries it, so loading (from_pretrained builds on the meta
            # device and materialises uninitialised memory), `to_empty()` and `from_config` all rely on this.
            init.copy_(module.class_weights, torch.tensor(module.config.class_weights, dtype=torch.float32))

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Record both Auto classes DSNet serves, so remote code loads the encoder and the segmenter alike.
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoModel", "modeling_dsnet.DSNetModel")
            auto_map.setdefault("AutoModelForSemanticSegmentation", "modeling_dsnet.DSNetForSemanticSegmentation")
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _fuse_batch_norms(self) -> None:
        for module in self.modules():
            if isinstance(module, ConvNormAct):
                module.fuse_norm()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`; a deployed checkpoint (`config.deploy_mode`, see
        `DSNetForSemanticSegmentation.to_deploy`) is built fused and returned in channels-last memory, the form
        `to_deploy()` left it in (memory layout is not part of a checkpoint). Asking for `deploy_mode=True` on a
        checkpoint that was not deployed is refused (its BatchNorms would be silently dropped)."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        if getattr(model.config, "deploy_mode", False):
            unfolded = [k for k in info["unexpected_keys"] if k.endswith(("running_mean", "running_var"))]
            if unfolded:
                raise ValueError(
                    f"deploy_mode=True builds a model with folded BatchNorms, but this checkpoint has unfolded ones "
                    f"(e.g. {unfolded[0]}). Load it as saved and call model.to_deploy() instead."
                )
            model.to(memory_format=torch.channels_last)
        return (model, info) if output_loading_info else model

    @property
    def fixed_input_size(self) -> tuple[int, int] | None:
        """The only `(height, width)` the model accepts, or None where it takes any size (the PyTorch model;
        the engine models of `msaf_hf.engines` exported at a fixed size override it)."""
        return None

    def sliding_window_logits(
        self,
        pixel_values: torch.Tensor,
        window_size: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        *,
        window_batch_size: int = 4,
        progress: bool | Callable[[int, int], None] = False,
    ) -> torch.Tensor:
        """Logits of images of any size at the input resolution, averaged over overlapping windows: see
        `sliding_window_logits` (the module function) for the method. For large images or a model fixed to one input
        size: `model.sliding_window_logits(pixel_values, (512, 1024))` gives `(batch, num_labels, H, W)` float32.

        `window_size` (`(height, width)`, multiples of 8: DSNet's features are at 1/8 of its input) defaults to
        `fixed_input_size`, which is then the only size allowed, and windows that do not fit the image are padded.
        `stride` defaults to 2/3 of the window. Call it in eval mode (it runs under `torch.no_grad()`)."""
        window, strides = self.resolve_sliding_window(window_size, stride)
        return sliding_window_logits(
            self, pixel_values, window, strides, window_batch_size=window_batch_size,
            pad_to_window=self.fixed_input_size is not None, progress=progress,
        )

    def with_sliding_window(
        self,
        window_size: int | Sequence[int] | None = None,
        stride: int | Sequence[int] | None = None,
        window_batch_size: int = 4,
    ) -> DSNetSlidingWindow:
        """This model with sliding windows in its forward (`DSNetSlidingWindow`), for code that only calls
        `model(pixel_values=...)`, such as `pipeline("image-segmentation", model=model.with_sliding_window((512, 512)),
        image_processor=AutoImageProcessor.from_pretrained(path, do_resize=False))`."""
        return DSNetSlidingWindow(self, window_size, stride, window_batch_size)

    def resolve_sliding_window(
        self, window_size: int | Sequence[int] | None = None, stride: int | Sequence[int] | None = None
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        """The window and stride `sliding_window_logits` would use, checked against this model (see there); raises
        `ValueError` naming the bad value. Lets a command line check its flags before any work."""
        fixed = self.fixed_input_size
        if window_size is None:
            if fixed is None:
                raise ValueError("sliding_window_logits: pass window_size=(height, width); this model takes any size.")
            window_size = fixed
        window, strides = check_sliding_window(window_size, stride)
        if fixed is not None and window != tuple(fixed):
            raise ValueError(
                f"sliding window: this model takes {fixed[0]}x{fixed[1]} inputs only, so its window must be "
                f"{fixed[0]}x{fixed[1]}, got {window[0]}x{window[1]}. Leave the window out to use the model's size."
            )
        if window[0] % 8 or window[1] % 8:
            nearest = tuple(-(-side // 8) * 8 for side in window)  # rounded up
            raise ValueError(
                f"sliding window: the window {window[0]}x{window[1]} must have sides that are multiples of 8 (DSNet's "
                f"features are at 1/8 of its input), e.g. {nearest[0]}x{nearest[1]}."
            )
        return window, strides

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}.")
        if pixel_values.ndim != 4:
            hint = " Add a batch dimension with pixel_values.unsqueeze(0)." if pixel_values.ndim == 3 else ""
            raise ValueError(
                f"pixel_values must be a 4-D tensor (batch, channels, height, width), got a {pixel_values.ndim}-D "
                f"tensor of shape {tuple(pixel_values.shape)}.{hint}"
            )
        if pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but the model expects config.num_channels="
                f"{self.config.num_channels} (shape {tuple(pixel_values.shape)}; channels come second, NCHW). "
                "Convert images to RGB, or use the image processor."
            )
        if not pixel_values.is_floating_point():
            raise TypeError(
                f"pixel_values must be a floating point tensor, got {pixel_values.dtype}; rescale and normalise "
                "images first (the image processor does)."
            )
        weight_dtype = self.dtype
        if pixel_values.dtype != weight_dtype and not torch.is_autocast_enabled(pixel_values.device.type):
            raise TypeError(
                f"pixel_values is {pixel_values.dtype} but the model's weights are {weight_dtype}; convert the input "
                f"with pixel_values.to({weight_dtype}) (or the model with model.to({pixel_values.dtype}))."
            )
        if self.training and pixel_values.shape[0] < 2:
            batch_norms = [m for m in self.modules() if type(m) is nn.BatchNorm2d and m.training]
            if batch_norms:
                raise ValueError(
                    "DSNet got a single image in training mode: the pooled BatchNorms inside MSAF and the atrous "
                    "pyramid compute statistics over one value per channel, which is undefined. Use at least 2 "
                    "images per batch (per process), convert BatchNorms to SyncBatchNorm when training on several "
                    "devices, call model.eval() for inference, or freeze the BatchNorms (module.eval())."
                )


# ----------------------------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------------------------


class DSNetModel(DSNetPreTrainedModel):
    """The DSNet encoder: shared stem and stages, the context and detail branches, their three fusions and the
    atrous pyramid. Returns the decoder's inputs (1/8 fused features, 1/4 skip features)."""

    # Loading a segmentation checkpoint into the bare encoder: the heads are expected leftovers.
    _keys_to_ignore_on_load_unexpected = [r"^decode_head\.", r"^auxiliary_heads\."]

    def __init__(self, config: DSNetConfig):
        super().__init__(config)
        p = config.base_channels
        norm = _norm_args(config)
        detail, context = config.detail_channels, config.context_channels

        self.stem = nn.Sequential(
            ConvNormAct(config.num_channels, p, 3, stride=2, bias=True, **norm),
            ConvNormAct(p, p, 3, stride=2, bias=True, **norm),
        )
        self.shared_stage1 = residual_stage(BasicBlock, p, p, config.shared_depth, **norm)  # 1/4
        self.skip_stage = residual_stage(BasicBlock, p, config.skip_channels, 1, **norm)  # 1/4 skip
        self.shared_stage2 = residual_stage(BasicBlock, p, 2 * p, config.shared_depth, stride=2, **norm)  # 1/8

        self.context_branch = nn.ModuleList(
            [
                nn.Sequential(
                    MultiScaleAtrousBlock(2 * p, 2 * p, detail, (2, 2, 2), **norm),
                    MultiScaleAtrousBlock(detail, detail, detail, (2, 2, 2), **norm),
                    MultiScaleAtrousBlock(detail, detail, detail, (3, 3, 3), **norm),
                ),
                nn.Sequential(
                    MultiScaleAtrousBlock(detail, detail, context, (3, 3, 3), **norm),
                    *[
                        MultiScaleAtrousBlock(context, context, context, (5, 5, 5), **norm)
                        for _ in range(config.context_depth - 1)
                    ],
                ),
                residual_stage(Bottleneck, context, context // 2, 1, dilation=5, **norm),
            ]
        )
        self.detail_branch = nn.ModuleList(
            [
                residual_stage(BasicBlock, 2 * p, detail, config.detail_depth, **norm),
                residual_stage(BasicBlock, detail, detail, config.detail_depth, **norm),
                residual_stage(Bottleneck, detail, detail // 2, 1, **norm),
            ]
        )
        # 1x1 projections bringing each context stage to the detail branch's width before fusing.
        self.context_projections = nn.ModuleList(
            ConvNormAct(width, detail, 1, activation=False, **norm) for width in (detail, context, context)
        )
        self.fusions = nn.ModuleList(self._make_fusion(config) for _ in range(3))
        self.pyramid = AtrousPyramid(
            detail, config.pyramid_channels, config.pyramid_channels, config.pyramid_dilations, **norm
        )
        self.pyramid_projection = ConvNormAct(
            config.pyramid_channels, config.decoder_channels, 3, activation=False, **norm
        )
        self.post_init()
        if config.deploy_mode:
            self._fuse_batch_norms()

    @staticmethod
    def _make_fusion(config: DSNetConfig) -> nn.Module:
        norm = _norm_args(config)
        if config.fusion_type == "add":
            return AdditiveFusion()
        sizes = config.fusion_context_sizes if config.fusion_type == "msaf" else ()
        return MSAF(config.detail_channels, config.fusion_reduction, sizes, **norm)

    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, pixel_values: torch.Tensor, **kwargs) -> DSNetModelOutput | tuple:
        r"""
        `output_hidden_states`, `output_attentions` and `return_dict` (keyword arguments, defaulting to the
        config) are handled by transformers' output capturing: see [`DSNetModelOutput`] for what they return.
        """
        self._check_pixel_values(pixel_values)

        shared1 = self.shared_stage1(self.stem(pixel_values))
        skip = self.skip_stage(shared1)
        shared2 = self.shared_stage2(F.relu(shared1))
        if not _ends_with_relu(self.shared_stage2):
            # In place on the stage's fresh sum. A one-block stage (shared_depth=1) already ends in an in-place
            # ReLU, whose output its backward needs: a second in-place ReLU would break training (and is a no-op).
            shared2 = F.relu(shared2, inplace=True)

        detail, context = shared2, shared2
        fused_features = []
        for index in range(3):
            if index > 0:
                detail = F.relu(detail)
            detail = self.detail_branch[index](detail)
            context = self.context_branch[index](context)
            if index == 2:
                context = F.relu(context, inplace=True)
            # The weights are returned for the `attentions` output recorder.
            detail, _ = self.fusions[index](detail, self.context_projections[index](context), return_weights=True)
            fused_features.append(detail)
        features = self.pyramid_projection(self.pyramid(F.relu(detail)))
        return DSNetModelOutput(
            last_hidden_state=features, skip_hidden_state=skip, fusion_hidden_states=tuple(fused_features)
        )


# ----------------------------------------------------------------------------------------------------------------
# Semantic segmentation
# ----------------------------------------------------------------------------------------------------------------


class DSNetForSemanticSegmentation(DSNetPreTrainedModel):
    """DSNet with its segmentation heads and the published training loss.

    `logits` come at 1/4 of the input resolution (like SegFormer); with `labels` the loss is computed after
    upsampling every head's logits bilinearly to the label size: `0.6 * OHEM-CE(main) + 0.2 * CE(aux1) +
    0.2 * CE(aux2)` by default (see [`DSNetConfig`]).
    """

    def __init__(self, config: DSNetConfig):
        super().__init__(config)
        norm = _norm_args(config)
        self.dsnet = DSNetModel(config)
        self.decode_head = MainHead(
            config.decoder_channels + config.skip_channels, config.decoder_channels, config.num_labels, **norm
        )
        use_aux = config.use_auxiliary_heads and not config.deploy_mode
        detail = config.detail_channels
        # Deep supervision on the detail branch right after the first and second fusions.
        self.auxiliary_heads = (
            nn.ModuleList(
                [
                    AuxiliaryHead(detail, detail, config.num_labels, **norm),
                    AuxiliaryHead(detail, config.base_channels, config.num_labels, **norm),
                ]
            )
            if use_aux
            else None
        )
        class_weights = torch.tensor(config.class_weights, dtype=torch.float32) if config.class_weights else None
        # Not persistent: the weights live in the config, so checkpoints stay free of loss state.
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.post_init()
        if config.deploy_mode:
            self._fuse_batch_norms()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_auxiliary_logits: bool | None = None,
        **kwargs,
    ) -> DSNetSemanticSegmenterOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
            Ground-truth class ids in `[0, num_labels)` or `config.semantic_loss_ignore_index`. Any size: the
            logits are upsampled to it for the loss.
        output_auxiliary_logits (`bool`, *optional*):
            Also return the auxiliary heads' logits (always done in training mode or with labels).

        `output_hidden_states`, `output_attentions` (keyword arguments) are passed to [`DSNetModel`];
        `return_dict=False` returns `output.to_tuple()` (every field that is not None, in field order).
        With `config.num_labels == 1` the model is a binary segmenter: `logits` are one channel of foreground
        logits and the loss is binary cross-entropy over the non-ignored pixels (labels 0 or 1).
        """
        if labels is not None:
            self._check_labels(labels, pixel_values)
        outputs = self.dsnet(pixel_values, **{**kwargs, "return_dict": True})
        skip = outputs.skip_hidden_state
        upsampled = F.interpolate(
            outputs.last_hidden_state, size=skip.shape[-2:], mode="bilinear", align_corners=False
        )
        logits = self.decode_head(torch.cat([upsampled, skip], dim=1))

        auxiliary_logits = None
        want_aux = self.training or labels is not None or bool(output_auxiliary_logits)
        if self.auxiliary_heads is not None and want_aux:
            auxiliary_logits = tuple(
                head(features)
                for head, features in zip(self.auxiliary_heads, outputs.fusion_hidden_states, strict=False)
            )

        loss = main_loss = auxiliary_losses = None
        if labels is not None:
            loss, main_loss, auxiliary_losses = self.compute_loss(logits, auxiliary_logits, labels)

        return DSNetSemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            main_loss=main_loss,
            auxiliary_losses=auxiliary_losses,
            auxiliary_logits=auxiliary_logits,
        )

    def compute_loss(
        self,
        logits: torch.Tensor,
        auxiliary_logits: Sequence[torch.Tensor] | None,
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """The published loss; every head's logits are upsampled bilinearly to the label size first."""
        config = self.config
        ignore_index = config.semantic_loss_ignore_index
        weight = self.class_weights

        def upsample(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)

        if config.num_labels == 1:
            main_loss = _binary_cross_entropy(upsample(logits), labels, ignore_index)
        elif config.use_ohem:
            main_loss = ohem_cross_entropy(
                upsample(logits), labels, config.ohem_threshold, config.ohem_min_kept, weight, ignore_index
            )
        else:
            main_loss = _weighted_cross_entropy(upsample(logits), labels, weight, ignore_index)
        loss = config.main_loss_weight * main_loss
        auxiliary_losses = None
        if auxiliary_logits is not None:
            auxiliary_losses = tuple(
                _binary_cross_entropy(upsample(aux), labels, ignore_index)
                if config.num_labels == 1
                else _weighted_cross_entropy(upsample(aux), labels, weight, ignore_index)
                for aux in auxiliary_logits
            )
            for aux_weight, aux_loss in zip(config.auxiliary_loss_weights, auxiliary_losses, strict=False):
                loss = loss + aux_weight * aux_loss
        return loss, main_loss, auxiliary_losses

    def _check_labels(self, labels: torch.Tensor, pixel_values: torch.Tensor) -> None:
        if labels.ndim != 3:
            raise ValueError(
                f"labels must be a 3-D tensor (batch, height, width) of class ids, got shape {tuple(labels.shape)}."
            )
        if labels.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"labels has batch size {labels.shape[0]} but pixel_values has {pixel_values.shape[0]}."
            )
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(f"labels must be an integer tensor of class ids, got {labels.dtype}.")
        # The value check needs the data on the host: done for CPU tensors (free), skipped on accelerators to
        # avoid a synchronisation per step (the training data pipeline validates labels before they get there).
        if labels.device.type == "cpu" and not torch.compiler.is_compiling():
            ignore_index = self.config.semantic_loss_ignore_index
            num_labels = self.config.num_labels
            binary = " (binary segmentation: 0 or 1)" if num_labels == 1 else ""
            bad = ((labels < 0) | (labels >= max(num_labels, 2))) & (labels != ignore_index)
            if bool(bad.any()):
                values = torch.unique(labels[bad])[:10].tolist()
                raise ValueError(
                    f"labels contain values {values} outside [0, num_labels={num_labels}){binary} that are not "
                    f"the ignore index {ignore_index}. Map void classes to {ignore_index} (or set "
                    "config.semantic_loss_ignore_index), or load the model with the right num_labels."
                )

    def to_deploy(self) -> DSNetForSemanticSegmentation:
        """Prepare the model for fast inference, in place: fold every BatchNorm into its convolution, drop the
        auxiliary heads and use channels-last memory. Recorded in the config (`deploy_mode=True`), so the model
        saves and loads in this form. Puts the model in eval mode; the result is not meant for training."""
        self.eval()
        self._fuse_batch_norms()
        self.auxiliary_heads = None  # their leading BatchNorm (BN -> ReLU -> conv) could not be folded anyway
        left = [name for name, m in self.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if left:
            raise RuntimeError(f"to_deploy() could not fold these BatchNorms into a convolution: {left}.")
        self.config.deploy_mode = True
        self.config.use_auxiliary_heads = False
        return self.to(memory_format=torch.channels_last)


__all__ = [
    "MSAF",
    "DSNetModel",
    "DSNetForSemanticSegmentation",
    "DSNetPreTrainedModel",
    "DSNetModelOutput",
    "DSNetSemanticSegmenterOutput",
    "DSNetSlidingWindow",
    "ohem_cross_entropy",
    "check_sliding_window",
    "default_window_stride",
    "sliding_window_logits",
]
