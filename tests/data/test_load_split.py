"""msaf_hf.data.load_split: one split of every source kind for every purpose (train, evaluation, calibration,
prediction), with the model's classes and image processor given directly; and its errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from msaf_hf.data import (
    BadExampleError,
    DataArguments,
    ImageDataset,
    SegmentationDataset,
    load_segmentation_data,
    load_split,
)
from msaf_hf.image_processing_dsnet import DSNetImageProcessor

# Far from ImageNet's constants: a loader that normalised with those would fail the equality checks below.
MEAN, STD = [0.3, 0.6, 0.2], [0.4, 0.15, 0.3]
ID2LABEL = {0: "a", 1: "b", 2: "c"}


def _processor(**kwargs) -> DSNetImageProcessor:
    return DSNetImageProcessor(image_mean=MEAN, image_std=STD, **kwargs)


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _label(h: int, w: int, seed: int, num_labels: int = 3) -> np.ndarray:
    return np.random.default_rng(100 + seed).integers(0, num_labels, (h, w), dtype=np.uint8)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _expected(processor: DSNetImageProcessor, image: np.ndarray) -> torch.Tensor:
    return processor(images=PIL.Image.fromarray(image), return_tensors="pt")["pixel_values"][0]


def _hub_folder(root: Path, splits=("train", "validation"), with_labels: bool = True, count: int = 3) -> Path:
    import datasets

    folder = root / "hub"
    folder.mkdir(parents=True)
    columns = {"image": datasets.Image(), "name": datasets.Value("string")}
    if with_labels:
        columns["label"] = datasets.Image()
    for split_number, split in enumerate(splits):
        rows = {"image": [], "name": []} | ({"label": []} if with_labels else {})
        for k in range(count):
            seed = 10 * split_number + k
            rows["image"].append({"bytes": _png(_rgb(12, 16, seed)), "path": None})
            rows["name"].append(f"{split}-{k}")
            if with_labels:
                rows["label"].append({"bytes": _png(_label(12, 16, seed)), "path": None})
        datasets.Dataset.from_dict(rows, features=datasets.Features(columns)).to_parquet(
            str(folder / f"{split}-00000-of-00001.parquet")
        )
    return folder


def _pair_folders(root: Path, count: int = 3) -> tuple[Path, Path]:
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for k in range(count):
        PIL.Image.fromarray(_rgb(12, 16, k)).save(images / f"{k:03d}.png")
        PIL.Image.fromarray(_label(12, 16, k)).save(masks / f"{k:03d}.png")
    return images, masks


def _plain_folder(root: Path, count: int = 3) -> Path:
    folder = root / "plain"
    (folder / "nested").mkdir(parents=True)
    for k in range(count):
        PIL.Image.fromarray(_rgb(10 + k, 14, k)).save(folder / ("nested" if k == 0 else "") / f"img{k}.png")
    return folder


def _cityscapes(root: Path) -> Path:
    base = root / "cityscapes"
    for split, city in (("train", "aachen"), ("val", "lindau")):
        for k in range(2):
            prefix = f"{city}_000000_00001{k}"
            (base / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (base / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            PIL.Image.fromarray(_rgb(8, 8, k)).save(base / "leftImg8bit" / split / city / f"{prefix}_leftImg8bit.png")
            PIL.Image.fromarray(np.full((8, 8), 7, np.uint8)).save(
                base / "gtFine" / split / city / f"{prefix}_gtFine_labelIds.png"
            )
    return base


# ---------------------------------------------------------------------------------------------- per purpose
def test_evaluation_uses_the_given_processor_and_classes(tmp_path):
    folder = _hub_folder(tmp_path)
    processor = _processor()
    dataset = load_split(str(folder), "validation", "evaluation", id2label=ID2LABEL, image_processor=processor)
    assert isinstance(dataset, SegmentationDataset) and len(dataset) == 3 and dataset.id2label == ID2LABEL
    example = dataset[1]
    torch.testing.assert_close(example["pixel_values"], _expected(processor, _rgb(12, 16, 11)), rtol=0, atol=1e-6)
    assert example["labels"].tolist() == _label(12, 16, 11).tolist()
    # The model's label set is the one checked: a 2-class model makes label value 2 a bad example naming the file.
    two_classes = load_split(str(folder), "validation", "evaluation", id2label={0: "a", 1: "b"},
                             image_processor=processor)
    with pytest.raises(BadExampleError, match=r"validation-0.*label values \[2\] are not class ids 0..1"):
        two_classes[0]


def test_train_normalises_with_the_processors_mean_and_std(tmp_path):
    images, masks = _pair_folders(tmp_path)
    args = DataArguments(image_dir=str(images), mask_dir=str(masks), crop_size=[12, 16], scale_range=[1.0, 1.0],
                         hflip_probability=0.0)
    processor = _processor()
    dataset = load_split(args, "train", "train", id2label=ID2LABEL, image_processor=processor)
    assert isinstance(dataset, SegmentationDataset)
    example = dataset[2]  # scale 1, crop = image size, no flip: the augmentation is the normalisation alone
    torch.testing.assert_close(example["pixel_values"], _expected(processor, _rgb(12, 16, 2)), rtol=0, atol=1e-5)
    assert example["labels"].tolist() == _label(12, 16, 2).tolist()
    # load_segmentation_data (scripts/train.py) does the same with the processor the trainer saves.
    data = load_segmentation_data(args, image_processor=processor)
    torch.testing.assert_close(data.train[2]["pixel_values"], example["pixel_values"], rtol=0, atol=0)
    # A processor with its own rescale factor and no normalisation is matched too.
    plain = DSNetImageProcessor(do_normalize=False, rescale_factor=1 / 127.5)
    unnormalised = load_split(args, "train", "train", id2label=ID2LABEL, image_processor=plain)[0]["pixel_values"]
    torch.testing.assert_close(unnormalised, _expected(plain, _rgb(12, 16, 0)), rtol=0, atol=1e-5)


def test_calibration_reads_images_only(tmp_path):
    processor = _processor()
    # A Hub-style folder: the label column is not read (its values would be out of range for any 1-class model).
    hub = _hub_folder(tmp_path)
    dataset = load_split(str(hub), "train", "calibration", image_processor=processor)
    assert isinstance(dataset, ImageDataset) and len(dataset) == 3
    assert set(dataset[0]) == {"pixel_values"}
    torch.testing.assert_close(dataset[0]["pixel_values"], _expected(processor, _rgb(12, 16, 0)), rtol=0, atol=1e-6)
    # A Hub-style folder without any label column, and a folder of plain images (recursive).
    unlabelled = load_split(str(_hub_folder(tmp_path / "u", with_labels=False)), "train", "calibration",
                            image_processor=processor)
    assert len(unlabelled) == 3
    plain = load_split(str(_plain_folder(tmp_path)), "whatever", "calibration", image_processor=processor)
    assert len(plain) == 3 and plain[0]["pixel_values"].shape == (3, 11, 14)  # img1.png, img2.png, nested/img0.png
    # Image/mask folders without --mask_dir, and the images of a Cityscapes split.
    images, _ = _pair_folders(tmp_path)
    assert len(load_split(DataArguments(image_dir=str(images)), "train", "calibration")) == 3
    cityscapes = load_split(DataArguments(cityscapes_root=str(_cityscapes(tmp_path))), "validation", "calibration")
    assert len(cityscapes) == 2 and set(cityscapes[0]) == {"pixel_values"}
    synthetic = load_split("synthetic", "validation", "calibration", image_processor=processor)
    assert len(synthetic) == 64 and synthetic[0]["pixel_values"].shape == (3, 64, 64)


def test_prediction_gives_names_sizes_and_labels_when_known(tmp_path):
    processor = _processor(do_resize=True, size={"height": 8, "width": 8})
    plain = load_split(str(_plain_folder(tmp_path)), "train", "prediction", image_processor=processor)
    assert [plain[i]["name"] for i in range(3)] == ["img1.png", "img2.png", "nested/img0.png"]
    example = plain[2]
    assert example["original_size"].tolist() == [10, 14] and example["pixel_values"].shape == (3, 8, 8)
    assert "labels" not in example and plain.has_labels is False
    assert plain.load_image(2).size == (14, 10)
    hub = _hub_folder(tmp_path)
    with_labels = load_split(str(hub), "validation", "prediction", id2label=ID2LABEL, image_processor=processor)
    assert with_labels[0]["labels"].tolist() == _label(12, 16, 10).tolist()  # at the original size
    assert "labels" not in load_split(str(hub), "validation", "prediction", image_processor=processor)[0]


def test_eval_split_fraction_is_carved_as_in_training(tmp_path):
    images, masks = _pair_folders(tmp_path, count=10)
    args = DataArguments(image_dir=str(images), mask_dir=str(masks), eval_split_fraction=0.3, crop_size=[8, 8])
    data = load_segmentation_data(args)
    evaluation = load_split(args, "validation", "evaluation", id2label=ID2LABEL)
    train = load_split(args, "train", "train", id2label=ID2LABEL)
    assert evaluation.indices == data.eval.indices and train.indices == data.train.indices
    assert len(evaluation) == 3 and not set(evaluation.indices) & set(train.indices)


def test_max_samples_and_folder_splits(tmp_path):
    images, masks = _pair_folders(tmp_path, count=4)
    eval_images, eval_masks = _pair_folders(tmp_path / "e", count=2)
    args = DataArguments(image_dir=str(images), mask_dir=str(masks), eval_image_dir=str(eval_images),
                         eval_mask_dir=str(eval_masks), max_eval_samples=1)
    assert len(load_split(args, "validation", "evaluation", id2label=ID2LABEL)) == 1  # --eval_image_dir, capped
    assert len(load_split(args, "train", "evaluation", id2label=ID2LABEL, max_samples=3)) == 3  # --image_dir


# ---------------------------------------------------------------------------------------------- errors
def test_errors_name_the_thing_and_the_fix(tmp_path):
    hub = _hub_folder(tmp_path)
    with pytest.raises(ValueError, match=r"split 'test' not found \(available: \['train', 'validation'\]\); pass "
                                         r"--calibration_split <split>"):
        load_split(str(hub), "test", "calibration", split_flag="--calibration_split")
    plain = _plain_folder(tmp_path)
    with pytest.raises(ValueError, match=r"'.*plain' has no labels: training and evaluation need label maps; "
                                         r"pass --mask_dir FOLDER"):
        load_split(str(plain), "validation", "evaluation", id2label=ID2LABEL)
    unlabelled = _hub_folder(tmp_path / "u", with_labels=False)
    with pytest.raises(ValueError, match=r"no label column found among \['image', 'name'\] .*pass --label_column"):
        load_split(str(unlabelled), "validation", "evaluation", id2label=ID2LABEL)
    no_images = tmp_path / "no-images"
    no_images.mkdir()
    (no_images / "readme.md").write_text("nothing")
    with pytest.raises(ValueError, match=r"image folder '.*no-images' holds no images \(.png, .jpg.*give the folder"):
        load_split(str(no_images), "train", "prediction")
    images, masks = _pair_folders(tmp_path / "pairs")
    with pytest.raises(ValueError, match=r"no evaluation split; pass --eval_image_dir/--eval_mask_dir"):
        load_split(DataArguments(image_dir=str(images), mask_dir=str(masks)), "validation", "evaluation")
    with pytest.raises(ValueError, match="purpose must be one of"):
        load_split(str(hub), "train", "testing")
    with pytest.raises(ValueError, match="--mask_dir needs --image_dir"):
        DataArguments(mask_dir=str(masks))
    with pytest.raises(ValueError, match=r"class ids must be exactly 0..1"):
        load_split(str(hub), "train", "evaluation", id2label={0: "a", 2: "c"})


def test_streaming_is_named_and_the_split_read_map_style(tmp_path, caplog):
    folder = _hub_folder(tmp_path)
    args = DataArguments(dataset_name=str(folder), streaming=True, eval_split="validation")
    with caplog.at_level("WARNING", logger="msaf_hf.data.loading"):
        dataset = load_split(args, "validation", "evaluation", id2label=ID2LABEL, image_processor=_processor())
    assert isinstance(dataset, SegmentationDataset) and len(dataset) == 3
    assert "--streaming applies to training only" in caplog.text and "'validation'" in caplog.text
