"""scripts/predict.py (msaf_hf.visualization.predict): pictures of predictions for images, folders, globs, videos."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image

from msaf_hf import DSNetForSemanticSegmentation, DSNetImageProcessor, load_preset
from msaf_hf.commands.predict import main
from msaf_hf.visualization import label_colors, load_mask

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = load_preset("dsnet", base_channels=4, num_labels=5, ohem_min_kept=64, label2color={4: [1, 2, 3]})
    model = DSNetForSemanticSegmentation(config).eval()
    with torch.no_grad():  # a random tiny model predicts nearly one class; louder logits make the maps varied
        model.decode_head.classifier.weight.mul_(50.0)
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    DSNetImageProcessor().save_pretrained(folder)
    return folder


def _images(folder: Path, sizes) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for index, (height, width) in enumerate(sizes):
        path = folder / f"img{index}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _reference_argmax(model, processor, path: Path) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    with torch.no_grad():
        outputs = model(**processor(images=image, return_tensors="pt"))
    return processor.post_process_semantic_segmentation(outputs, target_sizes=[image.size[::-1]])[0].numpy()


def _write_video(path: Path, frames: int = 10, size=(40, 48)) -> Path:
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=Fraction(10))
    stream.height, stream.width = size
    stream.pix_fmt = "yuv420p"
    for index in range(frames):
        array = np.zeros((*size, 3), dtype=np.uint8)
        array[:, : 4 * (index + 1)] = (200, 40 * (index % 6), 90)
        for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def test_masks_are_the_models_argmax_and_overlays_have_the_image_size(model_dir, tmp_path, capsys):
    inputs = _images(tmp_path / "in", [(40, 56), (33, 47), (40, 56)])
    out = tmp_path / "out"
    assert (
        main(
            [
                str(model_dir),
                str(tmp_path / "in"),
                "--output_dir",
                str(out),
                "--batch_size",
                "1",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    palette = label_colors({i: f"LABEL_{i}" for i in range(5)}, {4: [1, 2, 3]}, 5)
    model = DSNetForSemanticSegmentation.from_pretrained(model_dir).eval()
    processor = DSNetImageProcessor.from_pretrained(model_dir)
    for path in inputs:
        expected = _reference_argmax(model, processor, path)
        assert len(np.unique(expected)) >= 2  # a constant map would match by luck
        mask_path = out / f"{path.stem}_mask.png"
        with Image.open(mask_path) as mask:
            assert mask.mode == "P"
            np.testing.assert_array_equal(np.asarray(mask), expected)  # pixel values are the class ids
            np.testing.assert_array_equal(np.asarray(mask.getpalette()[:15], dtype=np.uint8).reshape(5, 3), palette)
        np.testing.assert_array_equal(load_mask(mask_path), expected)
        with Image.open(out / f"{path.stem}_overlay.jpg") as overlay, Image.open(path) as image:
            assert overlay.size == image.size
    assert (out / "legend.png").is_file()
    assert "3 images and 0 video frames" in capsys.readouterr().out


def test_batches_fusion_maps_globs_and_output_names(model_dir, tmp_path):
    _images(tmp_path / "a", [(32, 40), (24, 32)])
    _images(tmp_path / "b", [(32, 40)])  # b/img0.png: same name as a/img0.png
    out = tmp_path / "out"
    assert (
        main(
            [
                str(model_dir),
                str(tmp_path / "a" / "*.png"),
                str(tmp_path / "b" / "img0.png"),
                "--output_dir",
                str(out),
                "--batch_size",
                "3",
                "--fusion-maps",
                "--alpha",
                "0.7",
                "--size",
                "16x24",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in out.iterdir())
    for stem in ("img0", "img1", "img0-2"):
        assert f"{stem}_mask.png" in names and f"{stem}_overlay.jpg" in names
        for index in (1, 2, 3):
            with Image.open(out / f"{stem}_fusion{index}.jpg") as heat, Image.open(out / f"{stem}_overlay.jpg") as ov:
                assert heat.size == ov.size
    assert {"legend.png", "fusion_scale.png"} <= set(names)
    with Image.open(out / "img1_mask.png") as mask:
        assert mask.size == (32, 24)  # predictions come back at the image size whatever --size the model saw


@pytest.mark.slow
def test_ten_frame_video_gives_ten_overlay_frames_and_a_timing_summary(model_dir, tmp_path, capsys):
    video = _write_video(tmp_path / "clip.mp4", frames=10)
    out = tmp_path / "out"
    assert (
        main(
            [
                str(model_dir),
                str(video),
                "--output_dir",
                str(out),
                "--batch_size",
                "4",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    with av.open(str(out / "clip_overlay.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 10
    assert frames[0].shape == (40, 48, 3)
    timing = json.loads((out / "clip_timing.json").read_text())
    assert timing["frames"] == 10 and len(timing["per_frame_model_ms"]) == 10
    assert timing["model_ms_per_frame"]["median"] > 0 and timing["source_fps"] == 10.0
    assert "10 video frames" in capsys.readouterr().out
    assert not list(out.glob(".*tmp*"))  # staging files renamed into place


def test_unreadable_files_are_skipped_and_counted(model_dir, tmp_path, capsys):
    _images(tmp_path / "in", [(24, 24), (24, 24)])
    (tmp_path / "in" / "broken.jpg").write_bytes(b"definitely not a JPEG")
    (tmp_path / "in" / "empty.png").write_bytes(b"")
    (tmp_path / "in" / "garbage.mp4").write_bytes(b"\x00" * 64)
    (tmp_path / "in" / "notes.txt").write_text("not a media file: ignored")
    out = tmp_path / "out"
    assert (
        main([str(model_dir), str(tmp_path / "in"), "--output_dir", str(out), "--device", "cpu", "--no-progress"]) == 0
    )
    printed = capsys.readouterr().out
    assert "2 images" in printed
    assert "skipped 3 unreadable file(s)" in printed
    for name in ("broken.jpg", "empty.png", "garbage.mp4"):
        assert name in printed
    assert (out / "img0_mask.png").is_file() and not (out / "broken_mask.png").exists()
    # nothing readable at all: exit status 1
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"nope")
    assert (
        main([str(model_dir), str(tmp_path / "bad"), "--output_dir", str(out), "--device", "cpu", "--no-progress"]) == 1
    )


def test_undecodable_video_codec_is_a_clear_error_before_any_work(model_dir, tmp_path, capsys):
    clip = _write_video(tmp_path / "clip.mkv", frames=3)
    data = clip.read_bytes()
    assert data.count(b"V_MPEG4/ISO/ASP") == 1
    bad = tmp_path / "unknown_codec.mkv"
    bad.write_bytes(data.replace(b"V_MPEG4/ISO/ASP", b"V_ZZZZZ/ISO/ASP"))  # a codec no FFmpeg build decodes
    image = _images(tmp_path / "in", [(24, 24)])[0]
    out = tmp_path / "out"
    assert (
        main([str(model_dir), str(image), str(bad), "--output_dir", str(out), "--device", "cpu", "--no-progress"]) == 2
    )
    error = capsys.readouterr().err
    assert "unknown_codec.mkv" in error and "cannot be decoded" in error and "ffmpeg -i" in error
    assert not out.exists()  # checked before any work


def test_output_folder_that_would_overwrite_inputs_is_refused(model_dir, tmp_path, capsys):
    inputs = _images(tmp_path / "in", [(24, 24)])
    for output_dir in (tmp_path / "in", tmp_path / "in" / "preds"):
        assert main([str(model_dir), str(tmp_path / "in"), "--output_dir", str(output_dir), "--device", "cpu"]) == 2
        assert "inside the input folder" in capsys.readouterr().err
    # an input file that an output would replace
    victim = tmp_path / "in" / "img0_overlay.jpg"
    Image.new("RGB", (8, 8)).save(victim)
    before = victim.read_bytes()
    assert (
        main([str(model_dir), str(inputs[0]), str(victim), "--output_dir", str(tmp_path / "in"), "--device", "cpu"])
        == 2
    )
    assert "would overwrite the input" in capsys.readouterr().err
    assert victim.read_bytes() == before
    # a missing input is named
    assert main([str(model_dir), str(tmp_path / "missing.png"), "--output_dir", str(tmp_path / "o")]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_rerun_into_the_same_output_folder_replaces_the_results(model_dir, tmp_path):
    _images(tmp_path / "in", [(24, 32)])
    out = tmp_path / "out"
    for alpha in ("0.2", "0.9"):
        assert (
            main(
                [
                    str(model_dir),
                    str(tmp_path / "in"),
                    "--output_dir",
                    str(out),
                    "--alpha",
                    alpha,
                    "--device",
                    "cpu",
                    "--no-progress",
                ]
            )
            == 0
        )
    assert sorted(p.name for p in out.iterdir()) == ["img0_mask.png", "img0_overlay.jpg", "legend.png"]


@pytest.mark.slow
def test_script_runs_in_a_fresh_process(model_dir, tmp_path):
    _images(tmp_path / "in", [(24, 32)])
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "predict.py"),
            str(model_dir),
            str(tmp_path / "in" / "img0.png"),
            "--output_dir",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "img0_mask.png").is_file()
    assert "fps" in result.stdout


def test_size_option_parsing():
    from msaf_hf.visualization.inference import _target_size, parse_image_size

    assert parse_image_size("512x1024") == (512, 1024) and parse_image_size("360") == 360
    assert parse_image_size(None) is None
    assert _target_size((480, 360), 360) == (360, 480)  # PIL (width, height) in, (height, width) out
    assert _target_size((480, 360), (100, 200)) == (100, 200)
    height, width = _target_size((1000, 333), 100)
    assert height % 8 == 0 and width % 8 == 0 and abs(height - 100) <= 4 and abs(width - 100 * 1000 / 333) <= 4
    for bad in ("abc", "0x5", "1x2x3", "-4"):
        with pytest.raises(ValueError, match="size"):
            parse_image_size(bad)
