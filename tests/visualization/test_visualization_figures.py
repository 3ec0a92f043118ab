"""Evaluation figures (msaf_hf.visualization.figures): written beside the JSON results by scripts/evaluate.py and by
training, embedded in the model card and pushed with it; skipped with one log line without matplotlib."""

from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from msaf_hf import DSNetForSemanticSegmentation, load_preset
from msaf_hf.hub import collect_upload_files, push_folder_to_hub, render_model_card
from msaf_hf.visualization.figures import (
    CONFUSION_MATRIX_FIGURE,
    PER_CLASS_IOU_FIGURE,
    TRAINING_CURVES_FIGURE,
    plot_confusion_matrix,
    write_result_figures,
)

pytest.importorskip("matplotlib")


pytestmark = pytest.mark.usefixtures("one_thread_and_fresh_accelerate_state")


RESULTS = {
    "mean_iou": 0.5,
    "per_class_iou": [0.9, None, 0.1],
    "class_names": ["road", "sky", "car"],
    "confusion_matrix": [[90, 0, 10], [0, 0, 0], [30, 0, 10]],
}
HISTORY = [
    {"step": 1, "loss": 2.0},
    {"step": 2, "loss": 1.5},
    {"step": 2, "mean_iou": 0.3},
    {"step": 3, "loss": 1.2},
    {"step": 4, "loss": 1.0},
    {"step": 4, "mean_iou": 0.5},
]


def _is_png(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_figures_are_written_beside_the_results(tmp_path):
    written = write_result_figures(tmp_path / "eval_results.json", RESULTS, log_history=HISTORY)
    assert sorted(p.name for p in written) == sorted(
        [CONFUSION_MATRIX_FIGURE, PER_CLASS_IOU_FIGURE, TRAINING_CURVES_FIGURE]
    )
    for path in written:
        width, height = _is_png(path)
        assert 200 < width < 2500 and 150 < height < 2500
    # other result names: prefixed, so several evaluations can share a folder
    written = write_result_figures(tmp_path / "val_flip.json", RESULTS)
    assert sorted(p.name for p in written) == ["val_flip_confusion_matrix.png", "val_flip_per_class_iou.png"]


def test_confusion_matrix_is_row_normalised(tmp_path, monkeypatch):
    import matplotlib.axes

    shown = {}
    original = matplotlib.axes.Axes.imshow

    def spy(self, data, *args, **kwargs):
        shown["data"] = np.asarray(data)
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", spy)
    plot_confusion_matrix(np.array(RESULTS["confusion_matrix"]), RESULTS["class_names"], tmp_path / "cm.png")
    data = shown["data"]
    np.testing.assert_allclose(data[0], [0.9, 0.0, 0.1])
    np.testing.assert_allclose(data[2], [0.75, 0.0, 0.25])
    assert np.isnan(data[1]).all()  # a class absent from the labels has no row to normalise


def test_without_matplotlib_figures_are_skipped_with_one_log_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with caplog.at_level(logging.INFO, logger="msaf_hf.visualization.figures"):
        assert write_result_figures(tmp_path / "eval_results.json", RESULTS, log_history=HISTORY) == []
    assert list(tmp_path.iterdir()) == []
    lines = [r for r in caplog.records if r.name == "msaf_hf.visualization.figures"]
    assert len(lines) == 1 and "matplotlib is not installed" in lines[0].getMessage()


def test_evaluate_command_writes_figures_beside_the_json(tmp_path):
    from msaf_hf.evaluation import main

    torch.manual_seed(0)
    names = {0: "background", 1: "disc", 2: "square", 3: "triangle"}
    DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=4, id2label=names)).save_pretrained(
        tmp_path / "model"
    )
    output_file = tmp_path / "results" / "eval_results.json"
    main(
        [
            "--model_name_or_path",
            str(tmp_path / "model"),
            "--synthetic",
            "--synthetic_num_eval",
            "2",
            "--synthetic_num_train",
            "1",
            "--synthetic_image_size",
            "32",
            "--output_file",
            str(output_file),
        ]
    )
    assert json.loads(output_file.read_text())["class_names"] == list(names.values())
    for name in (CONFUSION_MATRIX_FIGURE, PER_CLASS_IOU_FIGURE):
        _is_png(tmp_path / "results" / name)


@pytest.mark.slow
def test_training_writes_figures_that_the_card_embeds_and_the_push_uploads(tmp_path, local_hub):
    from msaf_hf.data import DataArguments
    from msaf_hf.training import DSNetTrainingArguments, ModelArguments, train

    output = train(
        ModelArguments(config_overrides="base_channels=4,ohem_min_kept=64"),
        DataArguments(synthetic=True, synthetic_num_train=8, synthetic_num_eval=2, synthetic_image_size=[32, 32]),
        DSNetTrainingArguments(
            output_dir=str(tmp_path / "run"),
            max_steps=4,
            per_device_train_batch_size=2,
            logging_steps=1,
            eval_steps="2",
            disable_tqdm=True,
        ),
    )
    figures = (CONFUSION_MATRIX_FIGURE, PER_CLASS_IOU_FIGURE, TRAINING_CURVES_FIGURE)
    for folder in (output.final_dir, output.best_dir):
        for name in figures:
            _is_png(folder / name)
    card = str(render_model_card(output.final_dir, repo_id="alice/dsnet-figures"))
    for name in figures:
        assert f"]({name})" in card
    assert "### Figures" in card
    assert set(figures) <= set(collect_upload_files(output.final_dir))

    token = local_hub.add_token("alice")
    push_folder_to_hub(output.final_dir, "alice/dsnet-figures", token=token, endpoint=local_hub.url)
    files = local_hub.repo_files("alice/dsnet-figures")
    for name in figures:
        assert files[name] == (output.final_dir / name).read_bytes()
        assert f"]({name})" in files["README.md"].decode()


def test_card_without_figures_has_no_figure_section(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "dsnet", "num_labels": 3}))
    assert "### Figures" not in str(render_model_card(tmp_path, repo_id="me/x"))
