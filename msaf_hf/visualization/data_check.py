"""Pictures of the dataset check (``msaf-hf check-data``), drawn from plain arrays: a class-frequency bar chart
(matplotlib, extra ``viz``) and a preview grid of images with their label maps overlaid (PIL only)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .rendering import overlay, save_image

#: Width of one preview tile in pixels (images are scaled to it, labels with nearest-neighbour).
PREVIEW_TILE_WIDTH = 320


def plot_class_frequencies(
    class_names: Sequence[str], shares: Sequence[float], path: str | os.PathLike[str], title: str = ""
) -> Path | None:
    """A horizontal bar chart of each class's share of the labelled pixels (log scale); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    values = np.asarray(shares, dtype=np.float64) * 100.0
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(class_names) + 1.2), dpi=100)
    positions = np.arange(len(class_names))
    ax.barh(positions, np.where(values > 0, values, np.nan), color="#4C72B0")
    ax.set_yticks(positions, labels=list(class_names))
    ax.invert_yaxis()
    if (values > 0).any():
        ax.set_xscale("log")
    ax.set_xlabel("share of labelled pixels (%)")
    smallest = values[values > 0].min() if (values > 0).any() else 1.0
    for y, value in zip(positions, values, strict=True):
        text = f" {value:.3g}%" if value > 0 else " absent"
        ax.text(value if value > 0 else smallest, y, text, va="center", fontsize=8)
    ax.set_title(title or "Class frequencies")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def preview_grid(
    images: Sequence[Image.Image],
    labels: Sequence[np.ndarray],
    palette: np.ndarray,
    path: str | os.PathLike[str],
    names: Sequence[str] = (),
    columns: int = 4,
    alpha: float = 0.5,
) -> Path:
    """Images with their label maps overlaid (``palette``: one RGB colour per class; other ids stay uncoloured),
    in a grid of ``columns`` tiles, each captioned with its name."""
    if not images:
        raise ValueError("preview_grid: no images.")
    tiles = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        width, height = image.size
        tile_height = max(1, round(height * PREVIEW_TILE_WIDTH / width))
        size = (PREVIEW_TILE_WIDTH, tile_height)
        label = np.asarray(label)
        visible = np.where((label >= 0) & (label < len(palette)), label, len(palette))  # ignored: unblended colour
        colours = np.concatenate([palette, np.zeros((1, 3), dtype=np.uint8)])
        small_label = np.asarray(Image.fromarray(visible.astype(np.int32)).resize(size, Image.NEAREST))
        tile = overlay(image.resize(size, Image.BILINEAR), small_label, colours, alpha)
        blank = small_label == len(palette)
        if blank.any():  # ignored pixels show the plain image
            pixels = np.asarray(tile).copy()
            pixels[blank] = np.asarray(image.resize(size, Image.BILINEAR).convert("RGB"))[blank]
            tile = Image.fromarray(pixels)
        if i < len(names):
            ImageDraw.Draw(tile).text((4, 4), str(names[i]), fill=(255, 255, 255))
        tiles.append(tile)
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    row_height = max(tile.size[1] for tile in tiles)
    grid = Image.new("RGB", (columns * PREVIEW_TILE_WIDTH, rows * row_height), (32, 32, 32))
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % columns) * PREVIEW_TILE_WIDTH, (i // columns) * row_height))
    return save_image(grid, path)
