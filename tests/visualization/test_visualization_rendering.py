"""msaf_hf.visualization palettes and rendering, and the config's label2color field."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from msaf_hf import DSNetConfig, DSNetForSemanticSegmentation
from msaf_hf.visualization import (
    CAMVID_PALETTE,
    CITYSCAPES_PALETTE,
    colorize,
    distinct_palette,
    fusion_heatmap,
    label_colors,
    legend_image,
    load_mask,
    overlay,
    save_palette_mask,
    weight_map,
)
from msaf_hf.visualization.palettes import parse_color


def test_cityscapes_label_set_gets_the_cityscapes_palette():
    names = list(CITYSCAPES_PALETTE)
    colors = label_colors(dict(enumerate(names)))
    assert colors.shape == (19, 3) and colors.dtype == np.uint8
    assert tuple(colors[0]) == (128, 64, 128) and tuple(colors[13]) == (0, 0, 142)  # road, car
    # matched by name, whatever the order and case
    shuffled = {0: "Car", 1: "Road", **{i + 2: n for i, n in enumerate(n for n in names if n not in ("car", "road"))}}
    colors = label_colors(shuffled)
    assert tuple(colors[0]) == (0, 0, 142) and tuple(colors[1]) == (128, 64, 128)


def test_camvid_label_set_gets_the_camvid_palette():
    names = [
        "Sky",
        "Building",
        "Pole",
        "Road",
        "Sidewalk",
        "Tree",
        "SignSymbol",
        "Fence",
        "Car",
        "Pedestrian",
        "Bicyclist",
    ]
    colors = label_colors(dict(enumerate(names)))
    assert [tuple(c) for c in colors] == [CAMVID_PALETTE[n.lower()] for n in names]


def test_other_label_sets_get_a_fixed_distinct_palette():
    colors = label_colors({0: "a", 1: "b", 2: "c"})
    np.testing.assert_array_equal(colors, distinct_palette(3))
    big = distinct_palette(150)  # ADE20K-sized
    assert len({tuple(c) for c in big}) == 150
    np.testing.assert_array_equal(distinct_palette(150)[:19], distinct_palette(19))  # an id keeps its colour
    # neighbouring ids are far apart in colour
    gaps = np.abs(big[1:].astype(int) - big[:-1].astype(int)).sum(axis=1)
    assert gaps.min() > 60


def test_label2color_overrides_and_validates():
    colors = label_colors({0: "a", 1: "b"}, {"1": "#ff0080"})
    assert tuple(colors[1]) == (255, 0, 128)
    assert tuple(colors[0]) == tuple(distinct_palette(2)[0])
    with pytest.raises(ValueError, match="class id 5"):
        label_colors({0: "a", 1: "b"}, {5: [1, 2, 3]})
    with pytest.raises(ValueError, match=r"label2color\[0\]"):
        label_colors({0: "a"}, {0: [1, 2, 300]})
    assert parse_color([1, 2, 3]) == (1, 2, 3)


def test_config_label2color_is_documented_normalised_validated_and_round_trips(tmp_path):
    assert "label2color" in DSNetConfig.__doc__
    assert DSNetConfig().label2color is None  # default: derived from id2label when drawing
    config = DSNetConfig(num_labels=3, label2color={"2": "#0a0b0c", 0: (1, 2, 3)})
    assert config.label2color == {0: [1, 2, 3], 2: [10, 11, 12]}
    config.save_pretrained(tmp_path)
    reloaded = DSNetConfig.from_pretrained(tmp_path)
    assert reloaded.label2color == config.label2color
    colors = label_colors(reloaded.id2label, reloaded.label2color, reloaded.num_labels)
    assert tuple(colors[2]) == (10, 11, 12)
    with pytest.raises(ValueError, match="class id 3"):
        DSNetConfig(num_labels=3, label2color={3: [0, 0, 0]})
    with pytest.raises(ValueError, match=r"label2color\[1\]"):
        DSNetConfig(num_labels=3, label2color={1: [0, 0]})
    with pytest.raises(ValueError, match="keys must be class ids"):
        DSNetConfig(num_labels=3, label2color={"sky": [0, 0, 0]})


def test_palette_mask_round_trips_exactly(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, size=(23, 31))
    palette = distinct_palette(7)
    path = save_palette_mask(labels, palette, tmp_path / "m_mask.png")
    with Image.open(path) as image:
        assert image.mode == "P"
        assert np.array_equal(np.asarray(image), labels)  # pixel values are the class ids
        stored = np.asarray(image.getpalette()[: 7 * 3], dtype=np.uint8).reshape(7, 3)
    np.testing.assert_array_equal(stored, palette)
    np.testing.assert_array_equal(load_mask(path), labels)
    # more than 256 classes: 16-bit values, still exact
    many = rng.integers(0, 300, size=(9, 11))
    np.testing.assert_array_equal(load_mask(save_palette_mask(many, distinct_palette(300), tmp_path / "x.png")), many)


def test_overlay_blends_at_the_image_size():
    image = Image.new("RGB", (13, 7), (100, 100, 100))
    labels = np.zeros((7, 13), dtype=np.int64)
    labels[:, 6:] = 1
    palette = np.array([[255, 0, 0], [0, 0, 255]], dtype=np.uint8)
    out = overlay(image, labels, palette, alpha=0.25)
    assert out.size == image.size
    pixels = np.asarray(out).astype(int)
    np.testing.assert_array_equal(pixels[0, 0], [139, 75, 75])  # 0.75 * 100 + 0.25 * 255 = 138.75
    np.testing.assert_array_equal(pixels[0, 12], [75, 75, 139])
    np.testing.assert_array_equal(np.asarray(overlay(image, labels, palette, alpha=1.0)), colorize(labels, palette))
    with pytest.raises(ValueError, match="upsample"):
        overlay(image, labels[:, :5], palette)


def test_legend_lists_the_classes_with_their_colours():
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    full = legend_image({0: "road", 1: "tree", 2: "sky"}, palette)
    assert full.mode == "RGB"
    pixels = {tuple(p) for p in np.asarray(full).reshape(-1, 3)}
    assert {(255, 0, 0), (0, 255, 0), (0, 0, 255)} <= pixels
    only_two = legend_image({0: "road", 1: "tree", 2: "sky"}, palette, class_ids=[2, 0], shares=[0.5, 0.0, 0.5])
    pixels = {tuple(p) for p in np.asarray(only_two).reshape(-1, 3)}
    assert (0, 0, 255) in pixels and (0, 255, 0) not in pixels
    assert only_two.height < full.height


def test_fusion_heatmaps_show_the_msaf_weights_over_the_image(tiny_config):
    model = DSNetForSemanticSegmentation(tiny_config).eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 40, 48), output_attentions=True)
    assert len(outputs.attentions) == 3
    for weights in outputs.attentions:
        values = weight_map(weights[0])
        assert values.shape == (5, 6)
        np.testing.assert_allclose(values, weights[0].mean(dim=0).numpy(), rtol=1e-6)
    image = Image.new("RGB", (48, 40), (0, 0, 0))
    uniform_detail = np.ones((4, 5, 6), dtype=np.float32)  # detail branch fully trusted everywhere
    heat = np.asarray(fusion_heatmap(image, uniform_detail, alpha=1.0))
    assert heat.shape == (40, 48, 3)
    assert (heat == [180, 4, 38]).all()  # the colour map's "detail" end
    heat = np.asarray(fusion_heatmap(image, np.zeros((5, 6), dtype=np.float32), alpha=1.0))
    assert (heat == [59, 76, 192]).all()  # its "context" end
