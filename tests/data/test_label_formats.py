"""Label formats: palette PNGs, colour masks (--label_colors), COCO annotations, Hub column detection, class weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from msaf_hf.data import BadExampleError, DataArguments, load_segmentation_data
from msaf_hf.data.bad_examples import ExampleProblem
from msaf_hf.data.class_weights import (
    CLASS_WEIGHT_MAX,
    ClassFrequencies,
    load_class_weights_file,
    median_frequency_weights,
)
from msaf_hf.data.label_formats import ColorTable, find_columns

COLORS = {0: [128, 128, 128], 1: [0, 0, 192], 2: [64, 128, 0]}


def _image_folder(folder: Path, labels: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, label in enumerate(labels):
        h, w = label.shape
        PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def _labels() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 3, (6, 8)).astype(np.uint8) for _ in range(3)]


def _read_all(data) -> list[np.ndarray]:
    return [data.train.load_example(i)[1] for i in range(len(data.train))]


def test_palette_pngs_are_read_as_their_indices(tmp_path):
    labels = _labels()
    images = _image_folder(tmp_path / "images", labels)
    masks = tmp_path / "masks"
    masks.mkdir()
    palette = [0, 0, 0] * 256
    palette[:9] = [10, 200, 30, 250, 0, 0, 0, 0, 250]  # colours that are not the indices
    for i, label in enumerate(labels):
        mask = PIL.Image.fromarray(label, mode="P")
        mask.putpalette(palette)
        mask.save(masks / f"im{i}.png")
        assert PIL.Image.open(masks / f"im{i}.png").mode == "P"
    data = load_segmentation_data(DataArguments(image_dir=str(images), mask_dir=str(masks), eval_split=None))
    for got, want in zip(_read_all(data), labels, strict=True):
        np.testing.assert_array_equal(got, want)


def test_colour_masks_decode_through_the_table(tmp_path):
    labels = _labels()
    labels[0][0, 0] = 255  # a void pixel, black in the masks
    images = _image_folder(tmp_path / "images", labels)
    masks = tmp_path / "masks"
    masks.mkdir()
    table = {**COLORS, 255: [0, 0, 0]}
    lut = np.zeros((256, 3), np.uint8)
    for class_id, color in table.items():
        lut[class_id] = color
    for i, label in enumerate(labels):
        PIL.Image.fromarray(lut[label]).save(masks / f"im{i}.png")
    colors_file = tmp_path / "colors.json"
    colors_file.write_text(json.dumps([{"id": k, "name": f"n{k}", "color": v} for k, v in table.items()]))
    data = load_segmentation_data(DataArguments(image_dir=str(images), mask_dir=str(masks), eval_split=None,
                                                label_colors=str(colors_file)))
    assert data.id2label == {0: "n0", 1: "n1", 2: "n2"}  # the ignore-index entry is not a class
    for got, want in zip(_read_all(data), labels, strict=True):
        np.testing.assert_array_equal(got, want)
    # Without the table the colour masks are refused, naming the way out.
    plain = load_segmentation_data(DataArguments(image_dir=str(images), mask_dir=str(masks), eval_split=None),
                                   id2label={0: "a", 1: "b", 2: "c"})
    with pytest.raises(BadExampleError, match="colour-coded mask.*--label_colors"):
        plain.train.load_example(1)


def test_unknown_colour_error_names_colour_pixel_count_and_file(tmp_path):
    label = np.zeros((4, 5), np.int64)
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[:] = COLORS[0]
    rgb[1, 1:4] = [1, 2, 3]  # 3 pixels of an unknown colour
    path = tmp_path / "mask_07.png"
    PIL.Image.fromarray(rgb).save(path)
    table = ColorTable(COLORS)
    with pytest.raises(ExampleProblem) as caught:
        table.decode(str(path))
    message = str(caught.value)
    assert "(1, 2, 3) #010203 (3 pixels)" in message and "mask_07.png" in message
    assert "--unknown_colors_to_ignore" in message
    lenient = ColorTable(COLORS, unknown_to_ignore=True, ignore_index=255)
    decoded = lenient.decode(str(path))
    label[1, 1:4] = 255
    np.testing.assert_array_equal(decoded, label)
    assert (lenient.unknown_pixels, lenient.files_with_unknown) == (3, 1)


def test_unknown_colour_is_a_named_bad_example_in_the_dataset(tmp_path):
    images = _image_folder(tmp_path / "images", [np.zeros((4, 4), np.uint8)])
    masks = tmp_path / "masks"
    masks.mkdir()
    PIL.Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(masks / "im0.png")
    colors_file = tmp_path / "colors.json"
    colors_file.write_text(json.dumps({str(k): v for k, v in COLORS.items()}))
    args = DataArguments(image_dir=str(images), mask_dir=str(masks), eval_split=None, label_colors=str(colors_file),
                         id2label_file=None)
    data = load_segmentation_data(args, id2label={0: "a", 1: "b", 2: "c"})
    with pytest.raises(BadExampleError, match=r"name 'im0.png'.*\(7, 7, 7\) #070707 \(16 pixels\)") as caught:
        data.train.load_example(0)
    assert caught.value.reason == "unknown_label_color"


def test_colour_table_rejects_shared_colours_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match="classes 0 and 1 share the colour"):
        ColorTable({0: [1, 2, 3], 1: [1, 2, 3]})
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"0": [1, 2, 300]}))
    with pytest.raises(ValueError, match=r"c.json.*class 0.*\[1, 2, 300\]"):
        ColorTable.from_file(bad)
    hexes = tmp_path / "hex.json"
    hexes.write_text(json.dumps({"label2color": {"0": "#ff0000", "1": [0, 255, 0]}, "id2label": {"0": "r", "1": "g"}}))
    table = ColorTable.from_file(hexes)
    assert table.colors == {0: (255, 0, 0), 1: (0, 255, 0)} and table.names == {0: "r", 1: "g"}


def test_find_columns():
    import datasets

    image, mask = datasets.Image(), datasets.Image()
    assert find_columns({"pixel_values": image, "annotation": mask}, None, None, "d") == ("pixel_values", "annotation")
    assert find_columns({"photo": image, "semantic_segmentation": mask, "id": 1}, None, None, "d") == (
        "photo", "semantic_segmentation")
    with pytest.raises(ValueError, match=r"several columns could hold the labels: \['label', 'mask'\]; pass "
                                         r"--label_column"):
        find_columns({"image": image, "label": mask, "mask": mask}, None, None, "d")
    assert find_columns({"image": image, "label": mask, "mask": mask}, None, "mask", "d") == ("image", "mask")
    with pytest.raises(ValueError, match="no image column found"):
        find_columns({"x": 1, "label": mask}, None, None, "d")
    with pytest.raises(ValueError, match="column 'img' not found"):
        find_columns({"image": image, "label": mask}, "img", None, "d")


def test_median_frequency_weights_form_and_clip():
    frequencies = ClassFrequencies(4)
    frequencies.add(np.array([[0, 0, 0, 1], [0, 0, 1, 2]]))  # class 3 absent
    frequencies.add(np.array([[0, 0, 0, 0], [0, 0, 0, 255]]))
    # freq: class 0 = 12/16, class 1 = 2/8, class 2 = 1/8; median 0.25
    weights = median_frequency_weights(frequencies)
    assert weights == [pytest.approx(0.25 / 0.75, abs=1e-4), 1.0, 2.0, 1.0]
    rare = ClassFrequencies(2)
    rare.add(np.array([[0] * 999 + [1]]))
    rare.add(np.array([[0] * 1000]))
    assert median_frequency_weights(rare)[1] == CLASS_WEIGHT_MAX  # 0.5005 / 0.001 = 500, clipped


def test_class_weights_file(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps([1, 2.5]))
    assert load_class_weights_file(path, 2) == [1.0, 2.5]
    with pytest.raises(ValueError, match="has 2 weights but the data has 3 classes"):
        load_class_weights_file(path, 3)


def test_hub_columns_are_found_or_the_ambiguity_named(tmp_path):
    import io

    import datasets

    def png(array):
        buffer = io.BytesIO()
        PIL.Image.fromarray(array).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    label = np.array([[0, 1], [2, 1]], np.uint8)
    image = np.zeros((2, 2, 3), np.uint8)
    for name, columns in (("found", ("pixel_values", "annotation")), ("ambiguous", ("image", "label", "mask"))):
        folder = tmp_path / name
        folder.mkdir()
        features = datasets.Features({c: datasets.Image() for c in columns})
        rows = {c: [png(image if i == 0 else label)] for i, c in enumerate(columns)}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    cache = str(tmp_path / "cache")
    data = load_segmentation_data(DataArguments(dataset_name=str(tmp_path / "found"), dataset_cache_dir=cache,
                                                eval_split=None), id2label={0: "a", 1: "b", 2: "c"})
    np.testing.assert_array_equal(data.train.load_example(0)[1], label)
    with pytest.raises(ValueError, match=r"several columns could hold the labels: \['label', 'mask'\]"):
        load_segmentation_data(DataArguments(dataset_name=str(tmp_path / "ambiguous"), dataset_cache_dir=cache,
                                             eval_split=None))
    data = load_segmentation_data(DataArguments(dataset_name=str(tmp_path / "ambiguous"), dataset_cache_dir=cache,
                                                eval_split=None, label_column="mask"), id2label={0: "a", 1: "b"})
    assert data.train.source.label_column == "mask"
