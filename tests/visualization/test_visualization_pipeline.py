"""The overlapped predict pipeline (msaf_hf.visualization.pipeline): same outputs as the sequential path, in order."""

from __future__ import annotations

import json
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from msaf_hf import DSNetForSemanticSegmentation, DSNetImageProcessor, load_preset
from msaf_hf.commands.predict import main
from msaf_hf.visualization.pipeline import OrderedWorker, prefetch


def test_prefetch_keeps_order_runs_ahead_in_a_thread_and_is_bounded():
    produced: list[int] = []
    threads: set[str] = set()

    def source():
        for index in range(20):
            threads.add(threading.current_thread().name)
            produced.append(index)
            yield index

    consumed = []
    for value in prefetch(source(), depth=2):
        time.sleep(0.002)
        # bounded: the producer is at most depth (queue) + 1 (the item it holds) ahead of the consumer
        assert len(produced) - len(consumed) <= 2 + 2
        consumed.append(value)
    assert consumed == list(range(20))
    assert threads == {"msaf_hf-decode"}
    assert list(prefetch(iter(range(5)), depth=0)) == list(range(5))


def test_prefetch_raises_the_producers_error_at_its_item():
    def source():
        yield 1
        yield 2
        raise KeyError("broken input")

    seen = []
    with pytest.raises(KeyError, match="broken input"):
        for value in prefetch(source(), depth=3):
            seen.append(value)
    assert seen == [1, 2]


def test_ordered_worker_runs_in_submission_order_and_reports_errors():
    done: list[int] = []
    with OrderedWorker(depth=2) as worker:
        for index in range(30):
            worker.submit(lambda i=index: (time.sleep(0.001 * (i % 3)), done.append(i)))
    assert done == list(range(30))

    worker = OrderedWorker(depth=2)
    worker.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        for _ in range(50):  # the error surfaces at a later submit or at close
            worker.submit(lambda: None)
            time.sleep(0.001)
        worker.close()


# ----------------------------------------------------------------------------------------------------------------
# predict.py: pipelined == sequential
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=5, ohem_min_kept=64)).eval()
    with torch.no_grad():  # louder logits: varied maps, so that a mix-up of images would show
        model.decode_head.classifier.weight.mul_(50.0)
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    DSNetImageProcessor().save_pretrained(folder)
    return folder


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and not p.name.endswith("_timing.json")}


def test_pipelined_folder_prediction_writes_exactly_the_sequential_outputs(model_dir, tmp_path, capsys):
    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index in range(7):  # 7 images, batch 2: a partial last batch; sizes differ, so a mix-up changes outputs
        height, width = 32 + 8 * (index % 3), 40 + 8 * (index % 2)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(inputs / f"im{index}.png")
    common = [str(model_dir), str(inputs), "--batch_size", "2", "--no-progress"]
    assert main([*common, "--output_dir", str(tmp_path / "seq"), "--pipeline_depth", "0"]) == 0
    assert main([*common, "--output_dir", str(tmp_path / "pipe"), "--pipeline_depth", "2"]) == 0
    sequential, pipelined = _outputs(tmp_path / "seq"), _outputs(tmp_path / "pipe")
    assert len(sequential) == 7 * 2 + 1  # mask + overlay per image, the legend
    assert pipelined == sequential
    assert "throughput:" in capsys.readouterr().out


@pytest.mark.slow
def test_pipelined_video_prediction_keeps_frame_order_and_reports_throughput(model_dir, tmp_path, capsys):
    av = pytest.importorskip("av")
    torch.set_num_threads(1)
    video = tmp_path / "in" / "clip.mp4"
    video.parent.mkdir()
    container = av.open(str(video), "w")
    stream = container.add_stream("mpeg4", rate=Fraction(10))
    stream.height, stream.width, stream.pix_fmt = 40, 48, "yuv420p"
    for index in range(9):  # a bar that grows frame by frame: out-of-order frames would change the overlay video
        array = np.zeros((40, 48, 3), dtype=np.uint8)
        array[:, : 5 * (index + 1)] = (200, 30 * (index % 7), 90)
        for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()

    def frames(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as reader:
            return [frame.to_ndarray(format="rgb24") for frame in reader.decode(video=0)]

    common = [str(model_dir), str(video), "--batch_size", "2", "--no-progress"]
    assert main([*common, "--output_dir", str(tmp_path / "seq"), "--pipeline_depth", "0"]) == 0
    assert main([*common, "--output_dir", str(tmp_path / "pipe"), "--pipeline_depth", "3"]) == 0
    sequential = frames(tmp_path / "seq" / "clip_overlay.mp4")
    pipelined = frames(tmp_path / "pipe" / "clip_overlay.mp4")
    assert len(sequential) == len(pipelined) == 9
    for ours, reference in zip(pipelined, sequential, strict=True):
        np.testing.assert_array_equal(ours, reference)
    timing = json.loads((tmp_path / "pipe" / "clip_timing.json").read_text())
    assert timing["pipeline_depth"] == 3 and timing["frames"] == 9
    assert timing["single_image_latency_ms"] > 0 and timing["frames_per_s"] > 0
    assert timing["frames_per_s_over_inverse_latency"] == pytest.approx(
        timing["frames_per_s"] * timing["single_image_latency_ms"] / 1000)
    assert "single-image latency" in capsys.readouterr().out


def test_bfloat16_prediction_runs_where_supported_and_is_refused_elsewhere(model_dir, tmp_path, capsys, monkeypatch):
    from msaf_hf.cpu_features import CPUINFO_ENV, detect_cpu_features

    torch.set_num_threads(1)
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(image)
    if detect_cpu_features().supports_bf16:
        assert main([str(model_dir), str(image), "--output_dir", str(tmp_path / "bf16"), "--dtype", "bfloat16",
                     "--device", "cpu", "--no-progress"]) == 0
        mask = np.array(Image.open(tmp_path / "bf16" / "a_mask.png"))
        assert mask.shape == (32, 40) and mask.max() < 5
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Old Core i7\nflags\t\t: avx avx2\n")
    monkeypatch.setenv(CPUINFO_ENV, str(cpuinfo))
    assert main([str(model_dir), str(image), "--output_dir", str(tmp_path / "no"), "--dtype", "bfloat16",
                 "--device", "cpu", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "--dtype bfloat16" in error and "Old Core i7" in error and "avx512_bf16" in error
