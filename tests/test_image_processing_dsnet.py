"""Tests for msaf_hf.image_processing_dsnet.DSNetImageProcessor (PIL backend, no torchvision)."""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForSemanticSegmentation,
    PreTrainedConfig,
    PreTrainedModel,
    pipeline,
)
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.modeling_outputs import SemanticSegmenterOutput

from msaf_hf import image_processing_dsnet
from msaf_hf.image_processing_dsnet import DSNetImageProcessor

MODULE_PATH = Path(image_processing_dsnet.__file__)

# Heights/widths avoid 1, 3 and 4 so that the channel axis of HWC/CHW arrays is never ambiguous.
H, W = 6, 10


def _rgb(seed: int = 0, height: int = H, width: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _normalized(rgb: np.ndarray) -> np.ndarray:
    """Reference ImageNet normalisation of an HWC uint8 array, computed in float64, returned CHW."""
    x = rgb.astype(np.float64) / 255.0
    x = (x - np.array(IMAGENET_DEFAULT_MEAN)) / np.array(IMAGENET_DEFAULT_STD)
    return x.transpose(2, 0, 1)


# ---------------------------------------------------------------------- basic outputs


def test_defaults_follow_dsnet_recipe():
    processor = DSNetImageProcessor()
    assert processor.do_resize is False
    assert processor.do_rescale is True and processor.rescale_factor == pytest.approx(1 / 255)
    assert tuple(processor.image_mean) == (0.485, 0.456, 0.406)
    assert tuple(processor.image_std) == (0.229, 0.224, 0.225)
    assert processor.ignore_index == 255
    assert processor.model_input_names == ["pixel_values"]
    assert processor.backend == "pil"


def test_shapes_and_dtypes_with_segmentation_maps():
    processor = DSNetImageProcessor()
    images = [_rgb(0), _rgb(1)]
    maps = [np.full((H, W), 2, dtype=np.uint8), np.full((H, W), 7, dtype=np.uint8)]
    out = processor(images, segmentation_maps=maps)
    assert set(out.keys()) == {"pixel_values", "labels"}
    assert out["pixel_values"].shape == (2, 3, H, W)
    assert out["pixel_values"].dtype == torch.float32
    assert out["labels"].shape == (2, H, W)
    assert out["labels"].dtype == torch.int64
    assert out["labels"][0].unique().tolist() == [2]
    assert out["labels"][1].unique().tolist() == [7]


def test_single_image_gets_batch_dimension_and_native_size():
    out = DSNetImageProcessor()(_rgb(0, 7, 9))
    assert out["pixel_values"].shape == (1, 3, 7, 9)  # odd size kept: no resizing by default


def test_normalization_exact_on_known_pixel():
    image = np.zeros((H, W, 3), dtype=np.uint8)
    image[2, 5] = (255, 0, 128)
    pixel = DSNetImageProcessor()(image)["pixel_values"][0, :, 2, 5]
    expected = torch.tensor(
        [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225], dtype=torch.float32
    )
    torch.testing.assert_close(pixel, expected)
    # And the whole image against an independent float64 reference.
    full = DSNetImageProcessor()(_rgb(3))["pixel_values"][0]
    torch.testing.assert_close(full, torch.from_numpy(_normalized(_rgb(3))).float())


def test_rescale_and_normalize_can_be_disabled_but_output_stays_float32():
    image = _rgb(4)
    out = DSNetImageProcessor(do_rescale=False, do_normalize=False)(image)["pixel_values"]
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0], torch.from_numpy(image.transpose(2, 0, 1).astype(np.float32)))


def test_return_tensors_np_and_none():
    processor = DSNetImageProcessor()
    as_np = processor(_rgb(0), return_tensors="np")["pixel_values"]
    assert isinstance(as_np, np.ndarray) and as_np.shape == (1, 3, H, W) and as_np.dtype == np.float32
    # Different sizes cannot be stacked, but are fine as a list of arrays.
    as_list = processor([_rgb(0, 6, 10), _rgb(1, 8, 12)], return_tensors=None)["pixel_values"]
    assert [a.shape for a in as_list] == [(3, 6, 10), (3, 8, 12)]


# ---------------------------------------------------------------------- resizing


def test_resize_on_uses_pil_bilinear_then_normalizes():
    image = _rgb(5)
    out = DSNetImageProcessor(do_resize=True, size={"height": 12, "width": 7})(image)["pixel_values"]
    assert out.shape == (1, 3, 12, 7)
    reference = np.array(PIL.Image.fromarray(image).resize((7, 12), PIL.Image.Resampling.BILINEAR))
    torch.testing.assert_close(out[0], torch.from_numpy(_normalized(reference)).float())


def test_resize_can_be_enabled_per_call():
    processor = DSNetImageProcessor()
    assert processor(_rgb(0), do_resize=True, size={"height": 8, "width": 8})["pixel_values"].shape == (1, 3, 8, 8)
    assert processor(_rgb(0))["pixel_values"].shape == (1, 3, H, W)


@pytest.mark.parametrize("size", [{"height": 13, "width": 17}, {"height": 3, "width": 5}])
def test_segmentation_map_resize_is_nearest_and_keeps_only_existing_labels(size):
    rng = np.random.default_rng(0)
    label_map = rng.choice(np.array([0, 3, 9, 255], dtype=np.uint8), size=(H, W))
    out = DSNetImageProcessor(do_resize=True, size=size)(_rgb(0), segmentation_maps=label_map)
    labels = out["labels"][0]
    assert labels.shape == (size["height"], size["width"])
    assert out["pixel_values"].shape[-2:] == labels.shape  # image and labels land on the same grid
    assert set(labels.unique().tolist()) <= {0, 3, 9, 255}
    reference = np.array(
        PIL.Image.fromarray(label_map).resize((size["width"], size["height"]), PIL.Image.Resampling.NEAREST)
    )
    np.testing.assert_array_equal(labels.numpy(), reference)


def test_segmentation_map_resize_handles_labels_above_255():
    label_map = np.array([[0, 300], [70000, 5]], dtype=np.int64).repeat(3, axis=0).repeat(5, axis=1)
    labels = DSNetImageProcessor(do_resize=True, size={"height": 12, "width": 20})(
        _rgb(0), segmentation_maps=label_map
    )["labels"][0]
    assert set(labels.unique().tolist()) == {0, 300, 70000, 5}
    assert labels[0, 0] == 0 and labels[0, -1] == 300 and labels[-1, 0] == 70000 and labels[-1, -1] == 5


# ---------------------------------------------------------------------- labels


def test_reduce_labels_mapping():
    label_map = np.array([[0, 1, 2, 150], [255, 0, 3, 1], [5, 5, 5, 5], [1, 1, 1, 1], [2, 2, 2, 2], [0, 0, 0, 0]],
                         dtype=np.uint8)
    image = _rgb(0, 6, 4)
    processor = DSNetImageProcessor()
    unchanged = processor(image, segmentation_maps=label_map)["labels"][0]
    np.testing.assert_array_equal(unchanged.numpy(), label_map.astype(np.int64))
    reduced = processor(image, segmentation_maps=label_map, do_reduce_labels=True)["labels"][0]
    expected = label_map.astype(np.int64) - 1
    expected[(label_map == 0) | (label_map == 255)] = 255
    np.testing.assert_array_equal(reduced.numpy(), expected)
    assert reduced[0].tolist() == [255, 0, 1, 149]
    assert reduced[1].tolist() == [255, 255, 2, 0]


def test_reduce_labels_with_custom_ignore_index():
    label_map = np.array([[0, 1], [2, 7]]).repeat(3, axis=0).repeat(5, axis=1)
    processor = DSNetImageProcessor(do_reduce_labels=True, ignore_index=7)
    labels = processor(_rgb(0), segmentation_maps=label_map)["labels"][0]
    assert labels[0, 0] == 7 and labels[0, -1] == 0 and labels[-1, 0] == 1 and labels[-1, -1] == 7


def test_reduce_labels_does_not_touch_pixel_values():
    image = _rgb(2)
    label_map = np.ones((H, W), dtype=np.uint8)
    plain = DSNetImageProcessor()(image)["pixel_values"]
    with_reduce = DSNetImageProcessor(do_reduce_labels=True)(image, segmentation_maps=label_map)
    torch.testing.assert_close(with_reduce["pixel_values"], plain)
    assert with_reduce["labels"].unique().tolist() == [0]


def test_segmentation_map_input_kinds_agree():
    label_map = np.random.default_rng(1).integers(0, 11, size=(H, W)).astype(np.uint8)
    processor = DSNetImageProcessor()
    expected = torch.from_numpy(label_map.astype(np.int64))
    for maps in (
        label_map,
        PIL.Image.fromarray(label_map),  # mode "L"
        PIL.Image.fromarray(label_map).convert("P"),
        torch.from_numpy(label_map),
        label_map[None],  # stacked batch of one
        [label_map[..., None]],  # explicit singleton channel
    ):
        torch.testing.assert_close(processor(_rgb(0), segmentation_maps=maps)["labels"][0], expected)


# ---------------------------------------------------------------------- input kinds


def test_pil_numpy_and_tensor_inputs_agree():
    image = _rgb(7)
    processor = DSNetImageProcessor()
    reference = processor(image)["pixel_values"]
    for variant in (
        PIL.Image.fromarray(image),
        torch.from_numpy(image),  # HWC uint8 tensor
        torch.from_numpy(image).permute(2, 0, 1).contiguous(),  # CHW uint8 tensor
        image.transpose(2, 0, 1).copy(),  # CHW numpy
        [image],
        image[None],  # stacked (1, H, W, C) batch
    ):
        torch.testing.assert_close(processor(variant)["pixel_values"], reference)


def test_stacked_batch_is_split_into_images():
    batch = np.stack([_rgb(0), _rgb(1), _rgb(2)])
    out = DSNetImageProcessor()(batch)["pixel_values"]
    assert out.shape == (3, 3, H, W)
    torch.testing.assert_close(out[2], torch.from_numpy(_normalized(_rgb(2))).float())


def test_grayscale_inputs_become_three_equal_channels():
    gray = _rgb(0)[..., 0]
    processor = DSNetImageProcessor()
    expected = processor(np.repeat(gray[..., None], 3, axis=-1))["pixel_values"]
    for variant in (gray, PIL.Image.fromarray(gray), torch.from_numpy(gray), gray[..., None]):
        torch.testing.assert_close(processor(variant)["pixel_values"], expected)


def test_rgba_is_composited_onto_white():
    rgba = np.zeros((H, W, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[0, 0, 3] = 0  # fully transparent -> white
    rgba[1, 1, 3] = 255  # opaque -> its own colour
    processor = DSNetImageProcessor()
    for variant in (rgba, PIL.Image.fromarray(rgba, mode="RGBA")):
        out = processor(variant)["pixel_values"][0]
        white = (1.0 - torch.tensor(IMAGENET_DEFAULT_MEAN)) / torch.tensor(IMAGENET_DEFAULT_STD)
        torch.testing.assert_close(out[:, 0, 0], white.float())
        colour = (torch.tensor([10, 20, 30]) / 255 - torch.tensor(IMAGENET_DEFAULT_MEAN)) / torch.tensor(
            IMAGENET_DEFAULT_STD
        )
        torch.testing.assert_close(out[:, 1, 1], colour.float())


# ---------------------------------------------------------------------- errors


def test_16_bit_png_ramp_is_scaled_by_its_bit_depth(tmp_path):
    ramp = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    PIL.Image.fromarray(ramp).save(tmp_path / "ramp.png")
    image = PIL.Image.open(tmp_path / "ramp.png")
    assert image.mode in ("I;16", "I")
    processor = DSNetImageProcessor(do_normalize=False)
    expected = torch.from_numpy(ramp.astype(np.float64) / 65535.0)
    for kind, value in (("PIL " + image.mode, image), ("numpy uint16", ramp), ("PIL I", image.convert("I"))):
        pixels = processor(value, return_tensors="pt")["pixel_values"][0]
        assert pixels.shape == (3, 256, 256), kind
        assert torch.allclose(pixels.double(), expected.expand(3, -1, -1), atol=1e-6), kind  # no clipping at 255
    # The 8-bit image of the same ramp gives the same values up to its quantisation.
    eight_bit = processor(np.round(ramp / 257.0).astype(np.uint8), return_tensors="pt")["pixel_values"][0]
    assert (eight_bit.double() - expected).abs().max() <= 0.5 / 255 + 1e-6


def test_float_input_already_in_0_1_warns_before_rescaling_again(caplog):
    from transformers.utils import logging as hf_logging

    image_processing_dsnet.logger.warning_once.cache_clear()
    hf_logging.enable_propagation()
    try:
        processor = DSNetImageProcessor()
        with caplog.at_level("WARNING"):
            processor(np.random.default_rng(0).random((H, W, 3)).astype(np.float32))
        assert "already rescaled" in caplog.text and "do_rescale=False" in caplog.text
        image_processing_dsnet.logger.warning_once.cache_clear()
        caplog.clear()
        with caplog.at_level("WARNING"):
            processor(np.random.default_rng(0).random((H, W, 3)).astype(np.float32), do_rescale=False)
            processor((np.random.default_rng(0).random((H, W, 3)) * 255).astype(np.float32))
        assert "already rescaled" not in caplog.text
    finally:
        hf_logging.disable_propagation()


def test_error_when_map_count_differs_from_image_count():
    with pytest.raises(ValueError, match=r"2 image\(s\) but 1 segmentation map"):
        DSNetImageProcessor()([_rgb(0), _rgb(1)], segmentation_maps=[np.zeros((H, W), np.uint8)])


def test_error_when_map_size_differs_from_image_size():
    with pytest.raises(ValueError, match=r"segmentation map 0 has size \(5, 10\).*\(6, 10\)"):
        DSNetImageProcessor()(_rgb(0), segmentation_maps=np.zeros((5, W), np.uint8))


def test_error_on_colour_coded_map():
    with pytest.raises(ValueError, match="class ids"):
        DSNetImageProcessor()([_rgb(0)], segmentation_maps=[_rgb(1)])


def test_error_on_float_map_with_fractions():
    with pytest.raises(ValueError, match="integer class ids"):
        DSNetImageProcessor()(_rgb(0), segmentation_maps=np.full((H, W), 0.5))


@pytest.mark.parametrize("channels", [2, 5])
def test_error_on_unsupported_channel_count(channels):
    with pytest.raises(ValueError, match="channel axis"):
        DSNetImageProcessor()(np.zeros((H, W, channels), dtype=np.uint8))


def test_error_on_bad_shapes_and_types():
    with pytest.raises(ValueError, match="shape"):
        DSNetImageProcessor()([np.zeros((2, H, W, 3), dtype=np.uint8)])  # 4-D inside a list
    with pytest.raises(TypeError, match="unsupported type"):
        DSNetImageProcessor()([12345])
    with pytest.raises(ValueError, match="empty"):
        DSNetImageProcessor()([])


def test_error_when_stacking_different_sizes():
    with pytest.raises(ValueError, match="different sizes"):
        DSNetImageProcessor()([_rgb(0, 6, 10), _rgb(1, 8, 12)])


def test_error_on_non_int_ignore_index():
    with pytest.raises(TypeError, match="ignore_index"):
        DSNetImageProcessor(ignore_index=2.5)


# ---------------------------------------------------------------------- post-processing


class _Outputs(dict):
    """Minimal ModelOutput stand-in: attribute and key access to `logits`."""

    @property
    def logits(self):
        return self["logits"]


def test_post_process_without_target_sizes_argmaxes_at_logit_resolution():
    logits = torch.zeros(2, 3, 2, 2)
    logits[0, 2, 0, 1] = 5.0
    logits[0, 1, 1, 0] = 5.0
    logits[1, 1] = 1.0
    result = DSNetImageProcessor().post_process_semantic_segmentation(_Outputs(logits=logits))
    assert len(result) == 2
    assert result[0].dtype == torch.int64 and result[0].shape == (2, 2)
    assert result[0].tolist() == [[0, 2], [1, 0]]
    assert result[1].tolist() == [[1, 1], [1, 1]]


def test_post_process_upsamples_to_each_target_size():
    # Left column says class 1, right column says class 2.
    logits = torch.zeros(2, 3, 2, 2)
    logits[:, 1, :, 0] = 5.0
    logits[:, 2, :, 1] = 5.0
    processor = DSNetImageProcessor()
    result = processor.post_process_semantic_segmentation(_Outputs(logits=logits), target_sizes=[(4, 6), (3, 8)])
    assert [r.shape for r in result] == [(4, 6), (3, 8)]
    assert result[0].tolist() == [[1, 1, 1, 2, 2, 2]] * 4
    assert result[1].tolist() == [[1, 1, 1, 1, 2, 2, 2, 2]] * 3
    as_tensor = processor.post_process_semantic_segmentation(logits, target_sizes=torch.tensor([[4, 6], [3, 8]]))
    assert [r.tolist() for r in as_tensor] == [r.tolist() for r in result]


def test_post_process_uses_bilinear_without_align_corners():
    # Class 0 falls from 1 to 0 across two columns, class 1 is a constant 0.7. Upsampling 2 -> 4 columns
    # gives class-0 scores [1, .75, .25, 0] with align_corners=False but [1, .67, .33, 0] with True.
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 0, 0] = torch.tensor([1.0, 0.0])
    logits[0, 1] = 0.7
    result = DSNetImageProcessor().post_process_semantic_segmentation(logits, target_sizes=[(1, 4)])
    assert result[0].tolist() == [[0, 0, 1, 1]]


def test_post_process_can_return_scores():
    logits = torch.randn(1, 4, 3, 5)
    result = DSNetImageProcessor().post_process_semantic_segmentation(
        logits, target_sizes=[(6, 10)], return_segmentation_scores=True
    )
    assert result[0]["segmentation_scores"].shape == (4, 6, 10)
    torch.testing.assert_close(result[0]["segmentation"], result[0]["segmentation_scores"].argmax(0))


def test_post_process_errors():
    processor = DSNetImageProcessor()
    logits = torch.zeros(2, 3, 2, 2)
    with pytest.raises(ValueError, match="2 logits"):
        processor.post_process_semantic_segmentation(logits, target_sizes=[(4, 4)])
    with pytest.raises(ValueError, match=r"target_sizes\[1\]"):
        processor.post_process_semantic_segmentation(logits, target_sizes=[(4, 4), (0, 4)])
    with pytest.raises(ValueError, match="no `logits`"):
        processor.post_process_semantic_segmentation({"scores": logits})
    with pytest.raises(ValueError, match=r"\(batch, num_labels, height, width\)"):
        processor.post_process_semantic_segmentation(torch.zeros(3, 2, 2))


# ---------------------------------------------------------------------- save / load / auto / pipeline


class _TinySegConfig(PreTrainedConfig):
    model_type = "dsnet_test_ip"


class _TinySegModel(PreTrainedModel):
    """A 1x1-conv 'segmenter' whose logits come out at half resolution, like a real decoder's."""

    config_class = _TinySegConfig
    main_input_name = "pixel_values"

    def __init__(self, config):
        super().__init__(config)
        self.classifier = nn.Conv2d(3, config.num_labels, kernel_size=1)
        self.post_init()

    def forward(self, pixel_values, labels=None, **kwargs):
        return SemanticSegmenterOutput(logits=self.classifier(pixel_values)[..., ::2, ::2])


@pytest.fixture(scope="module")
def registered():
    AutoConfig.register(_TinySegConfig.model_type, _TinySegConfig, exist_ok=True)
    AutoModelForSemanticSegmentation.register(_TinySegConfig, _TinySegModel, exist_ok=True)
    AutoImageProcessor.register(_TinySegConfig, image_processor_classes={"pil": DSNetImageProcessor}, exist_ok=True)


def test_save_and_load_round_trip(tmp_path, registered):
    processor = DSNetImageProcessor(
        do_resize=True, size={"height": 12, "width": 8}, do_reduce_labels=True, ignore_index=250
    )
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "DSNetImageProcessor"
    assert saved["size"] == {"height": 12, "width": 8} and saved["ignore_index"] == 250

    for loaded in (DSNetImageProcessor.from_pretrained(tmp_path), AutoImageProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is DSNetImageProcessor
        assert loaded.to_dict() == processor.to_dict()
        label_map = np.zeros((H, W), dtype=np.uint8)
        out, expected = (p(_rgb(0), segmentation_maps=label_map) for p in (loaded, processor))
        torch.testing.assert_close(out["pixel_values"], expected["pixel_values"])
        assert out["labels"].unique().tolist() == [250]


def test_pipeline_image_segmentation(tmp_path, registered):
    id2label = {0: "sky", 1: "road", 2: "car"}
    config = _TinySegConfig(id2label=id2label)
    model = _TinySegModel(config).eval()
    model.save_pretrained(tmp_path)
    DSNetImageProcessor().save_pretrained(tmp_path)
    segmenter = pipeline("image-segmentation", model=str(tmp_path))
    assert isinstance(segmenter.image_processor, DSNetImageProcessor)

    image = PIL.Image.fromarray(_rgb(9, 10, 14))
    annotations = segmenter(image)
    # Masks are at the original image size although the logits are at half resolution.
    assert all(a["mask"].size == (14, 10) for a in annotations)
    pixel_values = DSNetImageProcessor()(image)["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values).logits
    expected = DSNetImageProcessor().post_process_semantic_segmentation(logits, target_sizes=[(10, 14)])[0]
    for annotation in annotations:
        class_id = {name: i for i, name in id2label.items()}[annotation["label"]]
        np.testing.assert_array_equal(np.array(annotation["mask"]) == 255, (expected == class_id).numpy())


def test_module_is_self_contained_for_hub_remote_code():
    tree = ast.parse(MODULE_PATH.read_text())
    allowed = {"numpy", "PIL", "torch", "transformers", "collections", "typing"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports break Hub remote code"
            assert node.module.split(".")[0] in allowed, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] in allowed, alias.name


@pytest.mark.slow
def test_loads_as_hub_remote_code_without_msaf_hf(tmp_path):
    """Simulate a Hub repo: the module file plus an auto_map, loaded with msaf_hf made unimportable."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(MODULE_PATH, repo / MODULE_PATH.name)
    config = DSNetImageProcessor(do_reduce_labels=True).to_dict()
    config["auto_map"] = {"AutoImageProcessor": "image_processing_dsnet.DSNetImageProcessor"}
    (repo / "preprocessor_config.json").write_text(json.dumps(config, default=int))
    script = (
        "import sys; sys.modules['msaf_hf'] = None\n"
        "import numpy as np\n"
        "from transformers import AutoImageProcessor\n"
        f"p = AutoImageProcessor.from_pretrained({str(repo)!r}, trust_remote_code=True)\n"
        "assert type(p).__module__.startswith('transformers_modules'), type(p).__module__\n"
        "out = p(np.zeros((6, 10, 3), np.uint8), segmentation_maps=np.zeros((6, 10), np.uint8))\n"
        "assert out['labels'].unique().tolist() == [255] and out['pixel_values'].shape == (1, 3, 6, 10)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_channels_other_than_rgb_pass_with_matching_mean_and_std():
    """A DSNetConfig(num_channels=4) model needs 4-channel inputs: kept with do_convert_rgb=False."""
    processor = DSNetImageProcessor()
    image = np.random.default_rng(0).integers(0, 256, (12, 16, 4), dtype=np.uint8)
    mean, std = [0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]
    pixel_values = processor(image, do_convert_rgb=False, image_mean=mean, image_std=std).pixel_values
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]  # noqa: E501
    torch.testing.assert_close(pixel_values[0], expected)
    with pytest.raises(ValueError, match="4 channels but image_mean has 3 values"):
        processor(image, do_convert_rgb=False)


def test_one_label_logits_post_process_as_binary_segmentation():
    logits = torch.tensor([[[[-1.0, 2.0], [0.5, -3.0]]]])  # (1, 1, 2, 2): a binary segmenter's foreground logit
    (segmentation,) = DSNetImageProcessor().post_process_semantic_segmentation(logits)
    assert segmentation.tolist() == [[0, 1], [1, 0]]  # argmax over one channel would be all 0
    (resized,) = DSNetImageProcessor().post_process_semantic_segmentation(logits, target_sizes=[(4, 4)])
    assert resized.shape == (4, 4) and set(resized.unique().tolist()) == {0, 1}


def test_label_map_resize_and_class_ids_have_one_owner():
    """`resize_label_map` (nearest, on the grid PIL gives the image) and `label_map_from_scores` are shared by the
    processor, the training augmentation, evaluation and the pictures."""
    from msaf_hf.data.transforms import SegmentationTrainTransform
    from msaf_hf.image_processing_dsnet import label_map_from_scores, resize_label_map

    rng = np.random.default_rng(0)
    label = rng.integers(0, 70000, size=(13, 17)).astype(np.int64)  # ids past uint8/uint16 survive
    resized = resize_label_map(label, (29, 7))
    pil = np.asarray(PIL.Image.fromarray(label.astype(np.int32)).resize((7, 29), PIL.Image.Resampling.NEAREST))
    assert resized.dtype == np.int64 and np.array_equal(resized, pil)

    # The training augmentation resizes labels with it: 5x12 scaled by 0.9 to 5x11 (where index arithmetic at pixel
    # centres picks other pixels than PIL), cropped whole, never flipped.
    label = np.arange(60, dtype=np.int64).reshape(5, 12)
    transform = SegmentationTrainTransform(crop_size=(5, 11), scale_range=(0.9, 0.9), hflip_probability=0.0)
    image = PIL.Image.fromarray(rng.integers(0, 255, size=(5, 12, 3), dtype=np.uint8))
    _, augmented = transform(image, label, np.random.default_rng(0))
    assert np.array_equal(augmented.numpy(), resize_label_map(label, (5, 11)))

    logits = torch.tensor([[[[0.2, -1.0]], [[0.1, 3.0]]]])  # (1, 2, 1, 2)
    assert label_map_from_scores(logits).tolist() == [[[0, 1]]]
    assert label_map_from_scores(torch.tensor([[[[-0.5, 0.5]]]])).tolist() == [[[0, 1]]]  # binary: logit > 0
