"""The training data order: a pure function of (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """A shuffle that is a pure function of ``(seed, epoch)``, truncated to ``num_used`` indices.

    Truncating to a multiple of (global batch x accumulation steps) gives every process the same number of
    whole optimiser steps per epoch, so nothing is padded or repeated and the epoch ends on an optimiser step.
    """

    def __init__(self, num_samples: int, seed: int, num_used: int | None = None) -> None:
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.num_used = self.num_samples if num_used is None else int(num_used)
        if not 0 < self.num_used <= self.num_samples:
            raise ValueError(f"EpochShuffleSampler: num_used must be in 1..{self.num_samples}, got {self.num_used}.")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def permutation(self, epoch: int | None = None) -> list[int]:
        """The indices of one epoch, in order."""
        epoch = self.epoch if epoch is None else int(epoch)
        # SeedSequence decorrelates neighbouring (seed, epoch) pairs; a private generator keeps global RNGs untouched.
        key = int(np.random.SeedSequence([self.seed, epoch, 0x5EED]).generate_state(1, np.uint64)[0] >> 1)
        generator = torch.Generator().manual_seed(key)
        return torch.randperm(self.num_samples, generator=generator)[: self.num_used].tolist()

    def __iter__(self):
        return iter(self.permutation())

    def __len__(self) -> int:
        return self.num_used
