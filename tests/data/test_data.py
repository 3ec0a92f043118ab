"""Tests of msaf_hf.data: every source type, label handling, bad examples, augmentation, synthetic data."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import require_camvid
from transformers import HfArgumentParser
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from msaf_hf.data import (
    CITYSCAPES_ID2LABEL,
    BadExampleError,
    DataArguments,
    LabelMapper,
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    collate_fn,
    eval_image_processor,
    example_rng,
    load_id2label_file,
    load_segmentation_data,
    make_dataloader,
    make_synthetic_segmentation_dataset,
    synthetic_id2label,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CAMVID = SHARED / "data" / "camvid"
MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)


# ---------------------------------------------------------------------------------------------- helpers
def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_hub_folder(folder: Path, splits: dict[str, list[tuple[bytes, bytes, str]]]) -> Path:
    """A local folder laid out like a Hub dataset repo: <split>-00000-of-00001.parquet with Image columns."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.Image(), "name": datasets.Value("string")}
    )
    for split, rows in splits.items():
        columns = {
            "image": [{"bytes": image, "path": None} for image, _, _ in rows],
            "label": [{"bytes": label, "path": None} for _, label, _ in rows],
            "name": [name for _, _, name in rows],
        }
        shard = folder / f"{split}-00000-of-00001.parquet"
        datasets.Dataset.from_dict(columns, features=features).to_parquet(str(shard))
    return folder


def _write_pair_folder(root: Path, items: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[Path, Path]:
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for stem, (image, label) in items.items():
        PIL.Image.fromarray(image).save(images / f"{stem}.png")
        PIL.Image.fromarray(label.astype(np.uint8)).save(masks / f"{stem}.png")
    return images, masks


def _folder_args(images: Path, masks: Path, **kwargs) -> DataArguments:
    defaults = dict(image_dir=str(images), mask_dir=str(masks), crop_size=[8, 8], scale_range=[1.0, 1.0])
    defaults.update(kwargs)
    return DataArguments(**defaults)


def _denormalise(pixel_values: torch.Tensor) -> torch.Tensor:
    return pixel_values * STD + MEAN


# ---------------------------------------------------------------------------------------------- arguments
def test_data_arguments_parse_with_hf_argument_parser():
    (args,) = HfArgumentParser(DataArguments).parse_args_into_dataclasses(
        ["--synthetic", "--crop_size", "32", "48", "--void_labels", "11", "12", "--scale_range", "0.75", "1.5",
         "--eval_split", "none", "--eval_size", "64"]
    )
    assert args.synthetic is True and args.crop_size == [32, 48] and args.void_labels == [11, 12]
    assert args.scale_range == [0.75, 1.5] and args.eval_split is None and args.eval_size == [64]
    assert args.resolved_crop_size() == (32, 48)
    (defaults,) = HfArgumentParser(DataArguments).parse_args_into_dataclasses([])
    assert defaults.ignore_index == 255 and defaults.hflip_probability == 0.5 and defaults.scale_range == [0.5, 2.0]
    assert defaults.resolved_crop_size() == (512, 512)
    assert DataArguments(synthetic=True, synthetic_image_size=[40, 56]).resolved_crop_size() == (40, 56)
    # Config files may give one number where a list is expected.
    (from_dict,) = HfArgumentParser(DataArguments).parse_dict({"crop_size": 64, "void_labels": 11, "synthetic": True})
    assert from_dict.resolved_crop_size() == (64, 64) and from_dict.void_labels == [11]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scale_range=[2.0, 1.0]), "scale_range"),
        (dict(crop_size=[1, 2, 3]), "crop_size"),
        (dict(hflip_probability=1.5), "hflip_probability"),
        (dict(mask_dir="x"), "--mask_dir needs --image_dir"),
        (dict(eval_split_fraction=1.0), "eval_split_fraction"),
        (dict(max_train_samples=0), "max_train_samples"),
    ],
)
def test_data_arguments_reject_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataArguments(**kwargs)


def test_exactly_one_source_is_required():
    with pytest.raises(ValueError, match="exactly one data source"):
        load_segmentation_data(DataArguments())
    with pytest.raises(ValueError, match=r"exactly one data source.*'hub', 'synthetic'"):
        load_segmentation_data(DataArguments(dataset_name="x", synthetic=True))


# ---------------------------------------------------------------------------------------------- hub folder
def test_hub_folder_with_id2label_json_and_void_labels(tmp_path):
    label = np.array([[0, 1, 2, 9]] * 4, dtype=np.uint8)  # 9 = void
    rows = [(_png(_rgb(4, 4, i)), _png(label), f"frame{i}") for i in range(3)]
    folder = _write_hub_folder(tmp_path / "ds", {"train": rows, "validation": rows[:1]})
    (folder / "id2label.json").write_text(json.dumps({"0": "a", "1": "b", "2": "c"}))
    data = load_segmentation_data(
        DataArguments(dataset_name=str(folder), dataset_cache_dir=str(tmp_path / "cache"), void_labels=[9],
                      crop_size=[4, 4], scale_range=[1.0, 1.0], hflip_probability=0.0, max_train_samples=2),
        seed=0,
    )
    assert data.id2label == {0: "a", 1: "b", 2: "c"} and data.num_labels == 3 and data.label2id["c"] == 2
    assert len(data.train) == 2 and len(data.eval) == 1
    example = data.train[1]
    assert example["pixel_values"].dtype == torch.float32 and example["pixel_values"].shape == (3, 4, 4)
    assert example["labels"].dtype == torch.int64
    assert example["labels"][0].tolist() == [0, 1, 2, 255]
    # Image content survives decoding + normalisation exactly (PNG is lossless).
    torch.testing.assert_close(
        _denormalise(example["pixel_values"]) * 255, torch.from_numpy(_rgb(4, 4, 1)).permute(2, 0, 1).float(),
        atol=1e-3, rtol=0,
    )
    evaluation = data.eval[0]
    assert evaluation["labels"][0].tolist() == [0, 1, 2, 255]


def test_hub_folder_class_label_feature_gives_id2label(tmp_path):
    import datasets

    names = ["background", "cat", "dog"]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.List(datasets.List(datasets.ClassLabel(names=names)))}
    )
    label = [[0, 1, 2], [2, 1, 0]]
    columns = {"image": [{"bytes": _png(_rgb(2, 3, 0)), "path": None}], "label": [label]}
    ds = datasets.Dataset.from_dict(columns, features=features)
    folder = tmp_path / "cl"
    folder.mkdir()
    ds.to_parquet(str(folder / "train-00000-of-00001.parquet"))
    data = load_segmentation_data(
        DataArguments(dataset_name=str(folder), dataset_cache_dir=str(tmp_path / "cache"), eval_split=None)
    )
    assert data.id2label == {0: "background", 1: "cat", 2: "dog"} and data.eval is None
    _, mapped, _ = data.train.load_example(0)
    assert mapped.tolist() == label


def test_id2label_file_overrides_and_packaged_lookup(tmp_path):
    dsd = make_synthetic_segmentation_dataset(num_train=2, num_eval=1, image_size=(16, 16), num_labels=3)
    folder = tmp_path / "synth"
    folder.mkdir()
    for split, ds in dsd.items():
        ds.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    names_file = tmp_path / "names.json"
    names_file.write_text(json.dumps(["bg", "round", "boxy", "spare"]))  # a list works too
    data = load_segmentation_data(
        DataArguments(dataset_name=str(folder), dataset_cache_dir=str(tmp_path / "cache"),
                      id2label_file=str(names_file), crop_size=[16, 16])
    )
    assert data.id2label == {0: "bg", 1: "round", 2: "boxy", 3: "spare"} and data.num_labels == 4
    assert data.train[0]["labels"].shape == (16, 16)
    # The CamVid names ship with the package and are found by bare file name.
    camvid = load_id2label_file("camvid_id2label.json")
    assert len(camvid) == 11 and camvid[0] == "Sky" and camvid[10] == "Bicyclist"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_id2label_file("nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"0": "a", "2": "c"}))
    with pytest.raises(ValueError, match=r"exactly 0\.\.1"):
        load_id2label_file(bad)


def test_hub_folder_missing_and_empty_splits(tmp_path):
    rows = [(_png(_rgb(4, 4, 0)), _png(np.zeros((4, 4), np.uint8)), "a")]
    folder = _write_hub_folder(tmp_path / "only_train", {"train": rows})
    (folder / "id2label.json").write_text(json.dumps({"0": "a"}))
    cache = str(tmp_path / "cache")
    with pytest.raises(ValueError, match=r"split 'validation' not found.*--eval_split_fraction"):
        load_segmentation_data(DataArguments(dataset_name=str(folder), dataset_cache_dir=cache))
    with pytest.raises(ValueError, match=r"split 'training' not found \(available: \['train'\]\)"):
        load_segmentation_data(DataArguments(dataset_name=str(folder), dataset_cache_dir=cache, train_split="training"))
    with pytest.raises(ValueError, match="column 'img' not found"):
        load_segmentation_data(
            DataArguments(dataset_name=str(folder), dataset_cache_dir=cache, eval_split=None, image_column="img")
        )


def test_empty_split_error_names_split_and_source(tmp_path):
    import datasets

    from msaf_hf.data import LabelMapper, SegmentationDataset, SegmentationEvalTransform
    from msaf_hf.data.sources import HubSource

    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    empty = datasets.Dataset.from_dict({"image": [], "label": []}, features=features)
    source = HubSource(empty, "image", "label", None, "dataset 'x', split 'validation'")
    with pytest.raises(ValueError, match=r"Split 'eval' is empty \(dataset 'x', split 'validation'\)"):
        SegmentationDataset(source, "eval", SegmentationEvalTransform(), LabelMapper(2))
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    with pytest.raises(ValueError, match=r"Split 'train' is empty: no images .* in --image_dir"):
        load_segmentation_data(DataArguments(image_dir=str(tmp_path / "img"), mask_dir=str(tmp_path / "msk")))


# ---------------------------------------------------------------------------------------------- folders
def test_image_mask_folders_matched_by_stem_with_eval_folders(tmp_path):
    label = np.arange(64).reshape(8, 8) % 3
    images, masks = _write_pair_folder(tmp_path / "train", {f"im{i}": (_rgb(8, 8, i), label) for i in range(3)})
    eval_images, eval_masks = _write_pair_folder(tmp_path / "val", {"v0": (_rgb(8, 8, 9), label)})
    (masks / "orphan.png").write_bytes(_png(label.astype(np.uint8)))  # a mask without image: ignored
    data = load_segmentation_data(
        _folder_args(images, masks, eval_image_dir=str(eval_images), eval_mask_dir=str(eval_masks),
                     hflip_probability=0.0)
    )
    assert len(data.train) == 3 and len(data.eval) == 1
    assert data.id2label == {0: "class_0", 1: "class_1", 2: "class_2"}  # small set: inferred by a scan
    image, mapped, name = data.train.load_example(2)
    assert name == "im2.png" and np.array_equal(np.asarray(image), _rgb(8, 8, 2)) and np.array_equal(mapped, label)
    assert torch.equal(data.train[2]["labels"], torch.from_numpy(label))


def test_unmatched_image_errors_or_is_skipped_and_counted(tmp_path):
    label = np.zeros((8, 8), np.uint8)
    images, masks = _write_pair_folder(tmp_path, {"a": (_rgb(8, 8, 0), label), "b": (_rgb(8, 8, 1), label)})
    (masks / "b.png").unlink()
    with pytest.raises(ValueError, match=r"1 image\(s\) have no label file.*b\.png.*--skip_bad_examples"):
        load_segmentation_data(_folder_args(images, masks))
    data = load_segmentation_data(_folder_args(images, masks, skip_bad_examples=True))
    assert len(data.train) == 1 and data.stats.summary()["train_unmatched_files"] == 1


def test_eval_split_fraction_is_deterministic_and_disjoint(tmp_path):
    label = np.zeros((8, 8), np.uint8)
    images, masks = _write_pair_folder(tmp_path, {f"x{i:02d}": (_rgb(8, 8, i), label) for i in range(10)})
    args = _folder_args(images, masks, eval_split_fraction=0.3, id2label_file=None)
    first, second = load_segmentation_data(args), load_segmentation_data(args)
    assert first.eval.indices == second.eval.indices and len(first.eval) == 3 and len(first.train) == 7
    assert not set(first.eval.indices) & set(first.train.indices)
    other = load_segmentation_data(_folder_args(images, masks, eval_split_fraction=0.3, eval_split_seed=1))
    assert other.eval.indices != first.eval.indices


# ---------------------------------------------------------------------------------------------- cityscapes
def test_cityscapes_tree_maps_label_ids_to_train_ids(tmp_path):
    root = tmp_path / "cityscapes"
    label_ids = np.array([[7, 8, 26, 33], [0, 4, 24, 250], [23, 9, 11, 17]], dtype=np.uint8)
    for split, city in (("train", "aachen"), ("val", "lindau")):
        for k in range(2):
            prefix = f"{city}_000000_00001{k}"
            (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            PIL.Image.fromarray(_rgb(3, 4, k)).save(root / "leftImg8bit" / split / city / f"{prefix}_leftImg8bit.png")
            PIL.Image.fromarray(label_ids).save(root / "gtFine" / split / city / f"{prefix}_gtFine_labelIds.png")
    data = load_segmentation_data(DataArguments(cityscapes_root=str(root), crop_size=[8, 8]))  # 'validation' -> val/
    assert data.num_labels == 19 and data.id2label == CITYSCAPES_ID2LABEL
    assert data.id2label[0] == "road" and data.id2label[13] == "car" and data.id2label[18] == "bicycle"
    assert len(data.train) == 2 and len(data.eval) == 2
    _, mapped, name = data.train.load_example(1)
    assert name == "aachen_000000_000011_leftImg8bit.png"
    # road 7->0, sidewalk 8->1, car 26->13, bicycle 33->18, unlabeled 0/static 4/parking 9/>33 -> 255,
    # person 24->11, sky 23->10, building 11->2, pole 17->5
    assert mapped.tolist() == [[0, 1, 13, 18], [255, 255, 11, 255], [10, 255, 2, 5]]
    assert data.eval[0]["labels"].tolist() == mapped.tolist()  # eval keeps native size
    with pytest.raises(ValueError, match="do not apply to --cityscapes_root"):
        load_segmentation_data(DataArguments(cityscapes_root=str(root), void_labels=[3]))


# ---------------------------------------------------------------------------------------------- labels
def test_label_mapper_void_and_reduce_labels():
    raw = np.array([[0, 1, 2, 11, 255]], dtype=np.int64)
    assert LabelMapper(12, 255, (11,)).map(raw).tolist() == [[0, 1, 2, 255, 255]]
    reduced = LabelMapper(11, 255, (), reduce_labels=True).map(raw)
    assert reduced.tolist() == [[255, 0, 1, 10, 255]]  # 0 -> ignore, ignore stays, others - 1
    assert LabelMapper(3, 255).invalid_values(raw).tolist() == [11]
    assert LabelMapper(3, -100, (255,)).map(raw).tolist() == [[0, 1, 2, 11, -100]]


def test_reduce_labels_through_the_loader(tmp_path):
    label = np.array([[0, 1, 2, 3]] * 8, dtype=np.uint8).repeat(2, axis=1)  # 8x8
    images, masks = _write_pair_folder(tmp_path, {"a": (_rgb(8, 8, 0), label)})
    data = load_segmentation_data(_folder_args(images, masks, reduce_labels=True, eval_split=None))
    assert data.num_labels == 3  # inferred after reduction: ids 0..2
    _, mapped, _ = data.train.load_example(0)
    assert mapped[0].tolist() == [255, 255, 0, 0, 1, 1, 2, 2]


# ---------------------------------------------------------------------------------------------- bad examples
@pytest.fixture()
def bad_folder(tmp_path):
    """Folder with: a good example, an unreadable image, a size mismatch, an out-of-range label, a good one."""
    label = np.zeros((8, 8), np.uint8)
    label[:, 4:] = 1
    items = {
        "0_good": (_rgb(8, 8, 0), label),
        "1_corrupt": (_rgb(8, 8, 1), label),
        "2_mismatch": (_rgb(8, 8, 2), label[:6]),
        "3_outofrange": (_rgb(8, 8, 3), np.full((8, 8), 7, np.uint8)),
        "4_good": (_rgb(8, 8, 4), label),
    }
    images, masks = _write_pair_folder(tmp_path, items)
    (images / "1_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"0": "left", "1": "right"}))
    return images, masks, names


@pytest.mark.parametrize(
    "index, reason, pattern",
    [
        (1, "unreadable_image", r"split 'train', index 1, name '1_corrupt\.png': cannot decode the image"),
        (2, "size_mismatch", r"index 2, name '2_mismatch\.png': image is 8x8 \(HxW\) but its label is 6x8"),
        (3, "label_out_of_range", r"index 3, name '3_outofrange\.png': label values \[7\] are not class ids 0\.\.1"),
    ],
)
def test_bad_examples_raise_naming_the_example(bad_folder, index, reason, pattern):
    images, masks, names = bad_folder
    data = load_segmentation_data(_folder_args(images, masks, id2label_file=str(names)))
    with pytest.raises(BadExampleError, match=pattern) as info:
        data.train[index]
    assert info.value.reason == reason and info.value.split == "train" and info.value.index == index
    assert "--skip_bad_examples" in str(info.value)


def test_bad_examples_are_skipped_deterministically_and_counted(bad_folder, caplog):
    images, masks, names = bad_folder
    args = _folder_args(images, masks, id2label_file=str(names), skip_bad_examples=True, hflip_probability=0.0)
    data = load_segmentation_data(args, seed=3)
    with caplog.at_level(logging.WARNING, logger="msaf_hf.data"):
        served = [data.train[i] for i in range(len(data.train))]
    assert len(served) == 5
    # Indices 1..3 are bad: each is served by the next good example, index 4.
    for i in (1, 2, 3):
        assert torch.equal(served[i]["pixel_values"], served[4]["pixel_values"])
    assert not torch.equal(served[0]["pixel_values"], served[4]["pixel_values"])
    stats = data.stats.train
    assert stats.num_skipped == 3 and stats.bad_indices() == [1, 2, 3]
    assert stats.counts() == {"unreadable_image": 1, "size_mismatch": 1, "label_out_of_range": 1}
    assert data.stats.summary()["train_skipped"] == 3
    assert sum("Skipping: Bad example" in r.message for r in caplog.records) == 3
    # Reading again (another epoch) neither re-counts nor re-logs, and gives the same replacement.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="msaf_hf.data"):
        again = data.train[2]
    assert stats.num_skipped == 3 and not caplog.records
    assert torch.equal(again["pixel_values"], served[2]["pixel_values"])
    # The last bad index wraps around to the first good one.
    wrapped = load_segmentation_data(_folder_args(images, masks, id2label_file=str(names), skip_bad_examples=True,
                                                  max_train_samples=4, hflip_probability=0.0))
    assert torch.equal(wrapped.train[3]["pixel_values"], wrapped.train[0]["pixel_values"])


def test_skipped_eval_example_is_masked_out(bad_folder):
    images, masks, names = bad_folder
    data = load_segmentation_data(
        _folder_args(images, masks, id2label_file=str(names), skip_bad_examples=True,
                     eval_image_dir=str(images), eval_mask_dir=str(masks))
    )
    replaced = data.eval[3]
    assert (replaced["labels"] == 255).all()  # a replacement adds nothing to the metrics
    assert torch.equal(replaced["pixel_values"], data.eval[4]["pixel_values"])
    assert (data.eval[4]["labels"] != 255).any()
    assert data.stats.summary()["eval_skipped"] == 1


def test_bad_example_error_survives_dataloader_workers_and_pickling(bad_folder):
    import pickle

    images, masks, names = bad_folder
    data = load_segmentation_data(_folder_args(images, masks, id2label_file=str(names)))
    loader = make_dataloader(data.train, batch_size=5, shuffle=False, num_workers=1)
    with pytest.raises(BadExampleError, match=r"index 1, name '1_corrupt\.png'"):
        next(iter(loader))
    with pytest.raises(BadExampleError) as info:
        data.train[2]
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value) and copy.reason == "size_mismatch" and copy.name == "2_mismatch.png"


def test_all_bad_split_raises(tmp_path):
    images, masks = _write_pair_folder(tmp_path, {"a": (_rgb(8, 8, 0), np.full((8, 8), 5, np.uint8))})
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"0": "x"}))
    data = load_segmentation_data(_folder_args(images, masks, id2label_file=str(names), skip_bad_examples=True))
    with pytest.raises(RuntimeError, match="Every example of split 'train' is bad"):
        data.train[0]


def test_colour_coded_label_is_rejected(tmp_path):
    label = np.zeros((8, 8, 3), np.uint8)
    label[..., 0] = 1
    images, masks = _write_pair_folder(tmp_path, {"a": (_rgb(8, 8, 0), label)})
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"0": "x", "1": "y"}))
    data = load_segmentation_data(_folder_args(images, masks, id2label_file=str(names)))
    with pytest.raises(BadExampleError, match="colour image whose channels differ") as info:
        data.train[0]
    assert info.value.reason == "bad_label_format"


def _ramp16(path: Path) -> np.ndarray:
    """A real 16-bit grayscale PNG: a full-range ramp 0..65535 over 256 x 256 pixels."""
    ramp = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    PIL.Image.fromarray(ramp).save(path)
    assert PIL.Image.open(path).mode in ("I;16", "I")  # what Pillow gives for a 16-bit PNG
    return ramp


def test_16_bit_images_are_scaled_by_their_bit_depth(tmp_path):
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    ramp = _ramp16(tmp_path / "images" / "a.png")
    PIL.Image.fromarray(np.zeros((256, 256), np.uint8)).save(tmp_path / "masks" / "a.png")
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"0": "x", "1": "y"}))
    data = load_segmentation_data(_folder_args(tmp_path / "images", tmp_path / "masks", id2label_file=str(names)))
    image, _, _ = data.train.load_example(0)
    array = np.asarray(image)
    assert image.mode == "RGB" and (array[..., 0] == array[..., 2]).all()
    expected = np.round(ramp / 257.0)  # 0..65535 onto 0..255
    assert np.abs(array[..., 0].astype(np.float64) - expected).max() == 0
    assert (array == 255).mean() < 0.01  # `.convert("RGB")` made 99.6% of the ramp 255


def test_mask_with_alpha_channel_uses_its_grey_channel(tmp_path):
    label = (np.arange(64).reshape(8, 8) % 3).astype(np.uint8)
    alpha = np.full((8, 8), 255, np.uint8)
    alpha[:2] = 0  # some transparent pixels: the alpha is not a class id
    images, masks = _write_pair_folder(tmp_path, {"a": (_rgb(8, 8, 0), label)})
    PIL.Image.fromarray(np.stack([label, alpha], axis=-1)).save(masks / "a.png")
    assert PIL.Image.open(masks / "a.png").mode == "LA"
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"0": "x", "1": "y", "2": "z"}))
    data = load_segmentation_data(_folder_args(images, masks, id2label_file=str(names)))
    _, mapped, _ = data.train.load_example(0)
    assert np.array_equal(mapped, label)


# ---------------------------------------------------------------------------------------------- augmentation
def _pattern_example(h: int = 12, w: int = 16) -> tuple[PIL.Image.Image, np.ndarray]:
    image = _rgb(h, w, 42)
    label = (np.arange(h * w).reshape(h, w) % 5).astype(np.int64)
    return PIL.Image.fromarray(image), label


def test_train_transform_crop_size_and_dtypes():
    image, label = _pattern_example(30, 40)
    transform = SegmentationTrainTransform(crop_size=(16, 24), scale_range=(0.5, 2.0))
    for index in range(6):
        pixel_values, labels = transform(image, label, example_rng(0, 0, index))
        assert pixel_values.shape == (3, 16, 24) and pixel_values.dtype == torch.float32
        assert labels.shape == (16, 24) and labels.dtype == torch.int64
        assert set(labels.unique().tolist()) <= {0, 1, 2, 3, 4, 255}


def test_train_transform_pads_image_with_zero_and_label_with_ignore():
    image, label = _pattern_example(6, 5)
    transform = SegmentationTrainTransform(
        crop_size=(10, 8), scale_range=(1.0, 1.0), hflip_probability=0.0, ignore_index=255
    )
    pixel_values, labels = transform(image, label, example_rng(0, 0, 0))
    # The image is smaller than the crop: it sits top-left, padding fills bottom/right.
    assert torch.equal(labels[:6, :5], torch.from_numpy(label))
    assert (labels[6:] == 255).all() and (labels[:, 5:] == 255).all()
    raw = _denormalise(pixel_values)
    torch.testing.assert_close(raw[:, 6:], torch.zeros_like(raw[:, 6:]), atol=1e-5, rtol=0)
    torch.testing.assert_close(raw[:, :, 5:], torch.zeros_like(raw[:, :, 5:]), atol=1e-5, rtol=0)
    original = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()
    torch.testing.assert_close(raw[:, :6, :5] * 255, original, atol=1e-3, rtol=0)


def test_flip_flips_image_and_label_together():
    image, label = _pattern_example(8, 8)
    kwargs = dict(crop_size=(8, 8), scale_range=(1.0, 1.0))
    plain = SegmentationTrainTransform(hflip_probability=0.0, **kwargs)(image, label, example_rng(0, 0, 0))
    flipped = SegmentationTrainTransform(hflip_probability=1.0, **kwargs)(image, label, example_rng(0, 0, 0))
    assert torch.equal(flipped[0], plain[0].flip(-1)) and torch.equal(flipped[1], plain[1].flip(-1))
    assert not torch.equal(flipped[1], plain[1])


def test_scaling_resizes_label_with_nearest_and_base_size():
    image, label = _pattern_example(8, 8)
    transform = SegmentationTrainTransform(crop_size=(16, 16), scale_range=(2.0, 2.0), hflip_probability=0.0)
    _, labels = transform(image, label, example_rng(0, 0, 0))
    assert torch.equal(labels, torch.from_numpy(label).repeat_interleave(2, 0).repeat_interleave(2, 1))
    # base_size: the long side becomes scale * base_size whatever the input size (8 -> 4 -> crop pads).
    based = SegmentationTrainTransform(crop_size=(8, 8), scale_range=(1.0, 1.0), base_size=4, hflip_probability=0.0)
    _, small = based(image, label, example_rng(0, 0, 0))
    assert (small[:4, :4] != 255).all() and (small[4:] == 255).all()
    stepped = SegmentationTrainTransform(crop_size=(4, 4), scale_range=(0.5, 1.0), scale_step=0.25)
    scales = {stepped.sample_scale(example_rng(0, 0, i)) for i in range(60)}
    assert scales == {0.5, 0.75, 1.0}


def test_augmentation_is_a_function_of_seed_epoch_and_index():
    image, label = _pattern_example(32, 32)
    transform = SegmentationTrainTransform(crop_size=(16, 16))

    def run(seed, epoch, index):
        return transform(image, label, example_rng(seed, epoch, index))

    first, again = run(1, 2, 3), run(1, 2, 3)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    for other in (run(2, 2, 3), run(1, 3, 3), run(1, 2, 4)):
        assert not torch.equal(first[0], other[0])


def test_dataset_epoch_changes_augmentation_and_workers_do_not(tmp_path):
    data = load_segmentation_data(
        DataArguments(synthetic=True, synthetic_num_train=4, synthetic_num_eval=1, synthetic_image_size=[32, 32],
                      crop_size=[24, 24]),
        seed=5,
    )
    train = data.train
    epoch0 = train[1]
    train.set_epoch(1)
    assert train.epoch == 1 and not torch.equal(train[1]["pixel_values"], epoch0["pixel_values"])
    train.set_epoch(0)
    assert torch.equal(train[1]["pixel_values"], epoch0["pixel_values"])

    def batches(num_workers):
        loader = make_dataloader(train, batch_size=2, shuffle=True, seed=7, num_workers=num_workers)
        return [batch for batch in loader]

    single, multi = batches(0), batches(2)
    assert len(single) == 2
    for a, b in zip(single, multi, strict=False):
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"], b["labels"])
        assert a["pixel_values"].shape == (2, 3, 24, 24) and a["labels"].shape == (2, 24, 24)


def test_skip_stats_are_shared_with_dataloader_workers(bad_folder):
    images, masks, names = bad_folder
    data = load_segmentation_data(_folder_args(images, masks, id2label_file=str(names), skip_bad_examples=True))
    loader = make_dataloader(data.train, batch_size=5, shuffle=False, num_workers=1)
    (batch,) = list(loader)
    assert batch["pixel_values"].shape == (5, 3, 8, 8)
    assert data.stats.train.num_skipped == 3  # recorded in the worker, visible here


def test_eval_transform_resizes_image_but_keeps_native_labels():
    image, label = _pattern_example(12, 16)
    pixel_values, labels = SegmentationEvalTransform(eval_image_processor([8]))(image, label)
    assert pixel_values.shape == (3, 6, 8) and torch.equal(labels, torch.from_numpy(label))
    pixel_values, _ = SegmentationEvalTransform(eval_image_processor([24, 8]))(image, label)
    assert pixel_values.shape == (3, 24, 8)
    pixel_values, _ = SegmentationEvalTransform()(image, label)
    original = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()
    torch.testing.assert_close(_denormalise(pixel_values) * 255, original, atol=1e-3, rtol=0)


def test_collate_stacks_and_rejects_mixed_sizes():
    a = {"pixel_values": torch.zeros(3, 4, 4), "labels": torch.zeros(4, 4, dtype=torch.int64)}
    b = {"pixel_values": torch.ones(3, 4, 4), "labels": torch.ones(4, 4, dtype=torch.int64)}
    batch = collate_fn([a, b])
    assert batch["pixel_values"].shape == (2, 3, 4, 4) and batch["labels"].shape == (2, 4, 4)
    assert torch.equal(batch["labels"][1], b["labels"])
    c = {"pixel_values": torch.zeros(3, 6, 4), "labels": torch.zeros(6, 4, dtype=torch.int64)}
    with pytest.raises(ValueError, match="different sizes.*batch size of 1.*--eval_size"):
        collate_fn([a, c])


# ---------------------------------------------------------------------------------------------- synthetic
def test_synthetic_dataset_is_deterministic_and_well_formed():
    first = make_synthetic_segmentation_dataset(num_train=6, num_eval=2, image_size=(32, 48), num_labels=4, seed=0)
    second = make_synthetic_segmentation_dataset(num_train=3, num_eval=2, image_size=(32, 48), num_labels=4, seed=0)
    other = make_synthetic_segmentation_dataset(num_train=3, num_eval=2, image_size=(32, 48), num_labels=4, seed=1)
    assert set(first) == {"train", "validation"} and len(first["train"]) == 6 and len(first["validation"]) == 2
    for i in range(3):  # example i does not depend on the split size
        assert np.array_equal(np.asarray(first["train"][i]["image"]), np.asarray(second["train"][i]["image"]))
        assert np.array_equal(np.asarray(first["train"][i]["label"]), np.asarray(second["train"][i]["label"]))
    assert not np.array_equal(np.asarray(first["train"][0]["image"]), np.asarray(other["train"][0]["image"]))
    assert not np.array_equal(np.asarray(first["train"][0]["image"]), np.asarray(first["validation"][0]["image"]))
    labels = np.stack([np.asarray(first["train"][i]["label"]) for i in range(6)])
    image = np.asarray(first["train"][0]["image"])
    assert image.shape == (32, 48, 3) and labels.shape[1:] == (32, 48)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 3, 255}
    assert (labels == 255).any() and (labels == 0).mean() > 0.3 and (labels != 0).sum() > 0
    assert synthetic_id2label(4) == {0: "background", 1: "disc", 2: "square", 3: "triangle"}
    with pytest.raises(ValueError, match="num_labels"):
        synthetic_id2label(9)


@pytest.mark.slow
def test_synthetic_through_load_segmentation_data_and_learnable_from_colour():
    data = load_segmentation_data(
        DataArguments(synthetic=True, synthetic_num_train=16, synthetic_num_eval=4, synthetic_image_size=[32, 32]),
        seed=0,
    )
    assert data.num_labels == 4 and data.id2label[1] == "disc" and len(data.train) == 16 and len(data.eval) == 4
    batch = collate_fn([data.train[i] for i in range(16)])
    assert batch["pixel_values"].shape == (16, 3, 32, 32)  # default crop = synthetic image size
    # Learnability sanity check: a per-pixel linear classifier on colour alone fits the classes well.
    x = batch["pixel_values"].permute(0, 2, 3, 1).reshape(-1, 3)
    y = batch["labels"].reshape(-1)
    keep = y != 255
    x, y = x[keep], y[keep]
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 4)
    optimiser = torch.optim.Adam(layer.parameters(), lr=0.1)
    for _ in range(150):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(layer(x), y).backward()
        optimiser.step()
    prediction = layer(x).argmax(-1)
    ious = [
        ((prediction == c) & (y == c)).sum() / ((prediction == c) | (y == c)).sum() for c in range(4) if (y == c).any()
    ]
    assert float(torch.stack(ious).mean()) > 0.8


# ---------------------------------------------------------------------------------------------- CamVid
def test_camvid_from_shared_folder(tmp_path):
    require_camvid()  # skips where ../shared is absent; fails in CI
    data = load_segmentation_data(
        DataArguments(dataset_name=str(CAMVID), dataset_cache_dir=str(tmp_path / "cache"),
                      id2label_file="camvid_id2label.json", void_labels=[11], max_train_samples=2, max_eval_samples=2,
                      crop_size=[64, 64], scale_range=[0.25, 0.25]),
        seed=0,
    )
    assert data.num_labels == 11 and data.id2label[0] == "Sky" and data.id2label[10] == "Bicyclist"
    assert len(data.train) == 2 and len(data.eval) == 2
    for dataset in (data.train, data.eval):
        for i in range(2):
            raw = dataset.source.load(dataset.indices[i]).label
            image, mapped, name = dataset.load_example(i)
            assert image.size == (480, 360) and name
            assert (raw == 11).any(), "CamVid frames have void pixels"
            assert (mapped[raw == 11] == 255).all() and np.array_equal(mapped[raw != 11], raw[raw != 11])
            assert mapped[mapped != 255].max() <= 10
    train_example = data.train[0]
    assert train_example["pixel_values"].shape == (3, 64, 64)
    eval_example = data.eval[0]
    assert eval_example["pixel_values"].shape == (3, 360, 480) and eval_example["labels"].shape == (360, 480)
    assert set(eval_example["labels"].unique().tolist()) <= set(range(11)) | {255}


@pytest.mark.parametrize("eval_size", [[8], [24, 8]])
def test_saved_eval_preprocessor_is_the_evaluation_transform(eval_size, tmp_path):
    """Evaluation preprocessing has one definition: the image processor training saves, which must load and run
    (one --eval_size value used to save size={"longest_edge": N}, refused by the processor at its first call)."""
    from msaf_hf import DSNetImageProcessor
    from msaf_hf.training import build_image_processor

    image, label = _pattern_example(12, 16)
    build_image_processor(DataArguments(eval_size=eval_size)).save_pretrained(tmp_path)  # what training saves
    reloaded = DSNetImageProcessor.from_pretrained(tmp_path)
    expected, _ = SegmentationEvalTransform(eval_image_processor(eval_size))(image, label)
    torch.testing.assert_close(reloaded(images=image, return_tensors="pt")["pixel_values"][0], expected)
