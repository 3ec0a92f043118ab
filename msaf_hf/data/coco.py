"""COCO-format annotations (``--coco_annotations FILE.json`` with ``--image_dir``) as semantic label maps.

The rules (also in ``--help`` and the README):

* Classes: the file's ``categories`` sorted by category id become class ids 0, 1, 2, ... and their names the
  ``id2label``; with ``--coco_background_class NAME`` class 0 is that background class and the categories start at 1.
  An evaluation file must have the same categories.
* Unlabelled pixels (no annotation covers them) get the ignore index, or the background class.
* Overlaps: annotations are painted largest area first, so where regions overlap the smaller one wins (an object
  on top of the road it stands on keeps its pixels); equal areas: the later annotation id wins.
* ``iscrowd`` annotations (RLE regions of several objects) are painted like any other: semantic segmentation does not
  separate instances, so their pixels are their category's.
* Polygons and RLE (compressed or not) are rasterised with pycocotools (the ``coco`` extra).
* Examples are the file's ``images`` in ``file_name`` order, read from ``--image_dir/<file_name>``; an image without
  annotations is all unlabelled.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .bad_examples import ExampleProblem
from .images import open_image, to_rgb
from .sources import RawExample


def _mask_api() -> Any:
    try:
        from pycocotools import mask
    except ImportError as err:
        raise ImportError(
            "COCO annotations (--coco_annotations) need pycocotools: pip install 'msaf_hf[coco]' "
            "(or pip install pycocotools)."
        ) from err
    return mask


def read_coco_file(path: str | os.PathLike, flag: str) -> dict[str, Any]:
    """The parsed JSON of a COCO annotation file, checked for ``images``, ``annotations`` and ``categories``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{flag} {str(path)!r}: no such file.") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{flag} {str(path)!r} is not valid JSON: {err}") from err
    missing = [key for key in ("images", "categories") if not isinstance(data.get(key), list)]
    if missing:
        raise ValueError(f"{flag} {str(path)!r} is not a COCO annotation file: no {missing} list(s).")
    if not data["categories"]:
        raise ValueError(f"{flag} {str(path)!r} has no categories.")
    data.setdefault("annotations", [])
    return data


def coco_id2label(data: dict[str, Any], background: str | None) -> tuple[dict[int, str], dict[int, int]]:
    """(id2label, category id -> class id): categories in id order, after the background class if any."""
    categories = sorted(data["categories"], key=lambda c: int(c["id"]))
    offset = 1 if background is not None else 0
    id2label = {0: background} if background is not None else {}
    category_to_class = {}
    for i, category in enumerate(categories):
        id2label[i + offset] = str(category.get("name", f"category_{category['id']}"))
        category_to_class[int(category["id"])] = i + offset
    if background is not None and background in list(id2label.values())[1:]:
        raise ValueError(
            f"--coco_background_class {background!r} is also a category of the COCO file; pick another name (or "
            "leave the option out: unlabelled pixels then get the ignore index)."
        )
    return id2label, category_to_class


class CocoSource:
    """The images of one COCO annotation file, with label maps rasterised from their annotations."""

    def __init__(
        self,
        annotation_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        flag: str,
        *,
        background: str | None = None,
        ignore_index: int = 255,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.data = data if data is not None else read_coco_file(annotation_file, flag)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"--image_dir {str(image_dir)!r} (images of {flag}) is not a directory.")
        self.description = f"{flag} {str(annotation_file)!r} with images in {str(image_dir)!r}"
        self.id2label, self.category_to_class = coco_id2label(self.data, background)
        self.unlabelled = 0 if background is not None else ignore_index
        self.images = sorted(self.data["images"], key=lambda image: str(image.get("file_name", "")))
        if not self.images:
            raise ValueError(f"{self.description}: the file lists no images.")
        self.annotations: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for annotation in self.data["annotations"]:
            self.annotations[annotation.get("image_id")].append(annotation)

    def __len__(self) -> int:
        return len(self.images)

    def _image(self, entry: dict[str, Any]) -> Any:
        file_name = entry.get("file_name")
        if not file_name:
            raise ExampleProblem("unreadable_image", f"image id {entry.get('id')} has no file_name")
        return open_image(self.image_dir / file_name, "image")

    def _label(self, entry: dict[str, Any], size: tuple[int, int] | None) -> np.ndarray:
        """Rasterise the annotations of one image at (height, width) of the JSON entry (else ``size``)."""
        mask_api = _mask_api()
        height, width = entry.get("height"), entry.get("width")
        if not height or not width:
            if size is None:
                size = self._image(entry).size[::-1]
            height, width = size
        height, width = int(height), int(width)
        regions = []
        for annotation in self.annotations.get(entry.get("id"), []):
            category = annotation.get("category_id")
            if category not in self.category_to_class:
                raise ExampleProblem(
                    "label_out_of_range",
                    f"annotation {annotation.get('id')} has category_id {category}, which is not in the file's "
                    f"categories {sorted(self.category_to_class)}",
                )
            segmentation = annotation.get("segmentation")
            if not segmentation:
                raise ExampleProblem(
                    "bad_label_format",
                    f"annotation {annotation.get('id')} has no segmentation (a box-only annotation cannot be a mask)",
                )
            try:
                if isinstance(segmentation, list):  # polygons [[x1, y1, x2, y2, ...], ...]
                    rle = mask_api.merge(mask_api.frPyObjects(segmentation, height, width))
                elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
                    rle = mask_api.frPyObjects(segmentation, height, width)
                else:
                    rle = dict(segmentation)
                    if isinstance(rle["counts"], str):
                        rle["counts"] = rle["counts"].encode("ascii")
                region = mask_api.decode(rle).astype(bool)
            except Exception as err:  # malformed polygons/RLE: pycocotools raises various types
                raise ExampleProblem(
                    "bad_label_format",
                    f"annotation {annotation.get('id')}: cannot rasterise its segmentation ({type(err).__name__}: "
                    f"{err})",
                ) from err
            if region.shape != (height, width):
                raise ExampleProblem(
                    "size_mismatch",
                    f"annotation {annotation.get('id')} is {region.shape[0]}x{region.shape[1]} but the image entry "
                    f"says {height}x{width}",
                )
            regions.append((int(region.sum()), annotation.get("id") or 0, self.category_to_class[category], region))
        label = np.full((height, width), self.unlabelled, dtype=np.int64)
        # Largest first, so smaller regions are painted over larger ones; equal areas: later annotation id last.
        for _, _, class_id, region in sorted(regions, key=lambda r: (-r[0], r[1])):
            label[region] = class_id
        return label

    def load(self, index: int) -> RawExample:
        entry = self.images[index]
        name = str(entry.get("file_name") or entry.get("id"))
        try:
            decoded = self._image(entry)
            image = to_rgb(decoded)
            label = self._label(entry, image.size[::-1])
        except ExampleProblem as problem:
            problem.name = name
            raise
        return RawExample(image, label, name, decoded.mode)

    def load_label(self, index: int) -> np.ndarray:
        entry = self.images[index]
        try:
            return self._label(entry, None)
        except ExampleProblem as problem:
            problem.name = str(entry.get("file_name") or entry.get("id"))
            raise
