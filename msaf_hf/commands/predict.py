"""``msaf-hf predict``: segment images, folders, globs and videos and write the predictions as pictures.

    msaf-hf predict outputs/dsnet-camvid/final photos/ 'more/*.jpg' drive.mp4 --output_dir preds

For each image ``NAME``: ``NAME_mask.png`` (a palette PNG whose pixel values are the class ids: lossless and
reloadable with ``np.array(Image.open(path))``), ``NAME_overlay.jpg`` (the image blended with the class colours)
and, with ``--fusion_maps``, ``NAME_fusion1.jpg`` .. ``NAME_fusion3.jpg`` (MSAF's weight maps over the image).
For each video: ``NAME_overlay.mp4`` (and ``NAME_fusion{1,2,3}.mp4``) plus ``NAME_timing.json``, a per-frame
timing summary. Once per run: ``legend.png`` (and ``fusion_scale.png``). Decoding, inference and writing overlap
(``--pipeline_depth``); the frames/s are reported against the model's single-image latency.

``--dataset NAME_OR_FOLDER --split S`` predicts a split of a dataset (a Hub dataset id, a local Hub-style folder,
``synthetic``, or a folder of plain images), read with ``msaf_hf.data.load_split`` (purpose ``"prediction"``) and
prepared by the checkpoint's image processor; each example is written under its name.

Inputs inside a folder keep their relative path under ``--output_dir``. Files that cannot be read are reported
and skipped, with a count at the end; a video whose codec cannot be decoded stops the run before any work with a
clear message; an output folder that would write into an input folder, or over an input file, is refused. The
pictures themselves are :mod:`msaf_hf.visualization.predict`'s.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cpu_features import UnsupportedPrecisionError
from ..visualization.inference import Segmenter, load_segmenter, resolve_device
from ..visualization.pipeline import single_image_latency
from ..visualization.predict import (
    InputItem,
    PredictionSummary,
    check_output_dir,
    collect_inputs,
    predict_dataset,
    predict_images,
    predict_video,
)
from ..visualization.rendering import FUSION_RANGE, fusion_scale_image, legend_image, save_image
from ..visualization.windows import (
    add_sliding_window_arguments,
    check_sliding_window_flags,
    sliding_window_segmenter_kwargs,
)

logger = logging.getLogger(__name__)


def load_prediction_dataset(source: str, split: str, segmenter: Segmenter) -> Any:
    """One split of a dataset (``--dataset``/``--split``) for prediction: ``msaf_hf.data.load_split`` with the
    checkpoint's image processor; labels, if any, are not read."""
    from ..data import load_split

    return load_split(source, split, "prediction", image_processor=segmenter.image_processor, split_flag="--split")



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a save_pretrained folder or a Hub model id")
    parser.add_argument(
        "inputs", nargs="*", metavar="INPUT", help="image or video files, folders or globs ('imgs/*.jpg')"
    )
    parser.add_argument(
        "--dataset",
        default=None,
        help="also predict a dataset split: a Hub dataset id, a local Hub-style folder (e.g. *.parquet shards), "
        "'synthetic', or a folder of plain images (read by msaf_hf.data with the checkpoint's preprocessing)",
    )
    parser.add_argument("--split", default="validation", help="the --dataset split to predict (default validation)")
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
        "--fusion_maps",
        "--fusion-maps",
        action="store_true",
        help="also write MSAF's three fusion-weight maps as heatmaps over each image",
    )
    parser.add_argument(
        "--fusion_range",
        "--fusion-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="fusion weights mapped to the two ends of the heatmap colours (default 0.3 0.7)",
    )
    add_sliding_window_arguments(parser)
    parser.add_argument("--revision", default=None, help="Hub revision of the model")
    parser.add_argument(
        "--trust_remote_code",
        "--trust-remote-code",
        action="store_true",
        help="load the model code shipped with the checkpoint (not needed with msaf_hf installed)",
    )
    parser.add_argument("--no_progress", "--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="bfloat16: run the PyTorch model under torch.autocast in bfloat16 (on the CPU it needs "
                             "avx512_bf16 or AMX; an exported engine runs in its exported precision)")
    parser.add_argument("--pipeline_depth", type=int, default=2,
                        help="decode, inference and encode overlap, each stage up to N items ahead (0: one after the "
                             "other); the outputs are the same")
    return parser


def load_model_for_prediction(args: argparse.Namespace) -> Segmenter:
    """Where ``msaf-hf predict`` loads its model (swap in other model formats here)."""
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
        **sliding_window_segmenter_kwargs(args),
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
    if not args.inputs and args.dataset is None:
        print("error: give images, videos, folders or globs to predict, or --dataset", file=sys.stderr)
        return 2
    try:
        check_sliding_window_flags(args)
        items, folders = collect_inputs(args.inputs)
        if args.dataset is not None and Path(args.dataset).is_dir():
            folders.append(Path(args.dataset))  # the output folder must not be inside it either
        check_output_dir(args.output_dir, items, folders, args.fusion_maps)
        unreadable: list[tuple[InputItem, str]] = []
        videos = [item for item in items if item.kind == "video"]
        if videos:  # fail before any work on a codec that cannot be decoded (VideoError)
            from ..visualization.video import VideoReader

            for item in videos:
                try:
                    VideoReader(item.path).close()
                except OSError as error:  # not a media file at all: skipped like an unreadable image
                    logger.warning("Skipping %s: %s", item.path, error)
                    unreadable.append((item, str(error)))
            skipped_ids = {id(item) for item, _ in unreadable}
            items = [item for item in items if id(item) not in skipped_ids]
        if not items and args.dataset is None:
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
    except UnsupportedPrecisionError as error:  # --dtype bfloat16 on a CPU without bfloat16
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:
        if args.sliding_window is None:
            raise
        print(f"error: --sliding_window/--stride: {error}", file=sys.stderr)  # the model's own rules
        return 2
    dataset = None
    if args.dataset is not None:
        try:
            dataset = load_prediction_dataset(args.dataset, args.split, segmenter)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if args.fusion_maps and not segmenter.supports_fusion_maps:
        print("error: --fusion_maps needs a DSNet model (the maps are its MSAF weights).", file=sys.stderr)
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
    # What every kind of input is predicted with.
    options = dict(batch_size=args.batch_size, alpha=args.alpha, fusion_maps=args.fusion_maps, summary=summary,
                   fusion_range=fusion_range, pipeline_depth=args.pipeline_depth)
    start = time.perf_counter()
    with tqdm(total=len(images), desc="images", unit="img", disable=args.no_progress or not images) as progress:
        predict_images(segmenter, images, args.output_dir, progress=progress, **options)
    if dataset is not None:
        with tqdm(total=len(dataset), desc=f"{args.dataset} ({args.split})", unit="img",
                  disable=args.no_progress) as progress:
            predict_dataset(segmenter, dataset, args.output_dir, progress=progress, **options)
    for item in videos:
        from ..visualization.video import VideoError

        try:
            with tqdm(desc=item.path.name, unit="frame", disable=args.no_progress) as progress:
                timing = predict_video(segmenter, item, args.output_dir, progress=progress,
                                       single_image_latency_s=latency, **options)
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
