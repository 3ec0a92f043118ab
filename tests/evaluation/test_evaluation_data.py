"""scripts/evaluate.py reads its split with msaf_hf.data.load_split: the model's classes and the checkpoint's image
processor are given directly, so nothing is written to disk (it used to write the model's id2label to a temporary
JSON file) and the training split is not touched (it used to set train_split to the evaluation split)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from msaf_hf import DSNetForSemanticSegmentation, DSNetImageProcessor, load_preset
from msaf_hf.data import DataArguments, make_synthetic_segmentation_dataset
from msaf_hf.evaluation import main
from msaf_hf.evaluation.cli import evaluation_split, load_evaluation_data

pytestmark = pytest.mark.usefixtures("one_thread_and_fresh_accelerate_state")

NAMES = {0: "background", 1: "disc", 2: "square", 3: "triangle"}
MEAN, STD = [0.1, 0.8, 0.3], [0.6, 0.2, 0.12]  # far from ImageNet's: its constants would fail the check below


def _checkpoint(folder: Path) -> tuple[DSNetForSemanticSegmentation, DSNetImageProcessor]:
    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=4, id2label=NAMES)).eval()
    model.save_pretrained(folder)
    processor = DSNetImageProcessor(image_mean=MEAN, image_std=STD)
    processor.save_pretrained(folder)
    return model, processor


@pytest.fixture
def no_temporary_files(monkeypatch, tmp_path):
    """Every way of making a temporary file or folder fails the test, and the temporary folder is an empty one
    that must stay empty."""
    calls: list[str] = []
    for name in ("NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile", "mkstemp", "mkdtemp",
                 "TemporaryDirectory"):
        real = getattr(tempfile, name)

        def spy(*args, _name=name, _real=real, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(tempfile, name, spy)
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    yield calls
    assert calls == [], f"evaluation made temporary files ({calls})"
    assert list(temp_root.iterdir()) == []


def test_evaluate_writes_no_temporary_files_and_uses_the_checkpoints_processor(tmp_path, monkeypatch,
                                                                              no_temporary_files):
    model, processor = _checkpoint(tmp_path / "model")
    seen: list[torch.Tensor] = []
    forward = DSNetForSemanticSegmentation.forward

    def recording_forward(self, pixel_values, **kwargs):
        seen.append(pixel_values.detach().clone())
        return forward(self, pixel_values, **kwargs)

    monkeypatch.setattr(DSNetForSemanticSegmentation, "forward", recording_forward)
    payload = main(["--model_name_or_path", str(tmp_path / "model"), "--synthetic", "--synthetic_num_eval", "2",
                    "--synthetic_num_train", "1", "--synthetic_image_size", "32", "--output_file",
                    str(tmp_path / "eval.json")])
    assert payload["num_images"] == 2 and payload["class_names"] == list(NAMES.values())
    assert payload["dataset_split"] == "validation"
    validation = make_synthetic_segmentation_dataset(1, 2, (32, 32))["validation"]
    expected = processor(images=validation[0]["image"].convert("RGB"), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=1e-6)


def test_load_evaluation_data_keeps_the_arguments_and_uses_the_models_classes(no_temporary_files):
    args = DataArguments(synthetic=True, synthetic_num_train=1, synthetic_num_eval=2, synthetic_image_size=[16])
    before = repr(args)
    dataset = load_evaluation_data(args, {str(k): v for k, v in NAMES.items()})
    assert repr(args) == before  # no train_split set to the evaluation split, no id2label_file filled in
    assert dataset.id2label == NAMES and len(dataset) == 2 and dataset.split == "eval"


def test_evaluation_split_and_its_errors(tmp_path):
    assert evaluation_split(DataArguments(synthetic=True, eval_split="test")) == "test"
    assert evaluation_split(DataArguments(synthetic=True, eval_split="none", eval_split_fraction=0.2)) == "validation"
    with pytest.raises(ValueError, match=r"no evaluation data \(--eval_split none\); pass --eval_split <split>"):
        evaluation_split(DataArguments(synthetic=True, eval_split="none"))
    three = tmp_path / "three.json"
    three.write_text('{"0": "a", "1": "b", "2": "c"}')
    with pytest.raises(ValueError, match=r"names 3 classes but the model predicts 4"):
        load_evaluation_data(DataArguments(synthetic=True, id2label_file=str(three)), NAMES)
