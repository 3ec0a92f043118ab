"""Class colours: the Cityscapes and CamVid palettes, a fixed distinct palette for any other label set, and the
resolution of a model config's ``label2color`` into one RGB colour per class id.

Self-contained (numpy only, sibling imports only): the demo Space ships a copy of this package's rendering
modules, so nothing here may import ``msaf_hf`` itself.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "CAMVID_PALETTE",
    "CITYSCAPES_PALETTE",
    "KNOWN_PALETTES",
    "distinct_palette",
    "label_colors",
    "parse_color",
]

# The official Cityscapes colours of the 19 training classes (cityscapesScripts' label table), in trainId order.
CITYSCAPES_PALETTE: dict[str, tuple[int, int, int]] = {
    "road": (128, 64, 128),
    "sidewalk": (244, 35, 232),
    "building": (70, 70, 70),
    "wall": (102, 102, 156),
    "fence": (190, 153, 153),
    "pole": (153, 153, 153),
    "traffic light": (250, 170, 30),
    "traffic sign": (220, 220, 0),
    "vegetation": (107, 142, 35),
    "terrain": (152, 251, 152),
    "sky": (70, 130, 180),
    "person": (220, 20, 60),
    "rider": (255, 0, 0),
    "car": (0, 0, 142),
    "truck": (0, 0, 70),
    "bus": (0, 60, 100),
    "train": (0, 80, 100),
    "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32),
}

# The colours of CamVid's 11-class (SegNet) label set, as distributed with the dataset.
CAMVID_PALETTE: dict[str, tuple[int, int, int]] = {
    "sky": (128, 128, 128),
    "building": (128, 0, 0),
    "pole": (192, 192, 128),
    "road": (128, 64, 128),
    "sidewalk": (0, 0, 192),
    "tree": (128, 128, 0),
    "signsymbol": (192, 128, 128),
    "fence": (64, 64, 128),
    "car": (64, 0, 128),
    "pedestrian": (64, 64, 0),
    "bicyclist": (0, 128, 192),
}

#: Label sets recognised by their class names (compared case-insensitively, in any order).
KNOWN_PALETTES: dict[str, dict[str, tuple[int, int, int]]] = {
    "cityscapes": CITYSCAPES_PALETTE,
    "camvid": CAMVID_PALETTE,
}


def distinct_palette(num_colors: int) -> np.ndarray:
    """A fixed palette of ``num_colors`` well-separated RGB colours, ``(num_colors, 3)`` uint8.

    Hues step by the golden angle so neighbouring class ids never get similar hues; saturation and brightness
    cycle through three levels so that large label sets (ADE20K's 150) stay distinguishable. Deterministic: the
    same id always gets the same colour, whatever the number of classes.
    """
    if num_colors < 0:
        raise ValueError(f"distinct_palette: num_colors must be >= 0, got {num_colors}.")
    golden = 0.618033988749895
    levels = ((0.85, 0.95), (0.60, 0.75), (0.95, 0.55))  # (saturation, value)
    colors = np.empty((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        hue = (0.05 + index * golden) % 1.0
        saturation, value = levels[(index // 7) % len(levels)]
        colors[index] = [round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value)]
    return colors


def parse_color(value: Any, where: str = "color") -> tuple[int, int, int]:
    """``[r, g, b]`` (0-255 integers) or ``"#rrggbb"`` -> ``(r, g, b)``; anything else is a ValueError."""
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) == 6:
            try:
                return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
            except ValueError:
                pass
        raise ValueError(f"{where}: expected '#rrggbb' or [r, g, b], got {value!r}.")
    if (
        isinstance(value, Sequence)
        and len(value) == 3
        and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)
    ):
        return int(value[0]), int(value[1]), int(value[2])
    raise ValueError(f"{where}: expected [r, g, b] with integers in 0..255 or '#rrggbb', got {value!r}.")


def _known_palette(names: Sequence[str]) -> np.ndarray | None:
    wanted = [str(n).strip().lower() for n in names]
    for palette in KNOWN_PALETTES.values():
        if sorted(wanted) == sorted(palette):
            return np.array([palette[n] for n in wanted], dtype=np.uint8)
    return None


def label_colors(
    id2label: Mapping[Any, str] | None = None,
    label2color: Mapping[Any, Any] | None = None,
    num_labels: int | None = None,
) -> np.ndarray:
    """One RGB colour per class id, ``(num_labels, 3)`` uint8.

    ``label2color`` (a config's field: class id -> ``[r, g, b]`` or ``"#rrggbb"``) wins where given. Otherwise the
    Cityscapes (or CamVid) palette when ``id2label`` names exactly that label set, else `distinct_palette`. A
    partial ``label2color`` is completed from the default. Pass a model config's fields, e.g.
    ``label_colors(config.id2label, getattr(config, "label2color", None))``.
    """
    names = {int(k): v for k, v in (id2label or {}).items()}
    if num_labels is None:
        num_labels = len(names)
    if num_labels <= 0:
        raise ValueError("label_colors: need at least one class (pass id2label or num_labels).")
    default = None
    if len(names) == num_labels and sorted(names) == list(range(num_labels)):
        default = _known_palette([names[i] for i in range(num_labels)])
    colors = default if default is not None else distinct_palette(num_labels)
    for key, value in (label2color or {}).items():
        class_id = int(key)
        if not 0 <= class_id < num_labels:
            raise ValueError(
                f"label2color has a colour for class id {class_id}, but the model has {num_labels} classes "
                f"(ids 0..{num_labels - 1}); fix or remove that entry."
            )
        colors[class_id] = parse_color(value, f"label2color[{class_id}]")
    return colors
