"""Images without (needed) labels: the sources and the dataset that int8 calibration and prediction read.

:class:`ImageFolderSource` lists the image files of a folder (recursively by default), :class:`HubImageSource` reads
the image column of a ``datasets.Dataset`` split (any label column is ignored), :class:`PairImageSource` takes the
images of a labelled (image file, label file) source. :class:`ImageDataset` preprocesses their images with an image
processor (the checkpoint's) and, for prediction, also returns each image's name and original size, and its labels
where the source has them and a label mapping is given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from .bad_examples import BadExampleError, ExampleProblem
from .images import IMAGE_EXTENSIONS, open_image, to_rgb
from .labels import LabelMapper

# Columns that name an example (in this order) when no name column is given; else the image's file name or index.
NAME_COLUMNS = ("name", "file_name", "filename", "image_id", "id")

__all__ = ["HubImageSource", "ImageDataset", "ImageFolderSource", "PairImageSource", "list_image_files"]


def list_image_files(folder: str | os.PathLike, what: str, *, recursive: bool = True) -> list[Path]:
    """The image files (``IMAGE_EXTENSIONS``) in ``folder``, sorted; hidden files skipped.

    ``what`` names the folder in errors (e.g. ``"--calibration_dataset"``). A missing folder and a folder without
    images are errors that say what was looked for.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{what} {str(folder)!r} is not a directory.")
    candidates = root.rglob("*") if recursive else root.iterdir()
    files = sorted(
        p for p in candidates
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise ValueError(
            f"{what} {str(folder)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}"
            f"{', also searched in subfolders' if recursive else ''}): put the images there, or give the folder "
            "that holds them."
        )
    return files


class ImageFolderSource:
    """The image files of a folder, named by their path relative to it (``city/0001.png``)."""

    has_labels = False

    def __init__(self, folder: str | os.PathLike, what: str, *, recursive: bool = True) -> None:
        self.root = Path(folder)
        self.files = list_image_files(folder, what, recursive=recursive)
        self.description = f"images in {what} {str(folder)!r}"

    def __len__(self) -> int:
        return len(self.files)

    def name(self, index: int) -> str:
        return self.files[index].relative_to(self.root).as_posix()

    def load_image(self, index: int) -> PIL.Image.Image:
        return to_rgb(open_image(self.files[index], "image"))


class PairImageSource:
    """The images (and, on request, the raw labels) of a labelled source with ``pairs`` (``PairSource``)."""

    def __init__(self, labelled: Any) -> None:
        self.labelled = labelled
        self.description = labelled.description
        self.has_labels = True

    def __len__(self) -> int:
        return len(self.labelled)

    def name(self, index: int) -> str:
        return self.labelled.pairs[index][0].name

    def load_image(self, index: int) -> PIL.Image.Image:
        return to_rgb(open_image(self.labelled.pairs[index][0], "image"))

    def load_label(self, index: int) -> np.ndarray:
        return self.labelled.load_label(index)


class HubImageSource:
    """The image column of a ``datasets.Dataset`` split; the label column (``label_column``, if present) is only
    read when labels are asked for, so a dataset without labels works too."""

    def __init__(
        self, dataset: Any, image_column: str, label_column: str | None, description: str,
        name_column: str | None = None,
    ) -> None:
        import datasets

        columns = list(dataset.column_names)
        if image_column not in columns:
            raise ValueError(
                f"{description}: image column '{image_column}' not found (columns: {columns}); pass "
                "--image_column <column>."
            )
        self.has_labels = label_column is not None and label_column in columns
        self.image_column, self.label_column = image_column, label_column if self.has_labels else None
        if name_column is not None and name_column not in columns:
            raise ValueError(f"{description}: --name_column '{name_column}' not found (columns: {columns}).")
        self.name_column = name_column or next((c for c in NAME_COLUMNS if c in columns and c != image_column), None)
        keep = [image_column] + ([label_column] if self.has_labels else [])
        dataset = dataset.select_columns(keep + ([self.name_column] if self.name_column else []))
        for column in dataset.column_names:
            feature = dataset.features[column]
            if isinstance(feature, datasets.Image) and feature.decode:
                dataset = dataset.cast_column(column, datasets.Image(decode=False))  # decoded here, with names
        self.dataset, self.description = dataset, description

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, index: int) -> str:
        row = self.dataset[index]
        if self.name_column and row[self.name_column] is not None:
            return str(row[self.name_column])
        value = row[self.image_column]
        if isinstance(value, dict) and value.get("path"):
            return os.path.basename(value["path"])
        return f"{index:06d}"

    def load_image(self, index: int) -> PIL.Image.Image:
        return to_rgb(open_image(self.dataset[index][self.image_column], "image"))

    def load_label(self, index: int) -> np.ndarray:
        from .labels import label_to_array

        return label_to_array(self.dataset[index][self.label_column])


class ImageDataset(torch.utils.data.Dataset):
    """Images of one split preprocessed by an image processor: ``{"pixel_values": float32 (3, h, w)}``, plus, with
    ``with_metadata``, ``"name"`` (str) and ``"original_size"`` (int64 ``[H, W]``, the image's own size), and, with a
    ``label_mapper`` (and a source that has labels), ``"labels"`` (int64 (H, W) at the original size, validated).

    Deterministic (no augmentation). A bad example raises :class:`BadExampleError` naming the split, index and file;
    :meth:`load_image` gives the decoded RGB image (for pictures of the prediction).
    """

    id2label: dict[int, str] | None = None  # the class names, set by the loaders

    def __init__(
        self,
        source: Any,
        split: str,
        image_processor: Any,
        *,
        indices: Sequence[int] | None = None,
        label_mapper: LabelMapper | None = None,
        with_metadata: bool = False,
    ) -> None:
        if image_processor is None:
            raise ValueError("ImageDataset needs the image processor that prepares the model's inputs.")
        self.source, self.split, self.image_processor = source, split, image_processor
        self.indices = list(range(len(source))) if indices is None else [int(i) for i in indices]
        if not self.indices:
            raise ValueError(f"Split '{split}' is empty ({source.description}).")
        self.label_mapper = label_mapper if getattr(source, "has_labels", False) else None
        self.with_metadata = with_metadata

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def has_labels(self) -> bool:
        return self.label_mapper is not None

    def name(self, index: int) -> str:
        return self.source.name(self.indices[index])

    def _bad(self, index: int, problem: ExampleProblem) -> BadExampleError:
        return BadExampleError.for_example(
            self.split, index, self.indices[index], problem.name or self.name(index), problem.reason, problem.detail
        )

    def load_image(self, index: int) -> PIL.Image.Image:
        """The decoded RGB image of example ``index`` (raises :class:`BadExampleError` if it cannot be read)."""
        try:
            return self.source.load_image(self.indices[index])
        except ExampleProblem as problem:
            raise self._bad(index, problem) from problem

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for split '{self.split}' of {len(self)} examples")
        image = self.load_image(index)
        example: dict[str, Any] = {
            "pixel_values": self.image_processor(images=image, return_tensors="pt")["pixel_values"][0]
        }
        if self.with_metadata:
            example["name"] = self.name(index)
            example["original_size"] = torch.tensor([image.size[1], image.size[0]], dtype=torch.int64)
        if self.label_mapper is not None:
            example["labels"] = torch.from_numpy(self._label(index, image))
        return example

    def _label(self, index: int, image: PIL.Image.Image) -> np.ndarray:
        try:
            label = self.source.load_label(self.indices[index])
            if label.shape != (image.size[1], image.size[0]):
                raise ExampleProblem(
                    "size_mismatch",
                    f"image is {image.size[1]}x{image.size[0]} (HxW) but its label is "
                    f"{label.shape[0]}x{label.shape[1]}",
                )
            label = self.label_mapper.map(label)
            bad = self.label_mapper.invalid_values(label)
            if bad.size:
                raise ExampleProblem(
                    "label_out_of_range",
                    f"label values {bad[:10].tolist()} are not class ids 0..{self.label_mapper.num_labels - 1} nor "
                    f"the ignore index {self.label_mapper.ignore_index} (void values can be mapped with --void_labels)",
                )
        except ExampleProblem as problem:
            raise self._bad(index, problem) from problem
        return np.require(label, np.int64, ["C", "W"])
