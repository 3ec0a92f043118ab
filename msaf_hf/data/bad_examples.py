"""Bad examples: the error that names them, and the statistics of the ones skipped (``--skip_bad_examples``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# --------------------------------------------------------------------------------------------------
SKIP_REASONS: dict[int, str] = {
    1: "unreadable_image",
    2: "unreadable_label",
    3: "size_mismatch",
    4: "label_out_of_range",
    5: "bad_label_format",
    6: "unknown_label_color",
}
_REASON_CODES = {name: code for code, name in SKIP_REASONS.items()}


class ExampleProblem(Exception):
    """Raised by sources/label mapping; the dataset turns it into a BadExampleError with full context."""

    def __init__(self, reason: str, detail: str, name: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.name = name


class BadExampleError(ValueError):
    """An example that cannot be used: unreadable file, image/label size mismatch or bad label values.

    Attributes: ``split``, ``index`` (in the dataset), ``source_index`` (row/file number in the source),
    ``name`` (file or example name when known), ``reason`` (one of ``SKIP_REASONS.values()``), ``detail``.
    Constructible from a message alone, so DataLoader workers can re-raise it in the main process.
    """

    def __init__(
        self,
        message: str,
        *,
        split: str | None = None,
        index: int | None = None,
        source_index: int | None = None,
        name: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.split, self.index, self.source_index = split, index, source_index
        self.name, self.reason, self.detail = name, reason, detail

    @classmethod
    def for_example(
        cls, split: str, index: int, source_index: int, name: str | None, reason: str, detail: str
    ) -> BadExampleError:
        """Build the error with a message naming the split, index, source row and file/example name."""
        where = f"split '{split}', index {index}"
        if source_index != index:
            where += f" (source row {source_index})"
        if name:
            where += f", name '{name}'"
        message = (
            f"Bad example in {where}: {detail}. Fix or remove it, or pass --skip_bad_examples to skip "
            "such examples (they are counted and logged)."
        )
        return cls(
            message, split=split, index=index, source_index=source_index, name=name, reason=reason, detail=detail
        )


class SkipStats:
    """Which examples of one split were found bad and skipped, shared across DataLoader workers.

    Badness is a property of the data (not of the augmentation), so it is recorded once per example in
    a shared-memory uint8 tensor (one reason code per index). Workers write it and the main process
    reads it, so the counts are right whatever ``num_workers`` is; writes are idempotent, so no lock is
    needed. An example is only known to be bad once some process has tried to read it.
    """

    def __init__(self, split: str, size: int) -> None:
        self.split = split
        self._codes = torch.zeros(max(size, 1), dtype=torch.uint8).share_memory_()
        self.unmatched_files = 0
        """Image files dropped when the source was built because no label file matched them."""

    def record(self, index: int, reason: str) -> bool:
        """Mark ``index`` bad; return True when it was not known to be bad before."""
        first = int(self._codes[index]) == 0
        self._codes[index] = _REASON_CODES.get(reason, 255)
        return first

    def is_bad(self, index: int) -> bool:
        """Whether ``index`` is already known to be bad."""
        return int(self._codes[index]) != 0

    @property
    def num_skipped(self) -> int:
        """Number of distinct bad examples found so far (not counting unmatched files)."""
        return int((self._codes != 0).sum())

    def counts(self) -> dict[str, int]:
        """Number of skipped examples per reason (only reasons seen)."""
        values, counts = torch.unique(self._codes[self._codes != 0], return_counts=True)
        return {SKIP_REASONS.get(int(v), "other"): int(c) for v, c in zip(values, counts, strict=False)}

    def bad_indices(self) -> list[int]:
        """Dataset indices found bad so far, ascending."""
        return torch.nonzero(self._codes, as_tuple=True)[0].tolist()

    def __repr__(self) -> str:
        return (
            f"SkipStats(split={self.split!r}, skipped={self.num_skipped}, by_reason={self.counts()}, "
            f"unmatched_files={self.unmatched_files})"
        )


@dataclass
class DataStats:
    """Skip statistics of both splits (read them at any time, e.g. after each epoch)."""

    train: SkipStats
    eval: SkipStats | None = None

    def summary(self) -> dict[str, int]:
        """Flat counts, handy for logging: ``{"train_skipped": .., "train_unmatched_files": .., ...}``."""
        out: dict[str, int] = {}
        for prefix, stats in (("train", self.train), ("eval", self.eval)):
            if stats is not None:
                out[f"{prefix}_skipped"] = stats.num_skipped
                out[f"{prefix}_unmatched_files"] = stats.unmatched_files
        return out
