"""``scripts/predict.py``: segment images, folders, globs and videos and write the predictions as pictures.

For each image ``NAME``: ``NAME_mask.png`` (a palette PNG whose pixel values are the class ids: lossless and
reloadable with ``np.array(Image.open(path))``), ``NAME_overlay.jpg`` (the image blended with the class colours)
and, with ``--fusion-maps``, ``NAME_fusion1.jpg`` .. ``NAME_fusion3.jpg`` (MSAF's weight maps over the image).
For each video: ``NAME_overlay.mp4`` (and ``NAME_fusion{1,2,3}.mp4``) plus ``NAME_timing.json``, a per-frame
timing summary. Once per run: ``legend.png`` (and ``fusion_scale.png``).

Inputs inside a folder keep their relative path under ``--output_dir``. Files that cannot be read are reported
and skipped, with a count at the end; a video whose codec cannot be decoded stops the run before any work with a
clear message; an output folder that would write into an input folder, or over an input file, is refused.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from .inference import Segmenter, load_segmenter, resolve_device
from .pipeline import OrderedWorker, prefetch, single_image_latency, throughput_against_latency
from .rendering import (
    FUSION_RANGE,
    fusion_heatmap,
    fusion_scale_image,
    legend_image,
    overlay,
    save_image,
    save_palette_mask,
)

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "InputItem",
    "PredictionSummary",
    "collect_inputs",
    "main",
    "predict_images",
    "predict_video",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".gif"})
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
                and p.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
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

        for item, image in prefetch(_read_images(items, summary, progress), pipeline_depth):
            batch.append((item, image))
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    return summary


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
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="a save_pretrained folder or a Hub model id")
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image or video files, folders or globs ('imgs/*.jpg')"
    )
    parser.add_argument("--output_dir", "--output-dir", required=True, type=Path, help="where the pictures go")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=4, help="images (or frames) per forward pass")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the class colours in the overlay (0..1)")
    parser.add_argument(
        "--size",
        default=None,
        help="model input size: HxW (e.g. 512x1024) or N (shorter side, aspect kept); default: the "
        "image processor's (DSNet: the native image size)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default)")
    parser.add_argument(
        "--fusion-maps",
        "--fusion_maps",
        action="store_true",
        help="also write MSAF's three fusion-weight maps as heatmaps over each image",
    )
    parser.add_argument(
        "--fusion-range",
        "--fusion_range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="fusion weights mapped to the two ends of the heatmap colours (default 0.3 0.7)",
    )
    parser.add_argument("--revision", default=None, help="Hub revision of the model")
    parser.add_argument(
        "--trust_remote_code",
        "--trust-remote-code",
        action="store_true",
        help="load the model code shipped with the checkpoint (not needed with msaf_hf installed)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16: run the PyTorch model under torch.autocast in bfloat16 (on the CPU it needs "
                             "avx512_bf16 or AMX; an exported engine runs in its exported precision)")
    parser.add_argument("--pipeline_depth", type=int, default=2,
                        help="decode, inference and encode overlap, each stage up to N items ahead (0: one after the "
                             "other); the outputs are the same")
    return parser


def load_model_for_prediction(args: argparse.Namespace) -> Segmenter:
    """Where ``predict.py`` loads its model (swap in other model formats here)."""
    import torch

    autocast_dtype = None
    if args.dtype == "bfloat16":
        autocast_dtype = torch.bfloat16
        if resolve_device(args.device).type == "cpu":
            from ..cpu_features import check_bf16_supported

            check_bf16_supported("--dtype bfloat16 on the CPU", alternatives=("--dtype float32", "an int8 export"))
    return load_segmenter(
        args.model, device=args.device, size=args.size, revision=args.revision,
        trust_remote_code=args.trust_remote_code, autocast_dtype=autocast_dtype,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0: done, 1: nothing could be read, 2: bad arguments or input)."""
    from tqdm.auto import tqdm

    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(message)s", level=logging.INFO)
    if not 0.0 <= args.alpha <= 1.0:
        print(f"error: --alpha must be in [0, 1], got {args.alpha}", file=sys.stderr)
        return 2
    fusion_range = tuple(args.fusion_range) if args.fusion_range else FUSION_RANGE
    if not fusion_range[1] > fusion_range[0]:
        print(f"error: --fusion-range needs LOW < HIGH, got {args.fusion_range}", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print(f"error: --batch_size must be >= 1, got {args.batch_size}", file=sys.stderr)
        return 2
    try:
        items, folders = collect_inputs(args.inputs)
        check_output_dir(args.output_dir, items, folders, args.fusion_maps)
        unreadable: list[tuple[InputItem, str]] = []
        videos = [item for item in items if item.kind == "video"]
        if videos:  # fail before any work on a codec that cannot be decoded (VideoError)
            from .video import VideoReader

            for item in videos:
                try:
                    VideoReader(item.path).close()
                except OSError as error:  # not a media file at all: skipped like an unreadable image
                    logger.warning("Skipping %s: %s", item.path, error)
                    unreadable.append((item, str(error)))
            skipped_ids = {id(item) for item, _ in unreadable}
            items = [item for item in items if id(item) not in skipped_ids]
        if not items:
            raise FileNotFoundError("no image or video inputs found in " + ", ".join(args.inputs))
    except (FileNotFoundError, ValueError, ImportError) as error:  # VideoError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = PredictionSummary(skipped=[(item.path, reason) for item, reason in unreadable])
    if args.pipeline_depth < 0:
        print(f"error: --pipeline_depth must be >= 0, got {args.pipeline_depth}", file=sys.stderr)
        return 2
    try:
        segmenter = load_model_for_prediction(args)
    except ValueError as error:  # e.g. --dtype bfloat16 on a CPU without bfloat16
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.fusion_maps and not segmenter.supports_fusion_maps:
        print("error: --fusion-maps needs a DSNet model (the maps are its MSAF weights).", file=sys.stderr)
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    summary.written.append(
        save_image(legend_image(segmenter.id2label, segmenter.palette), args.output_dir / "legend.png")
    )
    if args.fusion_maps:
        summary.written.append(
            save_image(fusion_scale_image(value_range=fusion_range), args.output_dir / "fusion_scale.png")
        )

    images = [item for item in items if item.kind == "image"]
    videos = [item for item in items if item.kind == "video"]
    # The reference for the frames/s report (not worth 4 extra passes for a single picture).
    latency = single_image_latency(segmenter, videos + images) if len(images) > 1 or videos else None
    start = time.perf_counter()
    with tqdm(total=len(images), desc="images", unit="img", disable=args.no_progress or not images) as progress:
        predict_images(
            segmenter,
            images,
            args.output_dir,
            batch_size=args.batch_size,
            alpha=args.alpha,
            fusion_maps=args.fusion_maps,
            progress=progress,
            summary=summary,
            fusion_range=fusion_range,
            pipeline_depth=args.pipeline_depth,
        )
    for item in videos:
        from .video import VideoError

        try:
            with tqdm(desc=item.path.name, unit="frame", disable=args.no_progress) as progress:
                timing = predict_video(
                    segmenter,
                    item,
                    args.output_dir,
                    batch_size=args.batch_size,
                    alpha=args.alpha,
                    fusion_maps=args.fusion_maps,
                    progress=progress,
                    summary=summary,
                    fusion_range=fusion_range,
                    pipeline_depth=args.pipeline_depth,
                    single_image_latency_s=latency,
                )
            ms = timing.get("model_ms_per_frame", {})
            print(
                f"{item.path}: {timing['frames']} frames, model {ms.get('median', float('nan')):.1f} ms/frame "
                f"(median; p90 {ms.get('p90', float('nan')):.1f}), end to end {timing.get('end_to_end_fps') or 0:.1f} "
                f"fps -> {args.output_dir / item.name}_overlay.mp4"
            )
        except VideoError as error:
            logger.error("%s", error)
            summary.skipped.append((item.path, str(error)))
    summary.seconds = time.perf_counter() - start

    done = summary.images + summary.frames
    rate = done / summary.seconds if summary.seconds > 0 else float("nan")
    model_rate = done / summary.model_seconds if summary.model_seconds > 0 else float("nan")
    print(
        f"{summary.images} images and {summary.frames} video frames in {summary.seconds:.2f} s: {rate:.2f} fps end "
        f"to end, {model_rate:.2f} fps in the model ({segmenter.device}); results in {args.output_dir}"
    )
    if latency is not None and summary.seconds > 0 and done:
        print(
            f"throughput: {rate:.2f} frames/s (decode, inference and encode "
            f"{'overlapped' if args.pipeline_depth else 'one after the other'}, "
            f"--pipeline_depth {args.pipeline_depth}, "
            f"--batch_size {args.batch_size}) vs {1 / latency:.2f} frames/s from the model's single-image latency of "
            f"{1000 * latency:.1f} ms: {rate * latency:.2f}x"
        )
    if summary.skipped:
        print(f"skipped {len(summary.skipped)} unreadable file(s):")
        for path, reason in summary.skipped:
            print(f"  {path}: {reason}")
    return 0 if done else 1
