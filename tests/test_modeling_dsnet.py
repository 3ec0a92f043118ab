"""DSNet modeling: parity with the published code, the MSAF module, outputs, loss and input errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import PARITY_CASES, load_fixture, require_reference

from msaf_hf import MSAF, DSNetConfig, DSNetForSemanticSegmentation, DSNetModel, load_preset
from msaf_hf.convert import convert_original_checkpoint
from msaf_hf.modeling_dsnet import ohem_cross_entropy


def _upsample(logits: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _fixture_model(case: str):
    tensors, meta = load_fixture(case)
    overrides = {}
    if "ohem_min_kept" in meta:
        overrides["ohem_min_kept"] = meta["ohem_min_kept"]
        overrides["ohem_threshold"] = meta["ohem_threshold"]
    if meta.get("class_weights") and meta["layout"] != "training-checkpoint":
        # Only training checkpoints carry the weights (as loss buffers); elsewhere they are in the metadata.
        overrides["class_weights"] = meta["class_weights"]
    names = {i: f"c{i}" for i in range(meta["num_classes"])}
    model, report = convert_original_checkpoint(require_reference() / f"{case}.pth", id2label=names, **overrides)
    return model, tensors, meta, report


# ---------------------------------------------------------------------------------------------------------------
# Parity with the published code
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", PARITY_CASES)
def test_eval_logits_match_published_code(case):
    model, tensors, meta, _ = _fixture_model(case)
    model.eval()
    pixel_values = tensors["pixel_values"]
    with torch.no_grad():
        out = model(pixel_values, output_auxiliary_logits=True)
    size = pixel_values.shape[-2:]
    assert out.logits.shape[-2:] == (size[0] // 4, size[1] // 4)
    compared = {"eval.logits": out.logits}
    if "eval.aux_logits_p" in tensors:
        compared["eval.aux_logits_p"] = out.auxiliary_logits[0]
        compared["eval.aux_logits_d"] = out.auxiliary_logits[1]
    else:
        assert out.auxiliary_logits is None  # inference-only checkpoint: no auxiliary heads
    for key, ours in compared.items():
        reference = tensors[key]
        ours = _upsample(ours, size)
        error = (ours - reference).abs().max() / reference.abs().max()
        assert error <= 1e-3, f"{case} {key}: relative error {error:.2e}"
        agreement = (ours.argmax(1) == reference.argmax(1)).float().mean()
        assert agreement > 0.999, f"{case} {key}: argmax agrees on {agreement:.4%} of pixels"


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in PARITY_CASES if c in ("dsnet_head128_full", "dsnet_m_tiny")])
def test_training_losses_match_published_code(case):
    model, tensors, meta, _ = _fixture_model(case)
    model.train()
    out = model(tensors["pixel_values"], labels=tensors["labels"])
    ours = {
        "train.loss": out.loss,
        "train.loss_main_ohem": out.main_loss,
        "train.loss_aux_p": out.auxiliary_losses[0],
        "train.loss_aux_d": out.auxiliary_losses[1],
    }
    for key, value in ours.items():
        reference = tensors[key].item()
        assert abs(value.item() - reference) <= 1e-4 * abs(reference), f"{case} {key}: {value.item()} vs {reference}"
    out.loss.backward()  # the loss is differentiable end to end
    assert model.decode_head.classifier.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "preset, with_aux, without_aux",
    [("dsnet", 6.94, 6.76), ("dsnet-head64", 6.74, 6.55), ("dsnet-head256", 10.18, 9.99), ("dsnet-base", 38.21, 37.46)],
)
def test_parameter_counts_match_the_published_table(preset, with_aux, without_aux):
    model = DSNetForSemanticSegmentation(load_preset(preset, num_labels=19))
    total = sum(p.numel() for p in model.parameters())
    aux = sum(p.numel() for p in model.auxiliary_heads.parameters())
    assert round(total / 1e6, 2) == with_aux
    assert round((total - aux) / 1e6, 2) == without_aux


# ---------------------------------------------------------------------------------------------------------------
# MSAF on its own
# ---------------------------------------------------------------------------------------------------------------


def test_msaf_defaults_follow_the_seed():
    fusion = MSAF()
    assert fusion.context_sizes == (4, 8)
    assert fusion.local_attention.reduce.conv.in_channels == 64
    assert fusion.local_attention.reduce.conv.out_channels == 16  # channels // r with r = 4
    assert len(fusion.context_attentions) == 2


def test_msaf_formula_and_weights():
    torch.manual_seed(0)
    fusion = MSAF(channels=16, r=4, context_sizes=(2, 4, 8)).eval()
    x, residual = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    out, weights = fusion(x, residual, return_weights=True)
    assert weights.shape == x.shape and weights.min() > 0 and weights.max() < 1
    torch.testing.assert_close(out, 2 * x * weights + 2 * residual * (1 - weights))
    # the weights come from x + residual only, through the local, global and context paths
    summed = x + residual
    logits = fusion.local_attention(summed) + fusion.global_attention(summed.mean((2, 3), keepdim=True))
    for size, path in zip(fusion.context_sizes, fusion.context_attentions, strict=False):
        logits = logits + F.interpolate(path(F.adaptive_avg_pool2d(summed, size)), size=(8, 8), mode="nearest")
    torch.testing.assert_close(weights, torch.sigmoid(logits))
    assert torch.equal(fusion(x, residual), out)


@pytest.mark.parametrize("sizes", [(), (4,), (4, 8), (2, 4, 8, 16)])
def test_msaf_any_number_of_contexts_and_sizes(sizes):
    fusion = MSAF(channels=8, r=2, context_sizes=sizes).train()
    x = torch.randn(2, 8, 13, 7)  # not a multiple of the pool sizes
    out = fusion(x, torch.randn_like(x))
    out.sum().backward()
    assert out.shape == x.shape and len(fusion.context_attentions) == len(sizes)


def test_msaf_rejects_bad_arguments():
    with pytest.raises(ValueError, match="r \\(reduction ratio\\)"):
        MSAF(channels=8, r=16)
    with pytest.raises(ValueError, match="context_sizes"):
        MSAF(channels=8, context_sizes=(4, 0))
    with pytest.raises(ValueError, match="same shape"):
        MSAF(channels=8)(torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 5))


def test_msaf_usable_inside_another_network():
    class TwoStream(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fuse = MSAF(channels=8, r=2)

        def forward(self, x):
            return self.fuse(self.a(x), self.b(x))

    net = TwoStream()
    loss = net(torch.randn(2, 3, 16, 16)).square().mean()
    loss.backward()
    assert net.a.weight.grad is not None and net.fuse.local_attention.reduce.conv.weight.grad is not None


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(64, 96), (67, 93), (33, 40), (8, 8)])
def test_any_input_size(tiny_config, height, width):
    model = DSNetForSemanticSegmentation(tiny_config).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, height, width))
    def quarter(n):
        return -(-(-(-n // 2)) // 2)  # two stride-2 convolutions with padding 1: ceil twice  # noqa: B002
    assert out.logits.shape == (1, 5, quarter(height), quarter(width))
    assert torch.isfinite(out.logits).all()


def test_attentions_are_the_three_fusion_weight_maps(tiny_config):
    model = DSNetForSemanticSegmentation(tiny_config).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == 3
    for weights in out.attentions:
        assert weights.shape == (2, tiny_config.detail_channels, 8, 8)
        assert weights.min() >= 0 and weights.max() <= 1  # a sigmoid (it may saturate in float32)
        assert weights.std() > 0  # a real per-pixel weighting, not a constant
    assert len(out.hidden_states) == 7
    assert out.hidden_states[0].shape[-1] == 16 and out.hidden_states[2].shape[-1] == 8
    default = model(torch.randn(2, 3, 64, 64))
    assert default.attentions is None and default.hidden_states is None and default.auxiliary_logits is None


def test_fusion_ablations(tiny_config):
    for fusion_type, paths in [("aff", 0), ("msaf", 3)]:
        config = DSNetConfig(**{**tiny_config.to_dict(), "fusion_type": fusion_type})
        model = DSNetForSemanticSegmentation(config).eval()
        assert len(model.dsnet.fusions[0].context_attentions) == paths
    config = DSNetConfig(**{**tiny_config.to_dict(), "fusion_type": "add"})
    model = DSNetForSemanticSegmentation(config).eval()
    out = model(torch.randn(1, 3, 32, 32), output_attentions=True)
    assert out.attentions == ()  # a plain sum has no fusion weights to record
    assert not any("fusions" in name for name, _ in model.named_parameters())


def test_encoder_outputs(tiny_config):
    encoder = DSNetModel(tiny_config).eval()
    out = encoder(torch.randn(1, 3, 64, 64))
    assert out.last_hidden_state.shape == (1, tiny_config.decoder_channels, 8, 8)
    assert out.skip_hidden_state.shape == (1, tiny_config.skip_channels, 16, 16)
    assert len(out.fusion_hidden_states) == 3
    as_tuple = encoder(torch.randn(1, 3, 64, 64), return_dict=False)
    assert isinstance(as_tuple, tuple) and as_tuple[0].shape == out.last_hidden_state.shape


@pytest.mark.slow
def test_return_dict_false(tiny_config):
    model = DSNetForSemanticSegmentation(tiny_config).train()
    labels = torch.randint(0, 5, (2, 32, 32))
    loss, logits = model(torch.randn(2, 3, 32, 32), labels=labels, return_dict=False)[:2]
    assert loss.ndim == 0 and logits.shape == (2, 5, 8, 8)


# ---------------------------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------------------------


def _ohem_reference(logits, labels, threshold, min_kept, weight, ignore_index=255):
    """The published OHEM written plainly with boolean indexing."""
    pixel_losses = F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index, reduction="none").flatten()
    mask = labels.flatten() != ignore_index
    safe = labels.clone()
    safe[safe == ignore_index] = 0
    probs = F.softmax(logits, 1).gather(1, safe.unsqueeze(1)).flatten()
    probs, order = probs[mask].sort()
    pivot = probs[min(min_kept, probs.numel() - 1)]
    cutoff = max(pivot.item(), threshold)
    return pixel_losses[mask][order][probs < cutoff].mean()


@pytest.mark.parametrize("min_kept, weighted", [(10, False), (10, True), (5000, True), (1, False)])
def test_ohem_matches_plain_implementation(min_kept, weighted):
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 16, 16) * 3
    labels = torch.randint(0, 4, (2, 16, 16))
    labels[:, :4] = 255
    weight = torch.tensor([0.5, 1.0, 1.5, 2.0]) if weighted else None
    ours = ohem_cross_entropy(logits, labels, 0.7, min_kept, weight)
    torch.testing.assert_close(ours, _ohem_reference(logits, labels, 0.7, min_kept, weight), rtol=1e-5, atol=0)


@pytest.mark.slow
def test_loss_with_every_pixel_ignored_is_zero_not_nan(tiny_config):
    model = DSNetForSemanticSegmentation(tiny_config).train()
    out = model(torch.randn(2, 3, 32, 32), labels=torch.full((2, 32, 32), 255))
    assert out.loss.item() == 0.0
    out.loss.backward()


@pytest.mark.slow
def test_loss_without_ohem_and_with_label_size_different_from_input(tiny_config):
    config = DSNetConfig(**{**tiny_config.to_dict(), "use_ohem": False})
    model = DSNetForSemanticSegmentation(config).train()
    labels = torch.randint(0, 5, (2, 48, 40))
    out = model(torch.randn(2, 3, 32, 32), labels=labels)
    expected = F.cross_entropy(_upsample(out.logits, (48, 40)), labels, ignore_index=255)
    torch.testing.assert_close(out.main_loss, expected)
    total = 0.6 * out.main_loss + 0.2 * out.auxiliary_losses[0] + 0.2 * out.auxiliary_losses[1]
    torch.testing.assert_close(out.loss, total)


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


def test_three_dimensional_input_is_explained(tiny_config):
    model = DSNetForSemanticSegmentation(tiny_config).eval()
    with pytest.raises(ValueError, match="4-D tensor.*unsqueeze\\(0\\)"):
        model(torch.randn(3, 32, 32))


def test_wrong_channel_count_is_explained(tiny_config):
    model = DSNetForSemanticSegmentation(tiny_config).eval()
    with pytest.raises(ValueError, match="4 channels but the model expects config.num_channels=3"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 32, 32, 3))  # channels-last numpy layout


def test_float64_input_is_explained(tiny_config):
    model = DSNetForSemanticSegmentation(tiny_config).eval()
    with pytest.raises(TypeError, match=r"pixel_values is torch.float64 but the model's weights are torch.float32.*"
                                        r"pixel_values.to\(torch.float32\)"):
        model(torch.rand(1, 3, 32, 32, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed precision: autocast casts the input itself
        assert model(torch.rand(1, 3, 32, 32, dtype=torch.bfloat16)).logits.shape[0] == 1
    assert model.to(torch.float64)(torch.rand(1, 3, 32, 32, dtype=torch.float64)).logits.dtype == torch.float64


def test_out_of_range_labels_are_explained(tiny_config):
    model = DSNetForSemanticSegmentation(tiny_config).train()
    labels = torch.randint(0, 5, (2, 32, 32))
    labels[0, 0, 0] = 7
    labels[1, 0, 0] = 255  # the ignore index is fine
    with pytest.raises(ValueError, match=r"values \[7\] outside \[0, num_labels=5\)"):
        model(torch.randn(2, 3, 32, 32), labels=labels)
    with pytest.raises(ValueError, match="3-D tensor"):
        model(torch.randn(2, 3, 32, 32), labels=labels.unsqueeze(1))
    with pytest.raises(TypeError, match="integer"):
        model(torch.randn(2, 3, 32, 32), labels=labels.float())


def test_single_image_in_training_mode_is_explained(tiny_config):
    model = DSNetForSemanticSegmentation(tiny_config).train()
    with pytest.raises(ValueError, match="single image in training mode.*at least 2 images"):
        model(torch.randn(1, 3, 32, 32))
    model.eval()
    assert model(torch.randn(1, 3, 32, 32)).logits.shape[0] == 1


# ---------------------------------------------------------------------------------------------------------------
# Correct wherever transformers runs the model (issue 9)
# ---------------------------------------------------------------------------------------------------------------


def _poisoned_empty_like(monkeypatch):
    """Make every tensor transformers materialises with `torch.empty_like` hold NaN (floats) or -7 (integers), so
    that memory a loader leaves uninitialised is certainly wrong instead of wrong only when the allocator says so."""
    real_empty_like = torch.empty_like

    def poisoned(tensor, *args, **kwargs):
        out = real_empty_like(tensor, *args, **kwargs)
        return out.fill_(float("nan") if out.is_floating_point() else -7)

    monkeypatch.setattr(torch, "empty_like", poisoned)


def test_class_weights_are_rebuilt_after_meta_device_and_to_empty(tiny_config):
    config = DSNetConfig(**{**tiny_config.to_dict(), "class_weights": [0.5, 1.0, 1.5, 2.0, 2.5]})
    with torch.device("meta"):
        model = DSNetForSemanticSegmentation(config)
    model.to_empty(device="cpu")
    model.class_weights.fill_(float("nan"))  # what uninitialised memory may hold
    model.init_weights()
    torch.testing.assert_close(model.class_weights, torch.tensor(config.class_weights))


def test_class_weights_are_rebuilt_by_from_pretrained_and_from_config(tiny_config, tmp_path, monkeypatch):
    from transformers import AutoModelForSemanticSegmentation

    config = DSNetConfig(**{**tiny_config.to_dict(), "class_weights": [0.5, 1.0, 1.5, 2.0, 2.5]})
    DSNetForSemanticSegmentation(config).save_pretrained(tmp_path)
    _poisoned_empty_like(monkeypatch)
    expected = torch.tensor(config.class_weights)
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.class_weights, expected)
    torch.testing.assert_close(AutoModelForSemanticSegmentation.from_config(config).class_weights, expected)
    labels = torch.randint(0, 5, (2, 32, 32))
    assert torch.isfinite(loaded.train()(torch.randn(2, 3, 32, 32), labels=labels).loss)


def test_shared_depth_one_trains(tiny_config):
    config = DSNetConfig(**{**tiny_config.to_dict(), "shared_depth": 1})
    model = DSNetForSemanticSegmentation(config).train()
    out = model(torch.randn(2, 3, 32, 32), labels=torch.randint(0, 5, (2, 32, 32)))
    out.loss.backward()  # failed with "modified by an inplace operation" (a ReLU applied in place twice)
    assert model.dsnet.stem[0].conv.weight.grad.abs().sum() > 0


def test_one_label_is_binary_segmentation(tiny_config):
    config = DSNetConfig(**{**tiny_config.to_dict(), "num_labels": 1, "id2label": {0: "road"}})
    model = DSNetForSemanticSegmentation(config).train()
    labels = torch.randint(0, 2, (2, 32, 32))
    labels[0, :8] = 255
    pixel_values = torch.randn(2, 3, 32, 32)
    out = model(pixel_values, labels=labels)
    assert out.logits.shape == (2, 1, 8, 8)
    valid = labels != 255
    logits = _upsample(out.logits, (32, 32))[:, 0]
    expected = F.binary_cross_entropy_with_logits(logits[valid], labels[valid].float())
    torch.testing.assert_close(out.main_loss, expected)
    assert out.loss > 0  # softmax cross-entropy over one class was always exactly 0
    out.loss.backward()
    assert model.decode_head.classifier.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"values \[2\].*binary segmentation"):
        model(pixel_values, labels=torch.full((2, 32, 32), 2))


@pytest.mark.slow
@pytest.mark.parametrize("labelled", [False, True])
def test_return_dict_false_is_to_tuple(tiny_config, labelled):
    model = DSNetForSemanticSegmentation(tiny_config).train()
    pixel_values = torch.randn(2, 3, 32, 32)
    kwargs = {"output_hidden_states": True, "output_attentions": True}
    if labelled:
        kwargs["labels"] = torch.randint(0, 5, (2, 32, 32))
    torch.manual_seed(0)
    as_dict = model(pixel_values, **kwargs)
    torch.manual_seed(0)
    as_tuple = model(pixel_values, return_dict=False, **kwargs)
    expected = as_dict.to_tuple()
    assert len(as_tuple) == len(expected) == (7 if labelled else 4)  # main_loss and auxiliary fields included
    for ours, theirs in zip(as_tuple, expected, strict=False):
        torch.testing.assert_close(ours, theirs)
    encoder_tuple = model.dsnet(pixel_values, return_dict=False, **{k: v for k, v in kwargs.items() if k != "labels"})
    assert len(encoder_tuple) == 5


@pytest.mark.slow
def test_gradient_checkpointing_gives_identical_gradients_and_statistics(tiny_config):
    torch.manual_seed(0)
    reference = DSNetForSemanticSegmentation(tiny_config).train()
    checkpointed = DSNetForSemanticSegmentation(tiny_config).train()
    checkpointed.load_state_dict(reference.state_dict())
    checkpointed.activation_checkpointing_enable()
    assert checkpointed.is_activation_checkpointing
    calls = []
    for block in (checkpointed.dsnet.shared_stage1[0], checkpointed.dsnet.fusions[0], checkpointed.dsnet.pyramid):
        block._gradient_checkpointing_func = (lambda f: lambda *a, **k: calls.append(1) or f(*a, **k))(
            block._gradient_checkpointing_func
        )
    pixel_values, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2, 32, 32))
    for model in (reference, checkpointed):
        model(pixel_values, labels=labels).loss.backward()
    assert len(calls) == 3  # the blocks really ran through the checkpoint function
    for (name, a), b in zip(reference.named_parameters(), checkpointed.parameters(), strict=False):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, msg=name)
    for (name, a), b in zip(reference.named_buffers(), checkpointed.buffers(), strict=False):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)  # recomputation does not update BatchNorms twice
