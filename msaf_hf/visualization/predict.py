"""What ``msaf-hf predict`` (:mod:`msaf_hf.commands.predict`) writes: images, folders, globs and videos segmented
and written as pictures.

For each image ``NAME``: ``NAME_mask.png`` (a palette PNG whose pixel values are the class ids: lossless and
reloadable with ``np.array(Image.open(path))``), ``NAME_overlay.jpg`` (the image blended with the class colours)
and, with ``--fusion_maps``, ``NAME_fusion1.jpg`` .. ``NAME_fusion3.jpg`` (MSAF's weight maps over the image).
For each video: ``NAME_overlay.mp4`` (and ``NAME_fusion{1,2,3}.mp4``) plus ``NAME_timing.json``, a per-frame
timing summary. Once per run: ``legend.png`` (and ``fusion_scale.png``).

:func:`predict_dataset` predicts a split of a dataset (``--dataset NAME_OR_FOLDER --split S``, read by the command
with ``msaf_hf.data.load_split``, purpose ``"prediction"``); each example is written under its name.

Inputs inside a folder keep their relative path under ``--output_dir``. Files that cannot be read are reported
and skipped, with a count at the end; a video whose codec cannot be decoded stops the run before any work with a
clear message; an output folder that would write into an input folder, or over an input file, is refused.
"""

from __future__ import annotations

import glob
import json
import logging
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from .inference import Segmenter
from .pipeline import OrderedWorker, prefetch, throughput_against_latency
from .rendering import (
    FUSION_RANGE,
    fusion_heatmap,
    overlay,
    save_image,
    save_palette_mask,
)

logger = logging.getLogger(__name__)

__all__ = [
    "INPUT_IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "InputItem",
    "PredictionSummary",
    "collect_inputs",
    "predict_dataset",
    "predict_images",
    "predict_video",
]

#: Picture files this command takes as input (wider than a dataset folder's `msaf_hf.data.images.IMAGE_EXTENSIONS`:
#: any picture PIL opens, GIF frames included).
INPUT_IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".ts"})
#: Suffixes of the files this command writes (so that its own outputs are never taken for inputs).
OUTPUT_SUFFIXES = (
    "_mask.png",
    "_overlay.jpg",
    "_overlay.mp4",
    "_timing.json",
    "_fusion1.jpg",
    "_fusion2.jpg",
    "_fusion3.jpg",
    "_fusion1.mp4",
    "_fusion2.mp4",
    "_fusion3.mp4",
)


@dataclass
class InputItem:
    path: Path
    name: str  # output name: relative path (without extension) under the output folder
    kind: str  # "image" or "video"


@dataclass
class PredictionSummary:
    images: int = 0
    frames: int = 0
    seconds: float = 0.0  # wall time of the whole run
    model_seconds: float = 0.0  # time inside `Segmenter.predict`
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


def _kind(path: Path) -> str:
    return "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "image"


def collect_inputs(inputs: Sequence[str]) -> tuple[list[InputItem], list[Path]]:
    """Expand files, folders (recursively, media files only, sorted) and globs into input items with unique output
    names. Returns the items and the input folders (for the overwrite check). A path that does not exist and
    matches nothing is a ``FileNotFoundError``."""
    items: list[InputItem] = []
    folders: list[Path] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            folders.append(path)
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not p.name.startswith(".")
                and p.suffix.lower() in INPUT_IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
                and not p.name.endswith(OUTPUT_SUFFIXES)
            )
            items += [InputItem(p, p.relative_to(path).with_suffix("").as_posix(), _kind(p)) for p in files]
        elif path.is_file():
            items.append(InputItem(path, path.stem, _kind(path)))
        elif glob.has_magic(text):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            if not matches:
                raise FileNotFoundError(f"{text!r} matches no file.")
            items += [InputItem(p, p.stem, _kind(p)) for p in matches]
        else:
            raise FileNotFoundError(f"{text!r}: no such file or folder.")
    used: dict[str, int] = {}
    for item in items:  # two inputs named alike (a/x.jpg, b/x.png) must not write the same outputs
        count = used.get(item.name.lower(), 0)
        used[item.name.lower()] = count + 1
        if count:
            new_name = f"{item.name}-{count + 1}"
            logger.warning(
                "%s: another input is also named %r; writing its results as %r.", item.path, item.name, new_name
            )
            item.name = new_name
    return items, folders


def _output_paths(item: InputItem, output_dir: Path, fusion_maps: bool) -> list[Path]:
    if item.kind == "video":
        suffixes = ["_overlay.mp4", "_timing.json"] + (
            ["_fusion1.mp4", "_fusion2.mp4", "_fusion3.mp4"] if fusion_maps else []
        )
    else:
        suffixes = ["_mask.png", "_overlay.jpg"] + (
            ["_fusion1.jpg", "_fusion2.jpg", "_fusion3.jpg"] if fusion_maps else []
        )
    return [output_dir / f"{item.name}{suffix}" for suffix in suffixes]


def check_output_dir(output_dir: Path, items: Sequence[InputItem], folders: Sequence[Path], fusion_maps: bool) -> None:
    """Refuse an output folder that is (inside) an input folder, or where an output would replace an input file."""
    out = output_dir.resolve()
    for folder in folders:
        folder = folder.resolve()
        if out == folder or folder in out.parents:
            raise ValueError(
                f"--output_dir {output_dir} is inside the input folder {folder}: the results would be written among "
                "the inputs (and read as inputs on the next run). Choose an output folder outside the inputs."
            )
    inputs = {item.path.resolve() for item in items}
    for item in items:
        for path in _output_paths(item, output_dir, fusion_maps):
            if path.resolve() in inputs:
                raise ValueError(
                    f"Writing {path} would overwrite the input {path.resolve()}; choose another --output_dir."
                )
    for fixed in ("legend.png", "fusion_scale.png"):
        if (output_dir / fixed).resolve() in inputs:
            raise ValueError(f"Writing {output_dir / fixed} would overwrite an input; choose another --output_dir.")


def _read_images(
    items: Sequence[InputItem], summary: PredictionSummary, progress: Any = None
) -> Iterator[tuple[InputItem, Image.Image]]:
    for item in items:
        try:
            with Image.open(item.path) as image:
                image.load()
                upright = ImageOps.exif_transpose(image)  # phone photos: as viewers show them
                rgb = upright.convert("RGB")
            yield item, rgb
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
            reason = f"{type(error).__name__}: {error}"
            logger.warning("Skipping %s: it cannot be read as an image (%s).", item.path, reason)
            summary.skipped.append((item.path, reason))
            if progress is not None:
                progress.update(1)


def _write_image_outputs(
    segmenter: Segmenter,
    item: InputItem,
    image: Image.Image,
    result: Any,
    output_dir: Path,
    alpha: float,
    summary: PredictionSummary,
    fusion_range: tuple[float, float],
) -> None:
    base = output_dir / item.name
    palette = segmenter.palette
    summary.written.append(save_palette_mask(result.label_map, palette, f"{base}_mask.png"))
    summary.written.append(save_image(overlay(image, result.label_map, palette, alpha), f"{base}_overlay.jpg"))
    for index, weights in enumerate(result.fusion_weights or (), start=1):
        heatmap = fusion_heatmap(image, weights, value_range=fusion_range)
        summary.written.append(save_image(heatmap, f"{base}_fusion{index}.jpg"))


def predict_images(
    segmenter: Segmenter,
    items: Sequence[InputItem],
    output_dir: Path,
    *,
    batch_size: int = 4,
    alpha: float = 0.5,
    fusion_maps: bool = False,
    progress: Any = None,
    summary: PredictionSummary | None = None,
    fusion_range: tuple[float, float] = FUSION_RANGE,
    pipeline_depth: int = 2,
) -> PredictionSummary:
    """Segment image inputs in batches and write their pictures (see the module docstring). Decoding, inference and
    writing overlap (`msaf_hf.visualization.pipeline`, at most `pipeline_depth` items ahead; 0: one after the
    other); the outputs are the same either way."""
    summary = summary or PredictionSummary()
    return _predict_batches(segmenter, _read_images(items, summary, progress), output_dir, batch_size, alpha,
                            fusion_maps, progress, summary, fusion_range, pipeline_depth)


def _predict_batches(
    segmenter: Segmenter,
    images: Iterator[tuple[InputItem, Image.Image]],
    output_dir: Path,
    batch_size: int,
    alpha: float,
    fusion_maps: bool,
    progress: Any,
    summary: PredictionSummary,
    fusion_range: tuple[float, float],
    pipeline_depth: int,
) -> PredictionSummary:
    batch: list[tuple[InputItem, Image.Image]] = []

    def write(batch: list[tuple[InputItem, Image.Image]], results: list[Any]) -> None:
        for (item, image), result in zip(batch, results, strict=False):
            _write_image_outputs(segmenter, item, image, result, output_dir, alpha, summary, fusion_range)
        summary.images += len(batch)
        if progress is not None:
            progress.update(len(batch))

    with OrderedWorker(pipeline_depth) as writer:

        def flush() -> None:
            start = time.perf_counter()
            results = segmenter.predict([image for _, image in batch], fusion_maps=fusion_maps)
            summary.model_seconds += time.perf_counter() - start
            writer.submit(write, list(batch), results)
            batch.clear()

        for item, image in prefetch(images, pipeline_depth):
            batch.append((item, image))
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    return summary


def predict_dataset(
    segmenter: Segmenter,
    dataset: Any,
    output_dir: Path,
    *,
    batch_size: int = 4,
    alpha: float = 0.5,
    fusion_maps: bool = False,
    progress: Any = None,
    summary: PredictionSummary | None = None,
    fusion_range: tuple[float, float] = FUSION_RANGE,
    pipeline_depth: int = 2,
) -> PredictionSummary:
    """Segment every example of a prediction dataset (``msaf-hf predict --dataset``) and write its pictures
    under its name (without the extension; repeated names get ``-2``, ``-3``, ...). Examples that cannot be read are
    reported and skipped: the data layer raises its ``BadExampleError``, a ``ValueError`` naming the example (this
    module knows no data layer)."""
    summary = summary or PredictionSummary()
    used: dict[str, int] = {}

    def readable() -> Iterator[tuple[InputItem, Image.Image]]:
        for index in range(len(dataset)):
            name = dataset.name(index)
            is_file_name = Path(name).suffix.lower() in INPUT_IMAGE_EXTENSIONS
            stem = Path(name).with_suffix("").as_posix() if is_file_name else name
            count = used.get(stem.lower(), 0)
            used[stem.lower()] = count + 1
            item = InputItem(Path(name), stem if not count else f"{stem}-{count + 1}", "image")
            try:
                yield item, dataset.load_image(index)
            except ValueError as error:
                logger.warning("Skipping %s", error)
                summary.skipped.append((item.path, str(error)))
                if progress is not None:
                    progress.update(1)

    return _predict_batches(segmenter, readable(), output_dir, batch_size, alpha, fusion_maps, progress, summary,
                            fusion_range, pipeline_depth)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def timing_summary(per_frame_seconds: Sequence[float], wall_seconds: float, **extra: Any) -> dict[str, Any]:
    """Frames, milliseconds per frame (mean, median, p90, p99, min, max), model-only and end-to-end fps."""
    ms = [1000.0 * s for s in per_frame_seconds]
    out: dict[str, Any] = {"frames": len(ms), **extra}
    if ms:
        out["model_ms_per_frame"] = {
            "mean": statistics.fmean(ms),
            "median": statistics.median(ms),
            "p90": _percentile(ms, 0.9),
            "p99": _percentile(ms, 0.99),
            "min": min(ms),
            "max": max(ms),
        }
        out["model_fps"] = 1000.0 / statistics.fmean(ms) if statistics.fmean(ms) > 0 else None
        out["end_to_end_fps"] = len(ms) / wall_seconds if wall_seconds > 0 else None
        out["per_frame_model_ms"] = [round(v, 3) for v in ms]
    out["wall_seconds"] = wall_seconds
    return out


def predict_video(
    segmenter: Segmenter,
    item: InputItem,
    output_dir: Path,
    *,
    batch_size: int = 4,
    alpha: float = 0.5,
    fusion_maps: bool = False,
    progress: Any = None,
    summary: PredictionSummary | None = None,
    fusion_range: tuple[float, float] = FUSION_RANGE,
    pipeline_depth: int = 2,
    single_image_latency_s: float | None = None,
) -> dict[str, Any]:
    """Segment a video frame by frame (streamed, in batches) into ``NAME_overlay.mp4`` (+ fusion videos) and write
    ``NAME_timing.json``; returns the timing summary. Decoding, inference and encoding overlap as in
    `predict_images`; `single_image_latency_s` (the model's, measured apart) is recorded beside the frames/s."""
    from .video import VideoReader, VideoWriter

    summary = summary or PredictionSummary()
    base = output_dir / item.name
    start = time.perf_counter()
    per_frame: list[float] = []
    with VideoReader(item.path) as reader:
        names = ["overlay"] + ([f"fusion{i}" for i in (1, 2, 3)] if fusion_maps else [])
        writers = {n: VideoWriter(f"{base}_{n}.mp4", reader.fps, reader.width, reader.height) for n in names}
        try:
            batch: list[Image.Image] = []

            def encode(frames: list[Image.Image], results: list[Any]) -> None:
                for frame, result in zip(frames, results, strict=False):
                    writers["overlay"].write(overlay(frame, result.label_map, segmenter.palette, alpha))
                    for index, weights in enumerate(result.fusion_weights or (), start=1):
                        writers[f"fusion{index}"].write(fusion_heatmap(frame, weights, value_range=fusion_range))
                if progress is not None:
                    progress.update(len(frames))

            with OrderedWorker(pipeline_depth) as encoder:

                def flush() -> None:
                    model_start = time.perf_counter()
                    results = segmenter.predict(batch, fusion_maps=fusion_maps)
                    summary.model_seconds += time.perf_counter() - model_start
                    per_frame.extend(result.seconds for result in results)
                    summary.frames += len(batch)
                    encoder.submit(encode, list(batch), results)
                    batch.clear()

                for frame in prefetch(reader, pipeline_depth):
                    batch.append(frame)
                    if len(batch) == batch_size:
                        flush()
                if batch:
                    flush()
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        summary.written += [writer.close() for writer in writers.values()]
        timing = timing_summary(
            per_frame,
            time.perf_counter() - start,
            video=str(item.path),
            codec=reader.codec_name,
            source_fps=float(reader.fps),
            width=reader.width,
            height=reader.height,
            batch_size=batch_size,
            device=str(segmenter.device),
            pipeline_depth=pipeline_depth,
            **throughput_against_latency(per_frame, time.perf_counter() - start, single_image_latency_s),
        )
    timing_path = Path(f"{base}_timing.json")
    timing_path.write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")
    summary.written.append(timing_path)
    return timing


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
