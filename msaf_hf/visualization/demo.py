"""The Gradio demo of ``msaf-hf demo`` and of the demo Space (``pip install msaf_hf[demo]``).

Upload an image (or pick an example) and see the overlay, a legend of the classes found with each one's share of
the image, the model latency and, on a toggle, MSAF's three fusion-weight maps: at every pixel, how much the detail
branch was trusted over the context branch.

Self-contained (gradio and sibling imports only): the Space ships a copy of this file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from .inference import Segmenter
from .rendering import FUSION_RANGE, class_shares, fusion_heatmap, legend_image, overlay

__all__ = ["build_demo", "make_predict_fn"]

_DESCRIPTION = (
    "DSNet is a real-time semantic segmentation network with two branches: a **detail** branch that keeps the "
    "image's fine structure and a **context** branch of atrous convolutions that sees far. MSAF (Multi-Scale "
    "Attention Fusion) mixes them three times with a learned weight *w* per pixel and channel: "
    "`out = 2·(w·detail + (1−w)·context)`. Turn on *fusion maps* to see *w* (channel mean) over the image: "
    "**red** where the detail branch was trusted, **blue** where the context branch was, grey for an even mix "
    f"(the colours saturate at w = {FUSION_RANGE[0]:g} and {FUSION_RANGE[1]:g})."
)


def make_predict_fn(segmenter: Segmenter) -> Callable[..., tuple[Any, ...]]:
    """``fn(image, alpha, show_fusion_maps) -> (overlay, legend, class shares, latency text, fusion maps)``: the
    demo's callback, usable without a browser."""

    def predict(image: Image.Image | np.ndarray | None, alpha: float = 0.5, show_fusion_maps: bool = False):
        if image is None:
            raise ValueError("Upload an image first (or pick an example).")
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        image = image.convert("RGB")
        fusion = bool(show_fusion_maps) and segmenter.supports_fusion_maps
        result = segmenter.predict([image], fusion_maps=fusion)[0]
        shares = class_shares(result.label_map, segmenter.num_labels)
        present = [int(i) for i in np.argsort(-shares) if shares[i] > 0]
        legend = legend_image(segmenter.id2label, segmenter.palette, class_ids=present, shares=shares)
        share_values = {segmenter.id2label.get(i, f"class {i}"): float(shares[i]) for i in present}
        latency = (
            f"**Latency:** {1000 * result.seconds:.1f} ms on {segmenter.device.type} "
            f"(preprocessing + forward + upsampling) for a {image.width}×{image.height} image"
        )
        maps = []
        for index, weights in enumerate(result.fusion_weights or (), start=1):
            mean = float(np.mean(weights))
            maps.append((fusion_heatmap(image, weights), f"MSAF {index}: mean detail share w = {mean:.2f}"))
        return overlay(image, result.label_map, segmenter.palette, alpha), legend, share_values, latency, maps

    return predict


def build_demo(
    segmenter: Segmenter,
    *,
    examples: Sequence[str] = (),
    title: str = "DSNet: see what DSNet sees",
    description: str | None = None,
) -> Any:
    """The Gradio app (a ``gr.Blocks``; call ``.launch()``)."""
    import gradio as gr

    predict = make_predict_fn(segmenter)
    names = ", ".join(segmenter.id2label[i] for i in sorted(segmenter.id2label))

    def run(image, alpha, show_fusion_maps):
        if image is None:
            raise gr.Error("Upload an image first (or pick an example).")
        overlay_image, legend, shares, latency, maps = predict(image, alpha, show_fusion_maps)
        return overlay_image, legend, shares, latency, gr.update(value=maps, visible=bool(show_fusion_maps))

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\n\n{description or _DESCRIPTION}\n\n*Classes:* {names}.")
        with gr.Row():
            with gr.Column():
                image_input = gr.Image(
                    type="pil", label="Image", sources=["upload", "clipboard"], height=360, elem_id="input-image"
                )
                alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Colour opacity", elem_id="alpha")
                show_fusion_maps = gr.Checkbox(
                    label="Show MSAF fusion maps",
                    value=False,
                    elem_id="fusion-toggle",
                    visible=segmenter.supports_fusion_maps,
                )
                button = gr.Button("Segment", variant="primary", elem_id="segment-button")
                if examples:
                    gr.Examples(examples=[[str(path)] for path in examples], inputs=[image_input], label="Examples")
            with gr.Column():
                overlay_output = gr.Image(type="pil", label="Overlay", interactive=False, height=360, elem_id="overlay")
                latency = gr.Markdown(elem_id="latency")
                legend_output = gr.Image(type="pil", label="Legend", interactive=False, elem_id="legend")
                shares = gr.Label(label="Share of the image per class", elem_id="class-shares")
        fusion_maps = gr.Gallery(
            label="MSAF fusion maps (red: detail branch trusted; blue: context branch)",
            columns=3,
            visible=False,
            elem_id="fusion-maps",
        )
        outputs = [overlay_output, legend_output, shares, latency, fusion_maps]
        inputs = [image_input, alpha, show_fusion_maps]
        button.click(run, inputs, outputs)
        image_input.upload(run, inputs, outputs)

        def toggle(image, alpha, show):
            if image is None:  # nothing segmented yet: only show or hide the gallery
                return gr.update(), gr.update(), gr.update(), gr.update(), gr.update(visible=bool(show))
            return run(image, alpha, show)

        show_fusion_maps.change(toggle, inputs, outputs)
    return demo
