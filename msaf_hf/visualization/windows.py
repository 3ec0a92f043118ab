"""The sliding-window flags of ``msaf-hf predict`` and ``msaf-hf demo``: ``--sliding_window H W``,
``--stride H W`` (default: 2/3 of the window) and ``--window_batch_size N``, their checks, and the `Segmenter`
arguments they become. The method itself is the model's ``sliding_window_logits`` (``msaf_hf.modeling_dsnet``)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_sliding_window_arguments", "check_sliding_window_flags", "sliding_window_segmenter_kwargs"]


def add_sliding_window_arguments(parser: argparse.ArgumentParser, window_batch_size: bool = True) -> None:
    """Add ``--sliding_window``, ``--stride`` (and ``--window_batch_size``) to ``parser``."""
    parser.add_argument(
        "--sliding_window", type=int, nargs=2, default=None, metavar=("HEIGHT", "WIDTH"),
        help="sliding-window inference for large images: logits averaged over overlapping windows of this size "
        "(multiples of 8; images are then fed at their own size unless --size is given)",
    )
    parser.add_argument(
        "--stride", type=int, nargs=2, default=None, metavar=("HEIGHT", "WIDTH"),
        help="sliding-window stride (default: 2/3 of the window)",
    )
    if window_batch_size:
        parser.add_argument("--window_batch_size", type=int, default=4, help="sliding windows per forward pass")


def check_sliding_window_flags(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` naming the flag if ``--sliding_window``/``--stride``/``--window_batch_size`` are wrong;
    the model's own rules (multiples of 8, a fixed-size export's size) are checked when the `Segmenter` is built."""
    from ..modeling_dsnet import check_sliding_window

    if args.sliding_window is None:
        if args.stride:
            raise ValueError("--stride needs --sliding_window HEIGHT WIDTH (the window it moves).")
        return
    if getattr(args, "fusion_maps", False):
        raise ValueError("--fusion-maps is not available with --sliding_window (each window has its own maps).")
    if getattr(args, "window_batch_size", 1) < 1:
        raise ValueError(f"--window_batch_size must be >= 1, got {args.window_batch_size}")
    try:
        check_sliding_window(tuple(args.sliding_window), None if args.stride is None else tuple(args.stride))
    except ValueError as error:
        raise ValueError(f"--sliding_window/--stride: {error}") from None


def sliding_window_segmenter_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The `Segmenter`/`load_segmenter` arguments of the flags (nothing without ``--sliding_window``)."""
    if args.sliding_window is None:
        return {}
    return {
        "sliding_window": tuple(args.sliding_window),
        "stride": None if args.stride is None else tuple(args.stride),
        "window_batch_size": getattr(args, "window_batch_size", 4),
        "window_progress": not getattr(args, "no_progress", True),
    }
