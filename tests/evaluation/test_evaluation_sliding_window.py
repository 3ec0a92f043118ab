"""Sliding-window evaluation: `evaluate(..., sliding_window=...)` scores the window-averaged logits, and
`scripts/evaluate.py --sliding_window H W [--stride H W] [--window_batch_size N]` reaches it (native size, the
windows the model sees, the results file), with clear errors for bad flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from msaf_hf import DSNetForSemanticSegmentation, load_preset
from msaf_hf.evaluation import evaluate, main
from msaf_hf.evaluation.cli import window_flags

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("one_thread_and_fresh_accelerate_state")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=4)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
        model.decode_head.classifier.weight.mul_(20.0)  # varied predictions from a random model
    return model


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, sizes, num_labels=4, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.items = [
            {"pixel_values": torch.randn(3, h, w, generator=generator),
             "labels": torch.randint(0, num_labels, (h, w), generator=generator)}
            for h, w in sizes
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def _matrix(predictions, dataset, num_labels=4):
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    for prediction, item in zip(predictions, dataset, strict=True):
        np.add.at(matrix, (item["labels"].numpy().ravel(), prediction.numpy().ravel()), 1)
    return matrix


def test_evaluate_scores_the_window_averaged_logits(model):
    dataset = ListDataset([(40, 72), (56, 56)])
    result = evaluate(model, dataset, sliding_window=(32, 32), stride=(16, 24), window_batch_size=1,
                      show_progress=False)
    with torch.no_grad():
        windowed = [model.sliding_window_logits(item["pixel_values"][None], (32, 32), (16, 24),
                                                window_batch_size=1)[0].argmax(0) for item in dataset]
        whole = [F.interpolate(model(pixel_values=item["pixel_values"][None]).logits, size=item["labels"].shape,
                               mode="bilinear", align_corners=False)[0].argmax(0) for item in dataset]
    assert result.confusion_matrix.numpy().tolist() == _matrix(windowed, dataset).tolist()
    assert _matrix(windowed, dataset).tolist() != _matrix(whole, dataset).tolist()  # windows changed predictions


def test_evaluate_command_runs_sliding_windows_at_native_size(tmp_path, monkeypatch):
    from msaf_hf.data import eval_image_processor

    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=4))
    model.save_pretrained(tmp_path / "model")
    eval_image_processor([16, 24]).save_pretrained(tmp_path / "model")  # the checkpoint resizes to 16x24
    seen = []
    forward = DSNetForSemanticSegmentation.forward
    monkeypatch.setattr(DSNetForSemanticSegmentation, "forward",
                        lambda self, pixel_values, **kw: seen.append(tuple(pixel_values.shape)) or forward(
                            self, pixel_values, **kw))
    args = ["--config", str(REPO_ROOT / "configuration" / "quickstart.yaml"), "--model_name_or_path",
            str(tmp_path / "model"), "--synthetic_num_eval", "2", "--synthetic_num_train", "1",
            "--synthetic_image_size", "40", "56", "--output_file", str(tmp_path / "eval.json")]
    payload = main([*args, "--sliding_window", "24", "32", "--stride", "16", "16", "--window_batch_size", "3"])
    # Native 40x56 images (not the checkpoint's 16x24) through 24x32 windows: rows 0, 16; columns 0, 16, 24.
    assert payload["eval_size"] == "native"
    assert payload["sliding_window"] == {"window": [24, 32], "stride": [16, 16], "window_batch_size": 3}
    assert {shape[-2:] for shape in seen} == {(24, 32)} and max(shape[0] for shape in seen) == 3
    assert sum(shape[0] for shape in seen) == 2 * 2 * 3
    seen.clear()
    payload = main([*args, "--sliding_window", "24", "24"])  # default stride 16x16; default 4 windows per pass
    assert payload["sliding_window"] == {"window": [24, 24], "stride": [16, 16], "window_batch_size": 4}
    assert sum(shape[0] for shape in seen) == 2 * 2 * 3 and max(shape[0] for shape in seen) == 4
    seen.clear()
    payload = main(args)  # without the flag: whole images at the checkpoint's size, no sliding_window entry
    assert "sliding_window" not in payload and {shape[-2:] for shape in seen} == {(16, 24)}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--stride", "8", "8"], r"--stride needs --sliding_window"),
        (["--sliding_window", "0", "16"], r"--sliding_window/--stride: .*window_size must be positive"),
        (["--sliding_window", "16", "16", "--stride", "24", "8"], r"--sliding_window/--stride: .*stride 24x8 is "
         r"larger than the window 16x16"),
        (["--sliding_window", "16"], r"--sliding_window takes two numbers, HEIGHT WIDTH, got \[16\]"),
        (["--sliding_window", "16", "16", "--stride", "8"], r"--stride takes two numbers"),
        (["--sliding_window", "16", "16", "--window_batch_size", "0"], r"--window_batch_size must be at least 1"),
        (["--sliding_window", "20", "16"], r"--sliding_window/--stride: .*multiples of 8.*e\.g\. 24x16"),
    ],
)
def test_bad_sliding_window_flags_are_clear_errors_before_any_data(tmp_path, flags, message, monkeypatch):
    torch.manual_seed(0)
    DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=4)).save_pretrained(tmp_path / "m")
    import msaf_hf.evaluation.cli as cli

    monkeypatch.setattr(cli, "load_evaluation_data", lambda *a, **k: pytest.fail("data loaded before the check"))
    with pytest.raises(ValueError, match=message):
        main(["--model_name_or_path", str(tmp_path / "m"), "--synthetic", "--output_file",
              str(tmp_path / "x.json"), *flags])


def test_window_flags_default_stride():
    assert window_flags([184, 240], None) == ((184, 240), (122, 160))
    assert window_flags(None, None) == (None, None)
