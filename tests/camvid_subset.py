"""A small CamVid subset (from ../shared/data/camvid) written in every label format msaf_hf reads.

`camvid_subset(root)` returns {format: data flags}: the same images and labels as index PNGs, palette PNGs, colour
masks with CamVid's colours, a COCO JSON (RLE per class) and a parquet folder with `pixel_values`/`annotation`
columns. Images are downscaled 5x (72x96) to keep training on them fast.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"
VOID = 11
SIZE = (96, 72)  # width, height


def require_camvid() -> Path:
    if not (CAMVID / "README.md").is_file():
        pytest.skip(f"the CamVid dataset is not available ({CAMVID} is absent)")
    return CAMVID


def read_subset(num_train: int = 8, num_eval: int = 4) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """{split: [(name, RGB uint8 (72, 96, 3), raw label uint8 (72, 96) with 11 = void)]}, names in sorted order."""
    import pyarrow.parquet as pq

    root = require_camvid()
    out = {}
    for split, count, pattern in (("train", num_train, "train-*.parquet"), ("validation", num_eval, "validation-*")):
        table = pq.read_table(sorted(root.glob(pattern))[0]).slice(0, count).to_pylist()
        rows = []
        for i, row in enumerate(table):
            image = PIL.Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB").resize(SIZE, PIL.Image.BILINEAR)
            label = PIL.Image.open(io.BytesIO(row["label"]["bytes"])).resize(SIZE, PIL.Image.NEAREST)
            rows.append((f"{i:02d}_{row.get('name') or i}", np.asarray(image), np.asarray(label, dtype=np.uint8)))
        out[split] = rows
    return out


def camvid_names() -> list[str]:
    from msaf_hf.data import load_id2label_file

    id2label = load_id2label_file("camvid_id2label.json")
    return [id2label[i] for i in range(len(id2label))]


def camvid_colors() -> np.ndarray:
    from msaf_hf.visualization import CAMVID_PALETTE

    return np.array(list(CAMVID_PALETTE.values()), dtype=np.uint8)


def _png(array: np.ndarray, path: Path | None = None, palette: list[int] | None = None) -> bytes:
    image = PIL.Image.fromarray(array, mode="P") if palette is not None else PIL.Image.fromarray(array)
    if palette is not None:
        image.putpalette(palette)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    if path is not None:
        path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def write_folders(root: Path, subset, kind: str) -> dict[str, Any]:
    colors = camvid_colors()
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(colors)] = colors  # void (11) stays black
    palette = lut.reshape(-1).tolist()
    flags: dict[str, Any] = {}
    for split, prefix in (("train", ""), ("validation", "eval_")):
        images, masks = root / f"{split}_images", root / f"{split}_masks"
        images.mkdir(parents=True)
        masks.mkdir()
        for name, image, label in subset[split]:
            _png(image, images / f"{name}.png")
            if kind == "index":
                _png(label, masks / f"{name}.png")
            elif kind == "palette":
                _png(label, masks / f"{name}.png", palette=palette)
            else:
                _png(lut[label], masks / f"{name}.png")
        flags[f"{prefix}image_dir"], flags[f"{prefix}mask_dir"] = str(images), str(masks)
    if kind == "colour":
        table = [{"id": i, "name": n, "color": colors[i].tolist()} for i, n in enumerate(camvid_names())]
        table.append({"id": 255, "name": "void", "color": [0, 0, 0]})
        (root / "colors.json").write_text(json.dumps(table))
        flags["label_colors"] = str(root / "colors.json")
    else:
        flags.update(void_labels=[VOID], id2label_file="camvid_id2label.json")
    return flags


def write_coco(root: Path, subset) -> dict[str, Any]:
    from pycocotools import mask as mask_api

    flags: dict[str, Any] = {}
    categories = [{"id": 2 * i + 5, "name": n} for i, n in enumerate(camvid_names())]  # ids not contiguous
    for split, prefix in (("train", ""), ("validation", "eval_")):
        images = root / f"{split}_images"
        images.mkdir(parents=True)
        entries, annotations = [], []
        for image_id, (name, image, label) in enumerate(subset[split]):
            _png(image, images / f"{name}.png")
            entries.append({"id": image_id, "file_name": f"{name}.png", "height": label.shape[0],
                            "width": label.shape[1]})
            for class_id in np.unique(label):
                if class_id == VOID:
                    continue
                rle = mask_api.encode(np.asfortranarray((label == class_id).astype(np.uint8)))
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                    "category_id": 2 * int(class_id) + 5,
                                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
        path = root / f"{split}.json"
        path.write_text(json.dumps({"images": entries, "annotations": annotations, "categories": categories}))
        flags[f"{prefix}image_dir"] = str(images)
        flags["coco_annotations" if split == "train" else "eval_coco_annotations"] = str(path)
    return flags


def write_parquet(root: Path, subset) -> dict[str, Any]:
    import datasets

    folder = root / "parquet"
    folder.mkdir(parents=True)
    features = datasets.Features(
        {"pixel_values": datasets.Image(), "annotation": datasets.Image(), "name": datasets.Value("string")})
    for split, rows in subset.items():
        columns = {"pixel_values": [{"bytes": _png(image), "path": None} for _, image, _ in rows],
                   "annotation": [{"bytes": _png(label), "path": None} for _, _, label in rows],
                   "name": [name for name, _, _ in rows]}
        shard = folder / f"{split}-00000-of-00001.parquet"
        datasets.Dataset.from_dict(columns, features=features).to_parquet(str(shard))
    return {"dataset_name": str(folder), "dataset_cache_dir": str(root / "cache"), "void_labels": [VOID],
            "id2label_file": "camvid_id2label.json"}


FORMATS = ("index", "palette", "colour", "coco", "parquet")


def write_format(root: Path, subset, kind: str) -> dict[str, Any]:
    """Write ``subset`` in format ``kind`` under ``root``; returns the DataArguments values that read it."""
    root.mkdir(parents=True, exist_ok=True)
    if kind == "coco":
        pytest.importorskip("pycocotools", reason="COCO annotations need the coco extra (pycocotools)")
        return write_coco(root, subset)
    if kind == "parquet":
        return write_parquet(root, subset)
    return write_folders(root, subset, kind)


def as_argv(flags: dict[str, Any]) -> list[str]:
    """DataArguments values -> command-line flags."""
    argv: list[str] = []
    for key, value in flags.items():
        if value is True:
            argv.append(f"--{key}")
        elif isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        else:
            argv += [f"--{key}", str(value)]
    return argv


def expected_pixels(rows, num_labels: int = 11) -> list[int]:
    """Pixel count per class of the raw labels (void excluded)."""
    counts = np.zeros(num_labels, np.int64)
    for _, _, label in rows:
        counts += np.bincount(label[label != VOID].ravel(), minlength=num_labels)[:num_labels]
    return counts.tolist()
