"""``--class_weights auto`` / ``FILE``: weights from the training labels, recorded in config.json and the model card,
and used by the loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from camvid_subset import VOID, read_subset, write_format

from msaf_hf import DSNetForSemanticSegmentation
from msaf_hf.data import DataArguments
from msaf_hf.data.class_weights import ClassFrequencies, median_frequency_weights
from msaf_hf.hub import render_model_card
from msaf_hf.training import ModelArguments, TrainingArguments, train

pytestmark = pytest.mark.usefixtures("one_thread_and_fresh_accelerate_state")


def _run(tmp_path, flags, class_weights, max_steps=2):
    model = ModelArguments(config_overrides="base_channels=4,ohem_min_kept=64")
    data = DataArguments(crop_size=[48, 64], eval_split="none", **flags)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=max_steps, per_device_train_batch_size=2,
                             seed=0, disable_tqdm=True, class_weights=class_weights, save_best_model=False)
    return train(model, data, args)


def test_auto_class_weights_are_recorded_and_used_by_the_loss(tmp_path):
    subset = read_subset(num_train=8, num_eval=1)
    flags = write_format(tmp_path / "data", subset, "index")
    flags = {k: v for k, v in flags.items() if not k.startswith("eval_")}
    output = _run(tmp_path, flags, "auto")

    frequencies = ClassFrequencies(11)
    for _, _, raw in subset["train"]:
        frequencies.add(np.where(raw == VOID, 255, raw).astype(np.int64))
    expected = median_frequency_weights(frequencies)
    assert len(set(expected)) > 3  # imbalanced classes: the weights differ
    saved = json.loads((output.final_dir / "config.json").read_text())
    assert saved["class_weights"] == pytest.approx(expected)
    assert torch.allclose(output.model.class_weights, torch.tensor(expected))
    hyper = json.loads((output.final_dir / "training_hyperparameters.json").read_text())
    assert hyper["class_weights"].startswith("auto: median-frequency balancing")
    assert "median-frequency balancing" in str(render_model_card(output.final_dir, repo_id="me/dsnet-camvid"))

    weighted = DSNetForSemanticSegmentation.from_pretrained(output.final_dir).eval()
    unweighted = DSNetForSemanticSegmentation.from_pretrained(output.final_dir, class_weights=None).eval()
    assert torch.equal(weighted.class_weights, torch.tensor(expected, dtype=torch.float32))
    assert unweighted.class_weights is None
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, 48, 64, generator=generator)
    labels = torch.from_numpy(np.stack([raw[:48, :64] for _, _, raw in subset["train"][:2]]).astype(np.int64))
    labels[labels == VOID] = 255
    with torch.no_grad():
        loss_weighted = weighted(pixel_values, labels=labels).loss
        loss_unweighted = unweighted(pixel_values, labels=labels).loss
    assert torch.isfinite(loss_weighted) and not torch.isclose(loss_weighted, loss_unweighted)


def test_class_weights_from_a_file(tmp_path):
    subset = read_subset(num_train=4, num_eval=1)
    flags = {k: v for k, v in write_format(tmp_path / "data", subset, "index").items() if not k.startswith("eval_")}
    weights = [round(0.5 + 0.1 * i, 4) for i in range(11)]
    path = tmp_path / "weights.json"
    path.write_text(json.dumps(weights))
    output = _run(tmp_path, flags, str(path), max_steps=1)
    assert json.loads((output.final_dir / "config.json").read_text())["class_weights"] == pytest.approx(weights)
    path.write_text(json.dumps(weights[:3]))
    with pytest.raises(ValueError, match="has 3 weights but the data has 11 classes"):
        _run(tmp_path / "again", flags, str(path), max_steps=1)


def test_label_colors_model_uses_the_fine_tuned_models_label2color(tmp_path, tiny_config):
    import PIL.Image

    colors = {0: [128, 128, 128], 1: [128, 0, 0], 2: [0, 128, 192], 3: [60, 40, 222], 4: [9, 9, 9]}
    tiny_config.label2color = colors
    tiny_config.id2label = {i: f"c{i}" for i in range(5)}
    tiny_config.label2id = {f"c{i}": i for i in range(5)}
    DSNetForSemanticSegmentation(tiny_config).save_pretrained(tmp_path / "base")
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    lut = np.array([colors[i] for i in range(5)], np.uint8)
    for i in range(4):
        PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"{i}.png")
        PIL.Image.fromarray(lut[rng.integers(0, 5, (32, 32))]).save(masks / f"{i}.png")
    model = ModelArguments(model_name_or_path=str(tmp_path / "base"))
    data = DataArguments(image_dir=str(images), mask_dir=str(masks), eval_image_dir=str(images),
                         eval_mask_dir=str(masks), label_colors="model", crop_size=[32, 32])
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=2,
                             disable_tqdm=True, save_best_model=False)
    output = train(model, data, args)
    assert output.model.config.id2label == {i: f"c{i}" for i in range(5)}  # the names came with the colours
    assert output.confusion_matrix.sum() == 4 * 32 * 32  # every pixel decoded to a class and scored
    with pytest.raises(ValueError, match="--label_colors model needs --model_name_or_path"):
        train(ModelArguments(), data, TrainingArguments(output_dir=str(tmp_path / "run2"), max_steps=1))
