"""COCO annotation files as label maps: category mapping, polygons and RLE, the overlap rule, iscrowd, background."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from msaf_hf.data import BadExampleError, DataArguments, load_segmentation_data

pytest.importorskip("pycocotools", reason="COCO annotations need the coco extra (pycocotools)")


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_api

    rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _write(tmp_path: Path, annotations: list[dict], categories=None, size=(10, 12), name="coco.json") -> Path:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    PIL.Image.fromarray(np.zeros((*size, 3), np.uint8)).save(images / "a.png")
    data = {
        "images": [{"id": 7, "file_name": "a.png", "height": size[0], "width": size[1]}],
        "annotations": annotations,
        "categories": categories or [{"id": 9, "name": "car"}, {"id": 3, "name": "road"}],
    }
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _label(tmp_path: Path, path: Path, **kwargs):
    data = load_segmentation_data(DataArguments(coco_annotations=str(path), image_dir=str(tmp_path / "images"),
                                                eval_split=None, **kwargs))
    return data, data.train.load_example(0)[1]


def test_categories_in_id_order_polygons_rle_and_the_overlap_rule(tmp_path):
    road = np.zeros((10, 12), bool)
    road[4:, :] = True  # 72 pixels
    annotations = [
        # a car polygon (x, y pairs) covering columns 2..5, rows 2..6: smaller than the road, so it wins its overlap
        {"id": 1, "image_id": 7, "category_id": 9, "iscrowd": 0, "segmentation": [[2, 2, 6, 2, 6, 7, 2, 7]]},
        {"id": 2, "image_id": 7, "category_id": 3, "iscrowd": 0, "segmentation": _rle(road)},
    ]
    data, label = _label(tmp_path, _write(tmp_path, annotations))
    assert data.id2label == {0: "road", 1: "car"}  # category 3 before category 9
    expected = np.full((10, 12), 255)
    expected[road] = 0
    expected[2:7, 2:6] = 1
    np.testing.assert_array_equal(label, expected)
    # The rule is the area, not the order in the file.
    data, reordered = _label(tmp_path, _write(tmp_path, annotations[::-1], name="rev.json"))
    np.testing.assert_array_equal(reordered, expected)


def test_equal_areas_later_annotation_wins_and_iscrowd_counts(tmp_path):
    left, right = np.zeros((10, 12), bool), np.zeros((10, 12), bool)
    left[:, :7] = True
    right[:, 5:] = True  # both 70 pixels, overlapping in columns 5..6
    crowd = _rle(right)
    annotations = [
        {"id": 5, "image_id": 7, "category_id": 3, "iscrowd": 0, "segmentation": _rle(left)},
        {"id": 4, "image_id": 7, "category_id": 9, "iscrowd": 1, "segmentation": crowd},
    ]
    _, label = _label(tmp_path, _write(tmp_path, annotations))
    assert (label[:, 5:7] == 0).all()  # id 5 (road) is the later annotation
    assert (label[:, 7:] == 1).all()  # the crowd region is its category


def test_background_class_and_eval_file(tmp_path):
    annotations = [{"id": 1, "image_id": 7, "category_id": 9, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}]
    path = _write(tmp_path, annotations)
    eval_path = _write(tmp_path, [], name="eval.json")
    data = load_segmentation_data(DataArguments(
        coco_annotations=str(path), eval_coco_annotations=str(eval_path), image_dir=str(tmp_path / "images"),
        coco_background_class="background"))
    assert data.id2label == {0: "background", 1: "road", 2: "car"}
    label = data.train.load_example(0)[1]
    assert (label[:4, :4] == 2).all() and (label[5:, 5:] == 0).all()
    assert (data.eval.load_example(0)[1] == 0).all()  # no annotations: all background
    other = _write(tmp_path, [], categories=[{"id": 1, "name": "tree"}], name="other.json")
    with pytest.raises(ValueError, match="other categories"):
        load_segmentation_data(DataArguments(coco_annotations=str(path), eval_coco_annotations=str(other),
                                             image_dir=str(tmp_path / "images")))


def test_bad_annotations_are_named(tmp_path):
    path = _write(tmp_path, [{"id": 3, "image_id": 7, "category_id": 42, "segmentation": [[0, 0, 4, 0, 4, 4]]}])
    data = load_segmentation_data(DataArguments(coco_annotations=str(path), image_dir=str(tmp_path / "images"),
                                                eval_split=None))
    with pytest.raises(BadExampleError, match=r"name 'a.png'.*annotation 3 has category_id 42"):
        data.train.load_example(0)
    with pytest.raises(ValueError, match="without --mask_dir"):
        DataArguments(coco_annotations=str(path), image_dir="x", mask_dir="y")
