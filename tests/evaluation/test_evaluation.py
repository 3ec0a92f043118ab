"""Evaluation (msaf_hf.evaluation, scripts/evaluate.py): exact confusion matrices, sharding without double
counting, test-time augmentation, the per-class table and JSON, and the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from msaf_hf import DSNetForSemanticSegmentation, load_preset
from msaf_hf.evaluation import (
    EvaluationResult,
    evaluate,
    format_results_table,
    main,
    predict,
    results_to_json,
    shard_indices,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread_and_fresh_accelerate_state")


class ListDataset(torch.utils.data.Dataset):
    """Examples of different sizes, 255 = ignore on some pixels."""

    def __init__(self, sizes, num_labels=4, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.items = []
        for height, width in sizes:
            labels = torch.randint(0, num_labels, (height, width), generator=generator)
            labels[torch.rand(height, width, generator=generator) < 0.2] = 255
            self.items.append({"pixel_values": torch.randn(3, height, width, generator=generator), "labels": labels})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=4)).eval()
    # Non-trivial BatchNorm statistics so that predictions vary over the image.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


def expected_matrix(model, dataset, num_labels=4):
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    with torch.no_grad():
        for item in dataset:
            logits = model(pixel_values=item["pixel_values"][None]).logits
            logits = F.interpolate(logits, size=item["labels"].shape, mode="bilinear", align_corners=False)
            prediction = logits.argmax(1)[0].numpy().ravel()
            labels = item["labels"].numpy().ravel()
            valid = labels != 255
            np.add.at(matrix, (labels[valid], prediction[valid]), 1)
    return matrix


@pytest.mark.parametrize("num_examples,world_size", [(5, 2), (7, 3), (2, 4), (0, 2), (9, 1)])
def test_shards_partition_the_dataset(num_examples, world_size):
    shards = [list(shard_indices(num_examples, rank, world_size)) for rank in range(world_size)]
    flat = sorted(i for shard in shards for i in shard)
    assert flat == list(range(num_examples))  # every example exactly once
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError):
        shard_indices(3, world_size, world_size)


def test_evaluate_matches_a_direct_computation(model):
    dataset = ListDataset([(32, 40), (24, 24), (32, 40)])
    result = evaluate(model, dataset, show_progress=False)
    expected = expected_matrix(model, dataset)
    assert torch.equal(result.confusion_matrix, torch.from_numpy(expected))
    assert result.num_images == 3
    valid = sum(int((item["labels"] != 255).sum()) for item in dataset)
    assert int(result.confusion_matrix.sum()) == valid
    true_positives = np.diag(expected)
    union = expected.sum(0) + expected.sum(1) - true_positives
    iou = true_positives[union > 0] / union[union > 0]
    assert result.metrics["mean_iou"] == pytest.approx(iou.mean())
    assert result.metrics["pixel_accuracy"] == pytest.approx(true_positives.sum() / expected.sum())
    assert not model.training


def test_sharded_evaluation_counts_every_image_once(model):
    dataset = ListDataset([(32, 32)] * 5, seed=1)
    single = evaluate(model, dataset, batch_size=2, show_progress=False).confusion_matrix
    for world_size in (2, 3):
        # Without an initialised process group all_reduce is a no-op, so each call returns its own shard's counts.
        shards = [
            evaluate(model, dataset, accelerator=SimpleNamespace(process_index=rank, num_processes=world_size,
                                                                  device=torch.device("cpu")),
                     batch_size=2, show_progress=False).confusion_matrix
            for rank in range(world_size)
        ]
        assert torch.equal(sum(shards), single)  # uneven shards (3+2, 2+2+1), nothing padded or repeated


def test_evaluate_restores_training_mode(model):
    model.train()
    try:
        evaluate(model, ListDataset([(16, 16)]), show_progress=False)
        assert model.training
    finally:
        model.eval()


def test_evaluate_rejects_a_different_label_set(model):
    with pytest.raises(ValueError, match="5 classes but the model predicts 4"):
        evaluate(model, ListDataset([(16, 16)]), id2label={i: str(i) for i in range(5)}, show_progress=False)


def test_flip_and_multiscale_test_time_augmentation(model):
    pixel_values = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(3))
    size = (40, 56)
    with torch.no_grad():
        def view_probabilities(inputs, flipped):
            x = inputs.flip(-1) if flipped else inputs
            logits = F.interpolate(model(pixel_values=x).logits, size=size, mode="bilinear", align_corners=False)
            return (logits.flip(-1) if flipped else logits).softmax(1)

        plain = predict(model, pixel_values, size)
        reference = F.interpolate(model(pixel_values=pixel_values).logits, size=size, mode="bilinear", align_corners=False)  # noqa: E501
        assert torch.equal(plain, reference)  # no TTA: the upsampled logits themselves

        flipped = predict(model, pixel_values, size, flip=True)
        expected = (view_probabilities(pixel_values, False) + view_probabilities(pixel_values, True)) / 2
        torch.testing.assert_close(flipped, expected, rtol=0, atol=1e-6)

        half = F.interpolate(pixel_values, size=(16, 24), mode="bilinear", align_corners=False)
        multi = predict(model, pixel_values, size, flip=True, scales=(0.5, 1.0))
        expected = (view_probabilities(half, False) + view_probabilities(half, True)
                    + view_probabilities(pixel_values, False) + view_probabilities(pixel_values, True)) / 4
        torch.testing.assert_close(multi, expected, rtol=0, atol=1e-6)
        assert not torch.allclose(multi, flipped)
    with pytest.raises(ValueError, match="positive"):
        predict(model, pixel_values, scales=(0.0,))


def test_test_time_augmentation_of_a_binary_segmenter_averages_sigmoid_probabilities():
    """One logit channel: the views' sigmoid probabilities are averaged and returned as a logit (> 0 = foreground).
    A softmax over the one channel would be 1 everywhere, i.e. every pixel foreground."""
    torch.manual_seed(0)
    binary = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=1)).eval()
    with torch.no_grad():
        classifier = binary.decode_head.classifier
        weight = classifier.weight.clone()
        classifier.weight.zero_()
        classifier.bias.fill_(-5.0)  # every view says background everywhere, with probability sigmoid(-5)
        pixel_values = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(4))
        scores = predict(binary, pixel_values, flip=True, scales=(0.5, 1.0))
        assert scores.shape == (1, 1, 32, 48)
        torch.testing.assert_close(scores, torch.full_like(scores, -5.0))
        classifier.bias.fill_(-200.0)  # saturated: sigmoid is 0 in float32; the score stays finite and negative
        saturated = predict(binary, pixel_values, flip=True)
        assert torch.isfinite(saturated).all() and (saturated < 0).all()

        classifier.weight.copy_(weight)
        classifier.bias.fill_(0.0)
        views = []
        for inputs in (F.interpolate(pixel_values, size=(16, 24), mode="bilinear", align_corners=False),
                       pixel_values):
            for flipped in (False, True):
                x = inputs.flip(-1) if flipped else inputs
                logits = F.interpolate(binary(pixel_values=x).logits, size=(32, 48), mode="bilinear",
                                       align_corners=False)
                views.append((logits.flip(-1) if flipped else logits).sigmoid())
        expected = torch.logit(sum(views) / 4)
        torch.testing.assert_close(predict(binary, pixel_values, flip=True, scales=(0.5, 1.0)), expected,
                                   rtol=1e-5, atol=1e-5)


def test_table_and_json():
    metrics = {"mean_iou": 0.5, "pixel_accuracy": 0.75, "mean_class_accuracy": 0.6,
               "per_class_iou": [0.25, 0.75, float("nan")], "per_class_accuracy": [0.5, 0.7, float("nan")]}
    id2label = {0: "road", 1: "sky", 2: "bicyclist"}
    table = format_results_table(metrics, id2label)
    lines = table.splitlines()
    assert lines[2].split() == ["road", "25.00", "50.00"] and lines[4].split() == ["bicyclist", "n/a", "n/a"]
    assert "mIoU" in table and "50.00" in lines[-3]
    result = EvaluationResult(metrics, torch.tensor([[3, 1, 0], [0, 2, 0], [0, 0, 0]]), 7, id2label)
    payload = results_to_json(result, model="m")
    text = json.dumps(payload, allow_nan=False)  # strict JSON: NaN became null
    assert payload["per_class_iou"] == [0.25, 0.75, None] and payload["iou_by_class"]["sky"] == 0.75
    assert payload["confusion_matrix"][0] == [3, 1, 0] and json.loads(text)["model"] == "m"


def test_evaluate_command(tmp_path, capsys):
    torch.manual_seed(0)
    names = {0: "background", 1: "disc", 2: "square", 3: "triangle"}
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=4, id2label=names)).eval()
    model.save_pretrained(tmp_path / "model")
    output_file = tmp_path / "results" / "eval.json"
    payload = main(["--model_name_or_path", str(tmp_path / "model"), "--synthetic", "--synthetic_num_eval", "3",
                    "--synthetic_num_train", "1", "--synthetic_image_size", "32", "--flip", "--scales", "0.75", "1.0",
                    "--output_file", str(output_file)])
    printed = capsys.readouterr().out
    assert "triangle" in printed and f"mIoU: {payload['mean_iou']:.4f} on 3 images" in printed
    saved = json.loads(output_file.read_text())
    assert saved["test_time_augmentation"] == {"flip": True, "scales": [0.75, 1.0]}
    assert saved["num_images"] == 3 and saved["class_names"] == list(names.values())
    # The same numbers as the library call on the same data.
    from msaf_hf.data import DataArguments, load_segmentation_data

    data = load_segmentation_data(DataArguments(synthetic=True, synthetic_num_eval=3, synthetic_num_train=1,
                                                synthetic_image_size=[32]))
    direct = evaluate(model, data.eval, flip=True, scales=(0.75, 1.0), show_progress=False)
    assert saved["confusion_matrix"] == direct.confusion_matrix.tolist()
    assert saved["mean_iou"] == pytest.approx(direct.metrics["mean_iou"]) or math.isnan(direct.metrics["mean_iou"])


def test_evaluate_command_reuses_a_training_recipe_and_needs_a_model(tmp_path):
    with pytest.raises(ValueError, match="--model_name_or_path"):
        main(["--config", str(REPO_ROOT / "configuration" / "quickstart.yaml")])
    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=4))
    model.save_pretrained(tmp_path / "model")
    payload = main(["--config", str(REPO_ROOT / "configuration" / "quickstart.yaml"), "--model_name_or_path",
                    str(tmp_path / "model"), "--synthetic_num_eval", "2", "--synthetic_num_train", "1",
                    "--output_file", str(tmp_path / "eval.json")])
    assert payload["num_images"] == 2 and payload["eval_size"] == "native"
    # A dataset with another number of classes is refused.
    with pytest.raises(ValueError, match="classes"):
        main(["--model_name_or_path", str(tmp_path / "model"), "--synthetic", "--synthetic_num_labels", "3",
              "--synthetic_num_eval", "2", "--synthetic_num_train", "1", "--id2label_file",
              str(_write(tmp_path / "three.json", {"0": "a", "1": "b", "2": "c"})),
              "--output_file", str(tmp_path / "x.json")])


def _write(path: Path, content) -> Path:
    path.write_text(json.dumps(content))
    return path


def test_evaluate_command_uses_the_checkpoints_saved_preprocessing(tmp_path, monkeypatch):
    """Without --eval_size the checkpoint's preprocessor_config.json decides the input size (it used to score at
    full resolution unless --eval_size was repeated); --eval_size overrides it."""
    from msaf_hf.data import eval_image_processor

    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=4))
    model.save_pretrained(tmp_path / "model")
    eval_image_processor([16, 24]).save_pretrained(tmp_path / "model")
    seen = []
    forward = DSNetForSemanticSegmentation.forward
    monkeypatch.setattr(DSNetForSemanticSegmentation, "forward",
                        lambda self, pixel_values, **kw: seen.append(tuple(pixel_values.shape[-2:])) or forward(self, pixel_values, **kw))  # noqa: E501
    args = ["--config", str(REPO_ROOT / "configuration" / "quickstart.yaml"), "--model_name_or_path",
            str(tmp_path / "model"), "--synthetic_num_eval", "2", "--synthetic_num_train", "1",
            "--output_file", str(tmp_path / "eval.json")]
    payload = main(args)
    assert payload["eval_size"] == {"height": 16, "width": 24} and set(seen) == {(16, 24)}
    seen.clear()
    payload = main([*args, "--eval_size", "8", "16"])
    assert payload["eval_size"] == [8, 16] and set(seen) == {(8, 16)}
