"""Tests for msaf_hf.evaluation.metrics: confusion-matrix segmentation metrics."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from msaf_hf.evaluation import metrics as metrics_module
from msaf_hf.evaluation.metrics import SegmentationConfusionMatrix, metrics_from_confusion_matrix


def _random_batch(seed: int, num: int = 3, height: int = 9, width: int = 11, num_classes: int = 5, ignore: float = 0.2):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (num, height, width), generator=generator)
    labels[torch.rand(num, height, width, generator=generator) < ignore] = 255
    predictions = torch.randint(0, num_classes, (num, height, width), generator=generator)
    return predictions, labels


# ---------------------------------------------------------------------- exact values


def test_hand_computed_example():
    labels = torch.tensor([[[0, 0, 1], [1, 2, 255]]])
    predictions = torch.tensor([[[0, 1, 1], [2, 2, 0]]])
    metric = SegmentationConfusionMatrix(num_classes=3)
    metric.update(predictions, labels)
    assert metric.matrix.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    result = metric.compute()
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert result["per_class_iou"] == pytest.approx([1 / 2, 1 / 3, 1 / 2])
    assert result["mean_iou"] == pytest.approx(4 / 9)
    assert result["pixel_accuracy"] == pytest.approx(3 / 5)
    assert result["per_class_accuracy"] == pytest.approx([1 / 2, 1 / 2, 1.0])
    assert result["mean_class_accuracy"] == pytest.approx(2 / 3)
    assert int(metric.num_ignored) == 1


def test_absent_classes_are_nan_and_left_out_of_means():
    # Class 3 never appears; class 2 is predicted but never labelled.
    labels = torch.tensor([[0, 0, 1, 1]])
    predictions = torch.tensor([[0, 2, 1, 1]])
    metric = SegmentationConfusionMatrix(num_classes=4)
    metric.update(predictions, labels)
    result = metric.compute()
    iou = result["per_class_iou"]
    assert iou[0] == pytest.approx(1 / 2) and iou[1] == pytest.approx(1.0) and iou[2] == 0.0
    assert math.isnan(iou[3])
    assert result["mean_iou"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    accuracy = result["per_class_accuracy"]
    assert accuracy[:2] == pytest.approx([1 / 2, 1.0])
    assert math.isnan(accuracy[2]) and math.isnan(accuracy[3])
    assert result["mean_class_accuracy"] == pytest.approx(3 / 4)


def test_empty_metric_gives_nan():
    result = SegmentationConfusionMatrix(num_classes=3).compute()
    assert math.isnan(result["mean_iou"]) and math.isnan(result["pixel_accuracy"])
    assert math.isnan(result["mean_class_accuracy"])
    assert result["confusion_matrix"] == [[0] * 3] * 3


def test_against_sklearn_with_ignored_pixels():
    sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is needed as the reference")
    num_classes = 6
    metric = SegmentationConfusionMatrix(num_classes=num_classes)
    all_predictions, all_labels = [], []
    for seed, num in ((0, 1), (1, 4), (2, 2)):  # several updates of different batch sizes
        predictions, labels = _random_batch(seed, num=num, num_classes=num_classes, ignore=0.25)
        metric.update(predictions, labels)
        all_predictions.append(predictions.flatten())
        all_labels.append(labels.flatten())
    predictions, labels = torch.cat(all_predictions), torch.cat(all_labels)
    valid = labels != 255
    y_true, y_pred = labels[valid].numpy(), predictions[valid].numpy()
    classes = list(range(num_classes))

    result = metric.compute()
    expected_matrix = sklearn_metrics.confusion_matrix(y_true, y_pred, labels=classes)
    np.testing.assert_array_equal(np.array(result["confusion_matrix"]), expected_matrix)
    expected_iou = sklearn_metrics.jaccard_score(y_true, y_pred, labels=classes, average=None)
    np.testing.assert_allclose(result["per_class_iou"], expected_iou, rtol=1e-12)
    assert result["mean_iou"] == pytest.approx(
        sklearn_metrics.jaccard_score(y_true, y_pred, labels=classes, average="macro"), rel=1e-12
    )
    assert result["pixel_accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred), rel=1e-12)
    expected_recall = sklearn_metrics.recall_score(y_true, y_pred, labels=classes, average=None)
    np.testing.assert_allclose(result["per_class_accuracy"], expected_recall, rtol=1e-12)
    assert result["mean_class_accuracy"] == pytest.approx(
        sklearn_metrics.balanced_accuracy_score(y_true, y_pred), rel=1e-12
    )


# ---------------------------------------------------------------------- inputs


def test_logits_are_argmaxed():
    predictions, labels = _random_batch(3, num_classes=4)
    logits = torch.randn(labels.shape[0], 4, *labels.shape[1:])
    from_logits = SegmentationConfusionMatrix(num_classes=4)
    from_logits.update(logits, labels)
    from_ids = SegmentationConfusionMatrix(num_classes=4)
    from_ids.update(logits.argmax(dim=1), labels)
    assert torch.equal(from_logits.matrix, from_ids.matrix)
    assert from_logits.matrix.sum() == (labels != 255).sum()


def test_logits_with_wrong_shape_are_rejected():
    _, labels = _random_batch(0, num_classes=4)
    metric = SegmentationConfusionMatrix(num_classes=4)
    with pytest.raises(ValueError, match=r"\(N, num_classes, \.\.\.\)"):
        metric.update(torch.randn(labels.shape[0], 5, *labels.shape[1:]), labels)  # 5 scores for 4 classes
    with pytest.raises(ValueError, match="Upsample logits"):
        metric.update(torch.randn(labels.shape[0], 4, 3, 3), labels)  # low-resolution logits
    with pytest.raises(ValueError, match="match neither"):
        metric.update(torch.zeros(2, 2, dtype=torch.long), labels)


def test_float_class_maps_and_float_labels_are_rejected():
    predictions, labels = _random_batch(0)
    metric = SegmentationConfusionMatrix(num_classes=5)
    with pytest.raises(ValueError, match="integer class ids"):
        metric.update(predictions.float(), labels)
    with pytest.raises(ValueError, match="labels must hold integer"):
        metric.update(predictions, labels.float())


def test_dtypes_and_numpy_inputs_agree():
    predictions, labels = _random_batch(4)
    reference = SegmentationConfusionMatrix(num_classes=5)
    reference.update(predictions, labels)
    for p, l in (  # noqa: E741
        (predictions.to(torch.uint8), labels.to(torch.uint8)),
        (predictions.to(torch.int32), labels.to(torch.int16)),
        (predictions.numpy(), labels.numpy()),
    ):
        metric = SegmentationConfusionMatrix(num_classes=5)
        metric.update(p, l)
        assert torch.equal(metric.matrix, reference.matrix)


def test_chunking_does_not_lose_or_double_pixels(monkeypatch):
    predictions, labels = _random_batch(5, num=2, height=13, width=17)
    whole = SegmentationConfusionMatrix(num_classes=5)
    whole.update(predictions, labels)
    monkeypatch.setattr(metrics_module, "_CPU_CHUNK", 37)  # does not divide the 442 pixels
    monkeypatch.setattr(metrics_module, "_DEVICE_CHUNK", 37)
    chunked = SegmentationConfusionMatrix(num_classes=5)
    chunked.update(predictions, labels)
    assert torch.equal(chunked.matrix, whole.matrix)
    assert chunked.matrix.sum() + chunked.num_ignored == labels.numel()
    deferred = chunked._count_deferred(predictions.flatten(), labels.flatten())  # the accelerator path
    assert torch.equal(deferred[:25].view(5, 5), whole.matrix)


# ---------------------------------------------------------------------- ignore index and bad values


def test_ignored_pixels_do_not_depend_on_predictions():
    predictions, labels = _random_batch(6)
    ignored = labels == 255
    first = SegmentationConfusionMatrix(num_classes=5)
    first.update(predictions, labels)
    second = SegmentationConfusionMatrix(num_classes=5)
    second.update(torch.where(ignored, (predictions + 1) % 5, predictions), labels)
    assert torch.equal(first.matrix, second.matrix)
    assert first.matrix.sum() == (~ignored).sum()


def test_custom_and_disabled_ignore_index():
    labels = torch.tensor([[0, 1, -1, 2]])
    predictions = torch.tensor([[0, 1, 2, 2]])
    metric = SegmentationConfusionMatrix(num_classes=3, ignore_index=-1)
    metric.update(predictions, labels)
    assert metric.matrix.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    every_pixel = SegmentationConfusionMatrix(num_classes=3, ignore_index=None)
    every_pixel.update(predictions, labels.clamp(min=0))
    assert every_pixel.matrix.sum() == 4
    with pytest.raises(ValueError, match=r"\[255\]"):  # with nothing ignored, 255 is just a bad label
        every_pixel.update(torch.tensor([0]), torch.tensor([255]))


def test_ignore_index_cannot_wrap_around_in_uint8_labels():
    # -1 must not match 255 in a uint8 tensor: 255 is a bad label here, not an ignored one.
    metric = SegmentationConfusionMatrix(num_classes=3, ignore_index=-1)
    with pytest.raises(ValueError, match=r"\[255\]"):
        metric.update(torch.tensor([0, 1], dtype=torch.uint8), torch.tensor([0, 255], dtype=torch.uint8))


def test_bad_labels_raise_and_leave_state_untouched():
    predictions, labels = _random_batch(7)
    metric = SegmentationConfusionMatrix(num_classes=5)
    metric.update(predictions, labels)
    before = metric.matrix.clone()
    bad = labels.clone()
    bad[0, 0, 0] = 11  # CamVid's void label, not mapped to 255
    bad[1, 0, 0] = -2
    with pytest.raises(ValueError, match=r"2 pixel\(s\) have labels outside \[0, 5\).*\[-2, 11\]"):
        metric.update(predictions, bad)
    assert torch.equal(metric.matrix, before)


@pytest.mark.parametrize("ignore_index", [255, None])
def test_label_equal_to_num_classes_with_prediction_zero_is_caught(ignore_index):
    # label * C + prediction = C * C is where the CPU path parks ignored pixels: it must still be caught.
    labels = torch.tensor([[0, 1, 2, 3]])
    predictions = torch.tensor([[0, 1, 2, 0]])
    with pytest.raises(ValueError, match=r"1 pixel\(s\) have labels outside \[0, 3\).*\[3\]"):
        SegmentationConfusionMatrix(num_classes=3, ignore_index=ignore_index).update(predictions, labels)


def test_bad_predictions_raise():
    predictions, labels = _random_batch(8)
    predictions[0, 0, 0] = 9
    labels[0, 0, 0] = 1
    with pytest.raises(ValueError, match=r"predicted class ids outside \[0, 5\): \[9\]"):
        SegmentationConfusionMatrix(num_classes=5).update(predictions, labels)


def test_deferred_invalid_count_used_on_accelerators_is_reported_by_compute():
    # On accelerators update() does not read anything back; it counts bad pixels in a device-side bin and
    # compute() raises. Exercise that path on CPU through the same counting routine.
    metric = SegmentationConfusionMatrix(num_classes=3)
    labels = torch.tensor([0, 1, 7, 255, 2])
    predictions = torch.tensor([0, 2, 1, 1, 5])
    counts = metric._count_deferred(predictions, labels)
    assert counts[:9].view(3, 3).tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    assert int(counts[metric._ignored_bin]) == 1 and int(counts[metric._invalid_bin]) == 2
    metric._counts = counts
    with pytest.raises(ValueError, match=r"2 pixel\(s\) had a label outside \[0, 3\)"):
        metric.compute()


def test_constructor_validation():
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationConfusionMatrix(num_classes=0)
    with pytest.raises(ValueError, match="is a valid class id"):
        SegmentationConfusionMatrix(num_classes=5, ignore_index=3)
    with pytest.raises(ValueError, match="ignore_index must be an int"):
        SegmentationConfusionMatrix(num_classes=5, ignore_index=2.5)


def test_metrics_from_confusion_matrix_validation_and_numpy():
    with pytest.raises(ValueError, match="square"):
        metrics_from_confusion_matrix(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        metrics_from_confusion_matrix(np.array([[1, -1], [0, 1]]))
    result = metrics_from_confusion_matrix(np.array([[3, 1], [0, 4]]))
    assert result["per_class_iou"] == pytest.approx([3 / 4, 4 / 5])
    assert result["pixel_accuracy"] == pytest.approx(7 / 8)
    json.dumps(result)  # plain Python types only


# ---------------------------------------------------------------------- reset / reduce life cycle


def test_reset_and_single_process_all_reduce():
    predictions, labels = _random_batch(9)
    metric = SegmentationConfusionMatrix(num_classes=5)
    metric.update(predictions, labels)
    before = metric.matrix.clone()
    assert metric.all_reduce() is metric  # not initialised: a no-op on the counts
    assert torch.equal(metric.matrix, before)
    with pytest.raises(RuntimeError, match="already all-reduced"):
        metric.update(predictions, labels)
    with pytest.raises(RuntimeError, match="already reduced"):
        metric.all_reduce()
    metric.reset()
    assert metric.matrix.sum() == 0
    metric.update(predictions, labels)
    assert torch.equal(metric.matrix, before)


def test_explicit_device_keeps_matrix_there():
    metric = SegmentationConfusionMatrix(num_classes=5, device="cpu")
    assert metric.matrix.device.type == "cpu" and metric.matrix.sum() == 0
    metric.update(*_random_batch(10))
    assert metric.matrix.device.type == "cpu"


# ---------------------------------------------------------------------- real two-process gloo reduction

# Uneven shards: rank 0 evaluates 3 samples, rank 1 evaluates 1; in a second round rank 1 sees nothing.
_SHARDS = {0: [0, 1, 2], 1: [3]}
_SECOND_ROUND = {0: [0, 1, 2, 3], 1: []}


def _all_samples():
    return _random_batch(11, num=4, height=7, width=9, num_classes=4)


def _gloo_worker(rank: int, world_size: int, store_path: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=world_size)
    try:
        predictions, labels = _all_samples()
        metric = SegmentationConfusionMatrix(num_classes=4)
        for index in _SHARDS[rank]:  # one sample per update, like a whole-image evaluation loop
            metric.update(predictions[index : index + 1], labels[index : index + 1])
        local = metric.matrix.tolist()
        metric.all_reduce()
        first = metric.compute()["confusion_matrix"]
        try:
            metric.all_reduce()
            second_reduce_refused = False
        except RuntimeError:
            second_reduce_refused = True

        metric.reset()
        for index in _SECOND_ROUND[rank]:
            metric.update(predictions[index : index + 1], labels[index : index + 1])
        metric.all_reduce()
        empty_rank_round = metric.compute()["confusion_matrix"]
        result = {
            "local": local,
            "reduced": first,
            "second_reduce_refused": second_reduce_refused,
            "empty_rank_round": empty_rank_round,
        }
        with open(f"{out_dir}/rank{rank}.json", "w") as handle:
            json.dump(result, handle)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_all_reduce_over_two_gloo_processes_matches_single_process(tmp_path):
    # The two workers are started from a fresh interpreter, not from this test process: by now it may hold
    # OpenVINO / ONNX Runtime / OpenMP thread pools (other test modules ran engines), and starting processes from it
    # crashed the whole pytest process with a segfault in CI (with fork and with spawn alike).
    launcher = (
        "import sys; sys.path.insert(0, sys.argv[1]); import torch.multiprocessing as mp; "
        "from test_metrics import _gloo_worker; "
        "mp.start_processes(_gloo_worker, args=(2, sys.argv[2], sys.argv[3]), nprocs=2, join=True, "
        "start_method='spawn')"
    )
    result = subprocess.run(
        [sys.executable, "-c", launcher, str(Path(__file__).parent), str(tmp_path / "store"), str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    predictions, labels = _all_samples()
    single = SegmentationConfusionMatrix(num_classes=4)
    single.update(predictions, labels)
    expected = single.matrix.tolist()

    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for result in results:
        assert result["reduced"] == expected
        assert result["empty_rank_round"] == expected
        assert result["second_reduce_refused"] is True
    # The shards really were partial (the test would be vacuous otherwise) and add up exactly.
    assert results[0]["local"] != expected and results[1]["local"] != expected
    assert (np.array(results[0]["local"]) + np.array(results[1]["local"])).tolist() == expected


# ---------------------------------------------------------------------- CUDA (runs where a GPU is present)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_update_is_sync_free_and_matches_cpu():
    predictions, labels = _random_batch(12, num=4, height=33, width=47, num_classes=5)
    cpu = SegmentationConfusionMatrix(num_classes=5)
    cpu.update(predictions, labels)
    cuda = SegmentationConfusionMatrix(num_classes=5)
    predictions, labels = predictions.cuda(), labels.cuda()
    logits = torch.nn.functional.one_hot(predictions, 5).permute(0, 3, 1, 2).float()
    cuda.update(predictions, labels)  # warm-up: allocator and kernels
    cuda.reset()
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")  # any host synchronisation inside update() raises
    try:
        cuda.update(predictions, labels)
        cuda.update(logits, labels)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert cuda.matrix.device.type == "cuda"
    assert torch.equal(cuda.matrix.cpu(), 2 * cpu.matrix)
    bad = labels.clone()
    bad[0, 0, 0] = 9
    cuda.update(predictions, bad)  # accepted without a sync...
    with pytest.raises(ValueError, match=r"1 pixel\(s\) had a label outside"):
        cuda.compute()  # ...and reported here


# ---------------------------------------------------------------------- benchmark script


def test_benchmark_script_is_importable_and_agrees_on_tiny_data():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "benchmark_metrics.py"
    spec = importlib.util.spec_from_file_location("benchmark_metrics_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # must not run the benchmark on import

    report = module.run_metrics_benchmark(
        num_samples=3, height=12, width=16, num_classes=4, repeats=1, warmup=0, include_slow_baselines=False
    )
    assert report["all_agree"] is True
    assert report["results"]["msaf_hf"]["speedup_of_msaf"] == 1.0
    assert len(report["metrics"]["per_class_iou"]) == 4
    json.dumps(report)
    assert "msaf_hf" in module.format_table(report)


def test_msaf_hf_benchmark_metrics_runs_the_scripts_benchmark(tmp_path, capsys):
    from msaf_hf.commands import main

    output = tmp_path / "metrics.json"
    status = main(["benchmark", "metrics", "--num_samples", "2", "--height", "12", "--width", "16", "--num_classes",
                   "3", "--repeats", "1", "--warmup", "0", "--skip_slow_baselines", "--json", str(output)])
    assert status == 0
    assert "all agree: True" in capsys.readouterr().out
    results = json.loads(output.read_text())["results"]
    assert results["all_agree"] is True and len(results["metrics"]["per_class_iou"]) == 3
