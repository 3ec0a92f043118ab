"""The published-checkpoint converter: every layout, inference of the variant, and bad checkpoints."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import PARITY_CASES, REPO_ROOT, load_fixture, require_reference
from transformers import AutoModelForSemanticSegmentation

import msaf_hf  # noqa: F401  (registers DSNet with the Auto classes)
from msaf_hf.convert import (
    convert_original_checkpoint,
    convert_to_folder,
    load_original_state_dict,
    rename_original_key,
)

EXPECTED_LAYOUTS = {
    "dsnet_head128_full": "training-checkpoint",
    "dsnet_head64_tiny": "state-dict",
    "dsnet_head256_tiny": "inference-only",
    "dsnet_m_tiny": "wrapped-state-dict",
}


@pytest.mark.slow
@pytest.mark.parametrize("case", PARITY_CASES)
def test_every_layout_converts_to_a_loadable_folder(case, tmp_path):
    reference = require_reference()
    tensors, meta = load_fixture(case)
    report = convert_to_folder(reference / f"{case}.pth", tmp_path)
    assert report.layout == EXPECTED_LAYOUTS[case]
    assert {"model.safetensors", "config.json", "preprocessor_config.json"} <= {p.name for p in tmp_path.iterdir()}
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt*"))

    model = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    config = model.config
    assert config.num_labels == meta["num_classes"] and config.base_channels == meta["planes"]
    assert config.use_auxiliary_heads == ("eval.aux_logits_p" in tensors)
    expected_head = {"dsnet_head64": "head64", "dsnet_head256": "head256"}.get(meta["original_model_name"], "head128")
    assert config.head_type == expected_head
    assert config.detail_depth == (3 if meta["original_model_name"] == "dsnet_m" else 2)
    with torch.no_grad():
        logits = model(tensors["pixel_values"]).logits
    logits = F.interpolate(logits, size=tensors["pixel_values"].shape[-2:], mode="bilinear", align_corners=False)
    reference_logits = tensors["eval.logits"]
    assert (logits - reference_logits).abs().max() <= 1e-3 * reference_logits.abs().max()


def test_training_checkpoint_keeps_class_weights_and_drops_optimizer(tmp_path):
    reference = require_reference()
    _, meta = load_fixture("dsnet_head128_full")
    checkpoint = load_original_state_dict(reference / "dsnet_head128_full.pth")
    assert checkpoint.metadata == {"epoch": 3, "best_mIoU": 0.5}
    assert not any("loss" in key or "optimizer" in key for key in checkpoint.state_dict)
    convert_to_folder(reference / "dsnet_head128_full.pth", tmp_path)
    model = AutoModelForSemanticSegmentation.from_pretrained(tmp_path)
    assert model.config.class_weights == pytest.approx(meta["class_weights"])
    assert model.config.id2label[0] == "road" and model.config.id2label[18] == "bicycle"  # Cityscapes names


@pytest.mark.slow
def test_command_line(tmp_path):
    reference = require_reference()
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "convert_original_checkpoint.py"),
         str(reference / "dsnet_head128_full.pth"), str(tmp_path / "out"), "--variant", "dsnet_head128", "--num-labels", "19"],  # noqa: E501
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "layout: training-checkpoint" in result.stdout and "head_type=head128" in result.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.slow
def test_command_line_reports_errors(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "convert_original_checkpoint.py"),
         str(require_reference() / "dsnet_head64_tiny.pth"), str(tmp_path / "out"), "--variant", "dsnet-head256"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and "error: Shape mismatch for checkpoint key" in result.stderr
    assert not (tmp_path / "out").exists()


def _tiny_state_dict() -> dict[str, torch.Tensor]:
    return load_original_state_dict(require_reference() / "dsnet_head64_tiny.pth").state_dict


def test_encoder_only_checkpoint_gets_fresh_heads(tmp_path):
    encoder = {f"module.{k}": v for k, v in _tiny_state_dict().items() if not k.startswith(("lastlayer", "seghead"))}
    path = tmp_path / "imagenet.pth"
    torch.save({"state_dict": encoder}, path)
    with pytest.raises(ValueError, match="pass --num_labels"):
        convert_original_checkpoint(path)
    model, report = convert_original_checkpoint(path, num_labels=11)
    assert report.layout == "encoder-only" and model.config.num_labels == 11
    assert report.missing_keys and all(k.startswith(("decode_head.", "auxiliary_heads.")) for k in report.missing_keys)
    assert "decode_head" in str(report)
    torch.testing.assert_close(model.dsnet.stem[0].conv.weight, encoder["module.conv1.0.weight"], rtol=0, atol=0)


def test_unknown_key_is_named(tmp_path):
    state = _tiny_state_dict()
    state["extra_branch.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(KeyError, match="extra_branch.weight"):
        convert_original_checkpoint(tmp_path / "bad.pt")


def test_shape_mismatch_is_named(tmp_path):
    state = _tiny_state_dict()
    state["layer3_.0.conv2.weight"] = torch.zeros(32, 32, 1, 1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"Shape mismatch for checkpoint key 'layer3_.0.conv2.weight'"):
        convert_original_checkpoint(tmp_path / "bad.pt")


def test_wrong_variant_is_a_shape_error():
    with pytest.raises(ValueError, match="Shape mismatch"):
        convert_original_checkpoint(require_reference() / "dsnet_head64_tiny.pth", variant="dsnet-head256")


def test_contradicting_num_labels_is_refused():
    with pytest.raises(ValueError, match="contradicts the checkpoint's classifier, which has 7"):
        convert_original_checkpoint(require_reference() / "dsnet_head64_tiny.pth", num_labels=19)


def test_missing_tensors_are_an_error(tmp_path):
    state = _tiny_state_dict()
    del state["aff2.context3.4.weight"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="lacks 1 tensors"):
        convert_original_checkpoint(tmp_path / "partial.pt")


class NotAWeight:  # an arbitrary pickled object: weights_only loading must refuse it
    pass


def test_only_weights_are_unpickled(tmp_path):
    torch.save({"state_dict": {"conv1.0.weight": NotAWeight()}}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights-only"):
        load_original_state_dict(tmp_path / "evil.pth")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_original_state_dict(tmp_path / "absent.pth")


def test_renaming_covers_the_published_state_dict():
    import json

    shapes = json.loads((require_reference() / "original_state_dict_shapes.json").read_text())
    for name, keys in shapes.items():
        config = msaf_hf.load_preset(name, num_labels=19)
        ours = msaf_hf.DSNetForSemanticSegmentation(config).state_dict()
        renamed = {rename_original_key(k): tuple(v) for k, v in keys.items()}
        assert set(renamed) == set(ours), name
        assert all(tuple(ours[k].shape) == shape for k, shape in renamed.items()), name


@pytest.mark.slow
def test_converted_training_checkpoint_from_pretrained_gives_the_published_training_loss(tmp_path, monkeypatch):
    """The class weights are a non-persistent buffer no checkpoint carries: from_pretrained must rebuild them.
    Memory the loader materialises is poisoned (NaN) so that a buffer left uninitialised fails every run."""
    reference = require_reference()
    tensors, meta = load_fixture("dsnet_head128_full")
    convert_to_folder(reference / "dsnet_head128_full.pth", tmp_path)
    real_empty_like = torch.empty_like
    monkeypatch.setattr(
        torch, "empty_like",
        lambda t, *a, **k: real_empty_like(t, *a, **k).fill_(float("nan") if t.is_floating_point() else -7),
    )
    overrides = {k: meta[k] for k in ("ohem_min_kept", "ohem_threshold") if k in meta}
    model = AutoModelForSemanticSegmentation.from_pretrained(tmp_path, **overrides).train()
    torch.testing.assert_close(model.class_weights, torch.tensor(meta["class_weights"], dtype=torch.float32))
    out = model(tensors["pixel_values"], labels=tensors["labels"])
    for key, value in {"train.loss": out.loss, "train.loss_main_ohem": out.main_loss,
                       "train.loss_aux_p": out.auxiliary_losses[0], "train.loss_aux_d": out.auxiliary_losses[1]}.items():  # noqa: E501
        published = tensors[key].item()
        relative = abs(value.item() - published) / abs(published)
        print(f"{key}: ours {value.item():.6f} published {published:.6f} relative difference {relative:.2e}")
        assert relative <= 1e-4, f"{key}: {value.item()} vs {published}"
