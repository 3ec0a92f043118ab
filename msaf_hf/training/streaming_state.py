"""Training on a stream (``--streaming``): its loader and its position in the checkpoints.

Accelerate's ``prepare`` is not given the streaming loader: for an ``IterableDataset`` it would either dispatch
batches read on the main process (``dispatch_batches=True``, its default for iterable datasets) or re-split each
process's batches with ``IterableDatasetShard`` / ``datasets.IterableDataset.shard`` (``dispatch_batches=False``),
while every process already reads its own share (``split_dataset_by_node``). :class:`StreamingLoader` batches the
share in the training process and moves the batches to the device itself; gradient accumulation then syncs every
``gradient_accumulation_steps`` micro-batches (Accelerate's step counter, saved and restored with the state), which is
where the epochs end too (an epoch is a whole number of optimiser steps on every process).

:class:`StreamPositions` is registered with ``Accelerator.register_for_checkpointing``: ``save_state`` writes the
position of every process (gathered to the main process) to ``custom_checkpoint_<i>.pkl`` and ``load_state`` gives
each process its own, so a resumed run continues each share exactly where it stopped.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..data import StreamingSegmentationDataset, collate_fn

logger = logging.getLogger(__name__)


def is_streaming(dataset: Any) -> bool:
    return isinstance(dataset, StreamingSegmentationDataset)


class StreamingLoader:
    """Batches of one process's share of the stream, on ``device``; ``batches_per_epoch`` of them per epoch."""

    def __init__(self, dataset: StreamingSegmentationDataset, batch_size: int, batches_per_epoch: int,
                 device: torch.device) -> None:
        self.dataset, self.batches_per_epoch, self.device = dataset, batches_per_epoch, device
        dataset.examples_per_epoch = batches_per_epoch * batch_size
        # num_workers=0: the dataset's position must be that of the batches the loop has received (no prefetch).
        self.loader = DataLoader(dataset, batch_size=batch_size, drop_last=True, collate_fn=collate_fn, num_workers=0)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self):
        for batch in self.loader:
            yield {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}


class StreamPositions:
    """Every process's stream position, for ``Accelerator.register_for_checkpointing``."""

    def __init__(self, dataset: StreamingSegmentationDataset, accelerator: Any) -> None:
        self.dataset, self.accelerator = dataset, accelerator

    def state_dict(self) -> dict[str, Any]:
        """Called on every process by ``save_state`` (the main process writes it): the positions of all."""
        from accelerate.utils import gather_object

        positions = [self.dataset.state_dict()]
        if self.accelerator.num_processes > 1:
            positions = gather_object(positions)
        return {"num_processes": self.accelerator.num_processes, "positions": positions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_processes"] != self.accelerator.num_processes:
            raise ValueError(
                f"The checkpoint was written by {state['num_processes']} processes reading their own shares of the "
                f"stream; this run has {self.accelerator.num_processes}. A streamed run resumes only with the same "
                "number of processes."
            )
        self.dataset.load_state_dict(state["positions"][self.accelerator.process_index])


def streaming_loader(dataset: StreamingSegmentationDataset, accelerator: Any, batch_size: int,
                     batches_per_epoch: int, num_workers: int = 0) -> StreamingLoader:
    """The loader of a streamed training split, its position registered for checkpointing (before any resume)."""
    if num_workers > 0:
        logger.warning("--streaming: the training stream is read in the training process; --num_workers %d applies "
                       "to the evaluation data only.", num_workers)
    accelerator.register_for_checkpointing(StreamPositions(dataset, accelerator))
    return StreamingLoader(dataset, batch_size, batches_per_epoch, accelerator.device)
