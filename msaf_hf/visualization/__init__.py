"""Seeing what DSNet sees: predictions as pictures, evaluation as figures, a demo app and Space.

* `palettes`: class colours (Cityscapes, CamVid, a fixed distinct palette) and a config's ``label2color``.
* `rendering`: colour masks, overlays, palette-PNG masks, legends, MSAF fusion-weight heatmaps (numpy + PIL).
* `inference`: `Segmenter` / `load_segmenter`: class maps at the image size, fusion maps, timing.
* `predict`: ``msaf-hf predict`` (images, folders, globs, videos).
* `video`: streaming video decode/encode with PyAV (extra ``video``).
* `figures`: confusion matrix, per-class IoU, training curves (extra ``viz``: matplotlib).
* `demo`: the Gradio app of ``msaf-hf demo`` (extra ``demo``); `space`: writing and pushing it as a Space.

`palettes`, `rendering`, `inference` and `demo` import nothing from msaf_hf outside this folder: a Space ships
copies of them next to its ``app.py``.
"""

from .figures import figures_in, write_evaluation_figures, write_result_figures
from .inference import SegmentationResult, Segmenter, load_segmenter
from .palettes import CAMVID_PALETTE, CITYSCAPES_PALETTE, distinct_palette, label_colors
from .rendering import (
    class_shares,
    colorize,
    fusion_heatmap,
    fusion_scale_image,
    legend_image,
    load_mask,
    overlay,
    save_palette_mask,
    weight_map,
)

__all__ = [
    "CAMVID_PALETTE",
    "CITYSCAPES_PALETTE",
    "SegmentationResult",
    "Segmenter",
    "class_shares",
    "colorize",
    "distinct_palette",
    "figures_in",
    "fusion_heatmap",
    "fusion_scale_image",
    "label_colors",
    "legend_image",
    "load_mask",
    "load_segmenter",
    "overlay",
    "save_palette_mask",
    "weight_map",
    "write_evaluation_figures",
    "write_result_figures",
]
