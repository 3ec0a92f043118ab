"""The map-style dataset of decoded, validated, transformed examples, and batching."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch

from .bad_examples import BadExampleError, ExampleProblem, SkipStats
from .labels import LabelMapper
from .transforms import Transform, example_rng

logger = logging.getLogger(__name__)


def checked_label(image: PIL.Image.Image, label: np.ndarray, label_mapper: LabelMapper) -> np.ndarray:
    """Map a decoded label through ``label_mapper`` and validate it against its image; raises
    :class:`ExampleProblem` (size mismatch, values out of range). Shared by the map-style and streaming datasets."""
    width, height = image.size
    if label.shape != (height, width):
        raise ExampleProblem(
            "size_mismatch",
            f"image is {height}x{width} (HxW) but its label is {label.shape[0]}x{label.shape[1]}",
        )
    label = label_mapper.map(label)
    bad = label_mapper.invalid_values(label)
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:10].tolist()) + (" ..." if bad.size > 10 else "")
        raise ExampleProblem(
            "label_out_of_range",
            f"label values [{shown}] are not class ids 0..{label_mapper.num_labels - 1} nor the ignore "
            f"index {label_mapper.ignore_index} (void values can be mapped with --void_labels)",
        )
    return label


class SegmentationDataset(torch.utils.data.Dataset):
    """A map-style dataset of ``{"pixel_values": float32 (3,H,W), "labels": int64 (H,W)}``.

    Each ``__getitem__`` decodes one example, maps and validates its labels, and transforms it with
    ``example_rng(seed, epoch, index)``. Call :meth:`set_epoch` before every epoch (and with the resumed
    epoch when resuming): the epoch lives in shared memory, so persistent DataLoader workers see it.
    (Accelerate only calls ``dataset.set_epoch`` when the sampler has none, so call it yourself.)

    Bad examples raise :class:`BadExampleError`. With ``skip_bad_examples`` a bad index ``i`` is
    logged once, recorded in :attr:`stats` and served by the next good example ``i+1, i+2, ...``
    (wrapping around), transformed with index ``i``'s RNG, so every index still yields an example and
    the output is a deterministic function of (data, seed, epoch, index). ``replacement="masked"``
    (used for evaluation) additionally sets the replacement's labels to ``ignore_index`` so that it
    adds nothing to the metrics.
    """

    id2label: dict[int, str] | None = None  # the class names, set by the loaders

    def __init__(
        self,
        source: Any,
        split: str,
        transform: Transform,
        label_mapper: LabelMapper,
        *,
        indices: Sequence[int] | None = None,
        seed: int = 0,
        skip_bad_examples: bool = False,
        replacement: str = "duplicate",
    ) -> None:
        if replacement not in ("duplicate", "masked"):
            raise ValueError(f"SegmentationDataset: replacement must be 'duplicate' or 'masked', got {replacement!r}.")
        self.source = source
        self.split = split
        self.transform = transform
        self.label_mapper = label_mapper
        self.indices = list(range(len(source))) if indices is None else [int(i) for i in indices]
        if not self.indices:
            raise ValueError(f"Split '{split}' is empty ({getattr(source, 'description', 'source')}).")
        self.seed = int(seed)
        self.skip_bad_examples = skip_bad_examples
        self.replacement = replacement
        self.stats = SkipStats(split, len(self.indices))
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the augmentation (visible to already-running workers)."""
        self._epoch[0] = int(epoch)

    @property
    def ignore_index(self) -> int:
        return self.label_mapper.ignore_index

    def load_example(self, index: int) -> tuple[PIL.Image.Image, np.ndarray, str | None]:
        """Decode, map and validate example ``index`` without augmentation: (RGB image, int64 label, name).

        Raises :class:`BadExampleError` for a bad example (regardless of ``skip_bad_examples``).
        """
        source_index = self.indices[index]
        name: str | None = None
        try:
            raw = self.source.load(source_index)
            name = raw.name
            label = checked_label(raw.image, raw.label, self.label_mapper)
        except ExampleProblem as problem:
            raise BadExampleError.for_example(
                self.split, index, source_index, problem.name or name, problem.reason, problem.detail
            ) from problem
        return raw.image, label, name

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        size = len(self)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError(f"index {index} out of range for split '{self.split}' of {size} examples")
        epoch = self.epoch
        candidate = index
        for _ in range(size):
            if self.skip_bad_examples and self.stats.is_bad(candidate):
                candidate = (candidate + 1) % size  # known bad: don't decode it again
                continue
            try:
                image, label, _ = self.load_example(candidate)
                break
            except BadExampleError as err:
                if not self.skip_bad_examples:
                    raise
                if self.stats.record(candidate, err.reason):
                    logger.warning("Skipping: %s", err)
                candidate = (candidate + 1) % size
        else:
            raise RuntimeError(
                f"Every example of split '{self.split}' is bad ({self.stats}); nothing to serve. "
                f"Check the data source ({getattr(self.source, 'description', 'source')})."
            )
        pixel_values, labels = self.transform(image, label, example_rng(self.seed, epoch, index))
        if candidate != index and self.replacement == "masked":
            labels.fill_(self.ignore_index)
        return {"pixel_values": pixel_values, "labels": labels}


def collate_fn(examples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack examples into ``{"pixel_values": (B,3,H,W), "labels": (B,H,W)}``.

    Training crops all have the same size. Evaluation keeps native sizes, so an evaluation batch can
    only mix images of one size: otherwise this raises (use batch size 1 or set --eval_size h w).
    """
    if not examples:
        raise ValueError("collate_fn: got an empty batch.")
    for key in ("pixel_values", "labels"):
        shapes = sorted({tuple(example[key].shape) for example in examples})
        if len(shapes) > 1:
            raise ValueError(
                f"collate_fn: '{key}' of different sizes in one batch {shapes}. Evaluation keeps native image "
                "sizes: use an evaluation batch size of 1, or resize with --eval_size HEIGHT WIDTH."
            )
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.stack([example["labels"] for example in examples]),
    }


def make_dataloader(
    dataset: SegmentationDataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader with :func:`collate_fn` and a seeded shuffle (same order for the same seed).

    Use ``drop_last=True`` for training: DSNet's pooled BatchNorms need at least 2 images per batch.
    Workers need no seeding: augmentation randomness comes from (seed, epoch, index) only.
    """
    generator = torch.Generator().manual_seed(int(seed)) if shuffle else None
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
