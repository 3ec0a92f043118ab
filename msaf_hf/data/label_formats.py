"""Label formats beyond single-channel class-id maps: colour-coded masks, and finding a Hub dataset's columns.

* Palette PNGs (mode ``P``) need nothing here: their pixel values are palette indices, and the indices are read as
  the class ids (:func:`msaf_hf.data.labels.label_to_array`), whatever colours the palette shows.
* Colour masks (RGB pixels, one colour per class) are decoded by a :class:`ColorTable` (``--label_colors FILE``,
  or the ``label2color`` of the model being fine-tuned): the colours are packed into one int32 per pixel and looked
  up with ``np.searchsorted`` in the table's sorted colours, so decoding is vectorised. A colour that is not in the
  table is a bad example naming the colour, its pixel count and the file (or, with ``--unknown_colors_to_ignore``,
  the ignore index, counted and logged).
* :func:`find_columns` picks a Hub dataset's image and label columns when exactly one candidate of each fits.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bad_examples import ExampleProblem
from .images import is_image_value, open_image

logger = logging.getLogger(__name__)

#: Column names tried (in this order of preference for the message) when --image_column/--label_column are not given.
IMAGE_COLUMN_CANDIDATES = ("image", "pixel_values", "img", "images", "rgb", "input")
LABEL_COLUMN_CANDIDATES = (
    "label", "annotation", "mask", "semantic_segmentation", "segmentation", "seg_map", "labels", "masks",
    "segmentation_mask", "gt", "label_map",
)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 colours -> ``(...)`` int32 ``r << 16 | g << 8 | b``."""
    rgb = rgb.astype(np.int32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _parse_rgb(value: Any, where: str) -> tuple[int, int, int]:
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) == 6:
            try:
                return tuple(int(text[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
            except ValueError:
                pass
    if (
        isinstance(value, (list, tuple)) and len(value) == 3
        and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)
    ):
        return int(value[0]), int(value[1]), int(value[2])
    raise ValueError(f"{where}: a colour must be [r, g, b] with integers 0..255 or '#rrggbb', got {value!r}.")


class ColorTable:
    """Colour -> class id lookup for colour-coded masks.

    ``colors`` maps class ids to ``(r, g, b)``. An id equal to ``ignore_index`` marks a colour whose pixels are not
    trained on (e.g. CamVid's black "void"); such entries are not classes. Two ids may not share a colour.
    ``names`` (optional) are class names for the ids, used as the data's ``id2label``.
    """

    def __init__(
        self,
        colors: Mapping[int, Sequence[int]],
        *,
        ignore_index: int = 255,
        unknown_to_ignore: bool = False,
        names: Mapping[int, str] | None = None,
        origin: str = "the colour table",
    ) -> None:
        if not colors:
            raise ValueError(f"{origin}: no colours.")
        self.origin, self.ignore_index, self.unknown_to_ignore = origin, int(ignore_index), unknown_to_ignore
        by_color: dict[int, int] = {}
        self.colors: dict[int, tuple[int, int, int]] = {}
        for class_id, color in colors.items():
            rgb = _parse_rgb(color if isinstance(color, str) else list(color), f"{origin}, class {class_id}")
            packed = int(pack_rgb(np.asarray(rgb)))
            self.colors[int(class_id)] = rgb
            if packed in by_color and by_color[packed] != int(class_id):
                raise ValueError(
                    f"{origin}: classes {by_color[packed]} and {class_id} share the colour {format_color(packed)}; "
                    "each colour must mean one class."
                )
            by_color[packed] = int(class_id)
        self.keys = np.array(sorted(by_color), dtype=np.int32)
        self.values = np.array([by_color[k] for k in sorted(by_color)], dtype=np.int64)
        self.names = {int(k): str(v) for k, v in (names or {}).items() if int(k) != self.ignore_index} or None
        # Unknown colours mapped to the ignore index (--unknown_colors_to_ignore), in this process: pixels per mask
        # file (a file decoded twice counts once), plus masks without a file name.
        self.unknown_by_file: dict[str, int] = {}
        self.unknown_unnamed = [0, 0]  # pixels, masks

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> ColorTable:
        """Read ``{"0": [r, g, b], ...}`` or ``[{"id": 0, "name": "sky", "color": [r, g, b]}, ...]``
        (``"#rrggbb"`` strings accepted; also ``{"label2color": {...}}`` as in a model's config.json)."""
        file = Path(path)
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"--label_colors {str(path)!r}: no such file.") from None
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"--label_colors {str(path)!r} is not valid JSON: {err}") from err
        origin = f"--label_colors {str(path)!r}"
        names: dict[int, str] = {}
        if isinstance(raw, dict) and isinstance(raw.get("label2color"), dict):
            if isinstance(raw.get("id2label"), dict):
                names = {int(k): str(v) for k, v in raw["id2label"].items()}
            raw = raw["label2color"]
        colors: dict[int, Any] = {}
        try:
            if isinstance(raw, list):
                for entry in raw:
                    if not isinstance(entry, dict) or "id" not in entry or "color" not in entry:
                        raise ValueError(f"each entry must be {{'id', 'color'[, 'name']}}, got {entry!r}")
                    colors[int(entry["id"])] = entry["color"]
                    if "name" in entry:
                        names[int(entry["id"])] = str(entry["name"])
            elif isinstance(raw, dict):
                colors = {int(k): v for k, v in raw.items()}
            else:
                raise ValueError("expected an object {class id: [r, g, b]} or a list of {id, name, color}")
        except (TypeError, ValueError) as err:
            raise ValueError(f"{origin}: {err}.") from err
        colors = {k: list(_parse_rgb(v, f"{origin}, class {k}")) for k, v in colors.items()}
        return cls(colors, names=names or None, origin=origin, **kwargs)

    @property
    def unknown_pixels(self) -> int:
        """Pixels of unknown colours mapped to the ignore index so far (``--unknown_colors_to_ignore``)."""
        return sum(self.unknown_by_file.values()) + self.unknown_unnamed[0]

    @property
    def files_with_unknown(self) -> int:
        """Masks with unknown colours mapped to the ignore index so far."""
        return len(self.unknown_by_file) + self.unknown_unnamed[1]

    @property
    def class_ids(self) -> list[int]:
        return sorted(k for k in self.colors if k != self.ignore_index)

    def decode(self, value: Any) -> np.ndarray:
        """A mask value (path, bytes, datasets Image dict, PIL image or array) -> int64 (H, W) class ids."""
        if value is None or is_image_value(value):
            rgb = np.asarray(open_image(value, "label").convert("RGB"))  # palette PNGs: through their palette
        else:  # nested numbers (a datasets Array3D / list column)
            rgb = np.asarray(value)
            if rgb.ndim != 3 or rgb.shape[-1] < 3 or not np.issubdtype(rgb.dtype, np.integer):
                raise ExampleProblem(
                    "bad_label_format", f"a colour mask must be (H, W, 3) integers, got shape {rgb.shape} {rgb.dtype}"
                )
            rgb = rgb[..., :3]
        packed = pack_rgb(rgb)
        position = np.clip(np.searchsorted(self.keys, packed), 0, len(self.keys) - 1)
        known = self.keys[position] == packed
        label = self.values[position]
        if not known.all():
            colors, counts = np.unique(packed[~known], return_counts=True)
            order = np.argsort(-counts)
            listed = ", ".join(f"{format_color(int(colors[i]))} ({int(counts[i])} pixels)" for i in order[:5])
            more = f" and {len(colors) - 5} more" if len(colors) > 5 else ""
            where = describe_value(value)
            if not self.unknown_to_ignore:
                raise ExampleProblem(
                    "unknown_label_color",
                    f"the colour mask{where} has colours not in {self.origin}: {listed}{more}; add them to the "
                    "table, or pass --unknown_colors_to_ignore to train on the rest of the image",
                )
            if not where or where not in self.unknown_by_file:
                logger.warning("Colour mask%s: %s not in %s mapped to the ignore index (--unknown_colors_to_ignore).",
                               where, listed + more, self.origin)
            if where:
                self.unknown_by_file[where] = int(counts.sum())
            else:
                self.unknown_unnamed[0] += int(counts.sum())
                self.unknown_unnamed[1] += 1
            label = label.copy()
            label[~known] = self.ignore_index
        return label


def format_color(packed: int) -> str:
    """``0xRRGGBB`` -> ``'(r, g, b) #rrggbb'``."""
    r, g, b = (packed >> 16) & 255, (packed >> 8) & 255, packed & 255
    return f"({r}, {g}, {b}) #{r:02x}{g:02x}{b:02x}"


def describe_value(value: Any) -> str:
    """`` 'path'`` for a label value that knows its file, else ``''``."""
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, (str, os.PathLike)) else None
    return f" {str(path)!r}" if path else ""


def color_table_for_flag(
    label_colors: str | None, given: ColorTable | None = None, *, ignore_index: int = 255,
    unknown_to_ignore: bool = False,
) -> ColorTable | None:
    """The colour table of ``--label_colors FILE|model`` (None without the flag). ``model`` means the fine-tuned
    model's colours, which the caller passes as ``given``; a file is read with :meth:`ColorTable.from_file`."""
    if label_colors is None:
        return None
    if given is not None:
        return given
    if label_colors.strip().lower() == "model":
        raise ValueError(
            "--label_colors model takes the colours of the model being fine-tuned: it works in training with "
            "--model_name_or_path (a model whose config has label2color); elsewhere pass --label_colors FILE.json."
        )
    return ColorTable.from_file(label_colors, ignore_index=ignore_index, unknown_to_ignore=unknown_to_ignore)


def color_table_from_config(config: Any, ignore_index: int = 255, unknown_to_ignore: bool = False) -> ColorTable:
    """The :class:`ColorTable` of a model config's ``label2color`` (``--label_colors model``)."""
    label2color = getattr(config, "label2color", None)
    if not label2color:
        raise ValueError(
            "--label_colors model: the model being fine-tuned has no label2color in its config; pass "
            "--label_colors FILE.json ({\"0\": [r, g, b], ...}) instead."
        )
    id2label = {int(k): v for k, v in (getattr(config, "id2label", None) or {}).items()}
    return ColorTable(label2color, ignore_index=ignore_index, unknown_to_ignore=unknown_to_ignore,
                      names=id2label or None, origin="the model's label2color")


# --------------------------------------------------------------------------------------------------
# Hub columns


def _is_image_feature(feature: Any) -> bool:
    import datasets

    return isinstance(feature, datasets.Image)


def find_columns(
    features: Mapping[str, Any], image_column: str | None, label_column: str | None, where: str,
    *, labels: bool = True,
) -> tuple[str, str | None]:
    """The (image, label) columns of a Hub dataset split.

    Given columns win (a missing one is an error listing the columns). Otherwise the image column is the one
    candidate present (by name: ``image``, ``pixel_values``, ``img``, ...; else the one ``datasets.Image`` feature
    that is not a label candidate) and likewise the label column (``label``, ``annotation``, ``mask``,
    ``semantic_segmentation``, ``segmentation``, ``seg_map``, ...). More than one fitting column is an error listing
    them and the flag to pass. With ``labels=False`` (images only: calibration, prediction) a label column that is
    absent or ambiguous is ``None`` instead of an error.
    """
    columns = list(features)
    if not labels:
        if label_column is not None and label_column not in columns:
            label_column = None
        if label_column is None:
            try:
                return find_columns(features, image_column, None, where)
            except ValueError:
                labelled = [c for c in columns if c.lower() in LABEL_COLUMN_CANDIDATES]
                if image_column is None:
                    image_column = _pick_image_column(features, columns, set(labelled), where)
                return image_column, None
    for flag, column in (("--image_column", image_column), ("--label_column", label_column)):
        if column is not None and column not in columns:
            raise ValueError(f"{where}: column '{column}' not found (columns: {columns}); pass {flag} <column>.")

    def pick(flag: str, given: str | None, names: Sequence[str], taken: set[str]) -> str:
        if given is not None:
            return given
        found = [c for c in columns if c.lower() in names and c not in taken]
        if not found and flag == "--image_column":
            found = [c for c in columns if _is_image_feature(features[c]) and c.lower() not in LABEL_COLUMN_CANDIDATES
                     and c not in taken]
        if len(found) == 1:
            return found[0]
        what = "image" if flag == "--image_column" else "label"
        if not found:
            raise ValueError(
                f"{where}: no {what} column found among {columns} (looked for {list(names)}); pass {flag} <column>."
            )
        raise ValueError(
            f"{where}: several columns could hold the {what}s: {found}; pass {flag} <one of them>."
        )

    label = pick("--label_column", label_column, LABEL_COLUMN_CANDIDATES, {image_column} if image_column else set())
    image = pick("--image_column", image_column, IMAGE_COLUMN_CANDIDATES, {label})
    if image == label:
        raise ValueError(f"{where}: --image_column and --label_column are both '{image}'.")
    return image, label


def _pick_image_column(features: Mapping[str, Any], columns: list[str], taken: set[str], where: str) -> str:
    """The one image column of a split without (or with an ambiguous) label column."""
    found = [c for c in columns if c.lower() in IMAGE_COLUMN_CANDIDATES and c not in taken]
    if not found:
        found = [c for c in columns if _is_image_feature(features[c]) and c not in taken]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValueError(f"{where}: no image column found among {columns}; pass --image_column <column>.")
    raise ValueError(f"{where}: several columns could hold the images: {found}; pass --image_column <one of them>.")
