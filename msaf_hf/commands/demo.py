"""``msaf-hf demo``: start the DSNet demo (Gradio) for a model: upload or pick an image; see the overlay, the
legend, each class's share of the image, the latency and MSAF's fusion maps.

    msaf-hf demo outputs/dsnet-camvid/final [--examples img1.png img2.png] [--port 7860] [--device cuda]
        [--sliding_window 512 1024 [--stride 344 688]]    # large images: logits averaged over overlapping windows

Needs the `demo` extra: pip install 'msaf_hf[demo]'.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..visualization.demo import build_demo
from ..visualization.inference import load_segmenter
from ..visualization.windows import (
    add_sliding_window_arguments,
    check_sliding_window_flags,
    sliding_window_segmenter_kwargs,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a save_pretrained folder or a Hub model id")
    parser.add_argument("--examples", nargs="*", default=[], help="example images offered in the app")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto (default)")
    parser.add_argument("--size", default=None, help="model input size HxW or N (shorter side); default: native")
    add_sliding_window_arguments(parser, window_batch_size=False)
    parser.add_argument("--revision", default=None, help="Hub revision of the model")
    parser.add_argument("--trust_remote_code", "--trust-remote-code", action="store_true",
                        help="load the checkpoint's own model code")
    parser.add_argument("--title", default="DSNet: see what DSNet sees", help="page title")
    args = parser.parse_args(argv)
    for example in args.examples:
        if not Path(example).is_file():
            parser.error(f"example image {example} does not exist")
    try:
        check_sliding_window_flags(args)
    except ValueError as error:
        parser.error(str(error))
    try:
        segmenter = load_segmenter(args.model, device=args.device, size=args.size, revision=args.revision,
                                   trust_remote_code=args.trust_remote_code, **sliding_window_segmenter_kwargs(args))
    except ValueError as error:
        if args.sliding_window is None:
            raise
        parser.error(f"--sliding_window/--stride: {error}")
    demo = build_demo(segmenter, examples=args.examples, title=args.title)
    print(f"DSNet demo of {args.model} on {segmenter.device}: http://{args.host}:{args.port}", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, share=False, show_error=True)
    return 0
