"""One CamVid subset in every label format trains and evaluates to the same result, and the dataset check reports
the same class frequencies for all of them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from camvid_subset import FORMATS, as_argv, expected_pixels, read_subset, write_format

from msaf_hf.commands.check_data import main as check_data
from msaf_hf.data import DataArguments
from msaf_hf.training import DSNetTrainingArguments, ModelArguments, train

pytestmark = pytest.mark.usefixtures("one_thread_and_fresh_accelerate_state")


@pytest.fixture(scope="module")
def subset():
    return read_subset()


def _train(output_dir, flags):
    model = ModelArguments(config_overrides="base_channels=4,ohem_min_kept=64")
    data = DataArguments(crop_size=[48, 64], **flags)
    args = DSNetTrainingArguments(output_dir=str(output_dir), max_steps=3, per_device_train_batch_size=2, seed=0,
                             logging_steps=1, disable_tqdm=True, save_best_model=False)
    return train(model, data, args)


@pytest.mark.slow
def test_every_format_trains_and_evaluates_to_the_same_miou(tmp_path, subset):
    results = {}
    for kind in FORMATS:
        flags = write_format(tmp_path / kind, subset, kind)
        output = _train(tmp_path / f"run_{kind}", flags)
        results[kind] = (output.metrics, output.confusion_matrix, output.model.config.id2label)
    reference_metrics, reference_confusion, reference_names = results["index"]
    assert reference_confusion.sum() > 0  # the evaluation scored labelled pixels
    assert list(reference_names.values())[:2] == ["Sky", "Building"]
    for kind, (metrics, confusion, names) in results.items():
        assert metrics["mean_iou"] == reference_metrics["mean_iou"], kind
        assert list(metrics["per_class_iou"]) == list(reference_metrics["per_class_iou"]), kind
        assert np.array_equal(np.asarray(confusion), np.asarray(reference_confusion)), kind
        assert names == reference_names, kind


@pytest.mark.slow
def test_check_data_reports_the_same_class_frequencies_for_every_format(tmp_path, subset, capsys):
    want = {"train": expected_pixels(subset["train"]), "eval": expected_pixels(subset["validation"])}
    for kind in FORMATS:
        flags = write_format(tmp_path / kind, subset, kind)
        output_dir = tmp_path / f"check_{kind}"
        assert check_data(as_argv(flags) + ["--output_dir", str(output_dir), "--no_progress"]) == 0, kind
        report = json.loads((output_dir / "data_check.json").read_text())
        assert report["ok"] and report["num_labels"] == 11, kind
        for split, pixels in want.items():
            got = report["splits"][split]
            assert [c["pixels"] for c in got["classes"]] == pixels, (kind, split)
            assert got["examples"] == len(subset["train" if split == "train" else "validation"])
            assert got["image_sizes"] == {"72x96": got["examples"]}
        assert (output_dir / "preview.png").is_file()
    printed = capsys.readouterr().out
    assert "suggested class weights" in printed
