"""Streaming (``--streaming``): the training split of a Hub dataset or a local parquet folder read as a stream.

What happens to the stream, in order (:func:`load_streaming_splits`):

1. ``datasets.load_dataset(..., streaming=True)`` opens it as a ``datasets.IterableDataset`` (nothing downloaded up
   front); image and label columns are read undecoded (:class:`~msaf_hf.data.sources.HubSource`, as map-style data);
2. ``take(max_train_samples)`` keeps the first N rows when asked;
3. ``shuffle(seed, buffer_size=shuffle_buffer_size)`` shuffles the shard order and then within a buffer of that many
   rows; ``set_epoch(epoch)`` reshuffles it every epoch (the seed of epoch ``e`` is derived from ``seed + e``);
4. ``datasets.distributed.split_dataset_by_node(rank, world_size)`` (rank and world size from Accelerate's
   ``PartialState``) gives each process its share: whole shards when their number is a multiple of the number of
   processes, else every ``world_size``-th row of the shuffled stream (every process then reads every row but
   decodes only its own);
5. :class:`StreamingSegmentationDataset` decodes, label-maps and validates each row with the map-style code
   (``HubSource.decode_row``, :func:`~msaf_hf.data.dataset.checked_label`: bad examples are named, or skipped with
   ``--skip_bad_examples``), and augments it with ``example_rng(seed, epoch, key)``, where ``key = k * world_size +
   rank`` for the ``k``-th row this process reads in the epoch. With the row-wise split, ``key`` is the row's
   position in the shuffled global stream.

An epoch is ``examples_per_epoch`` good examples on every process (the trainer sets it to the map-style number:
rows // (global batch x accumulation) optimiser steps), so every process runs the same number of steps. When a
process's share runs out before that (shards of unequal size, skipped bad examples) it reads its share again from the
start (with a warning); rows beyond it in a longer share are not used that epoch.

Resume is exact: :meth:`StreamingSegmentationDataset.state_dict` is (epoch, rows read, examples yielded) of this
process; after :meth:`load_state_dict` the next iteration of that epoch re-reads the epoch's stream (same seed, same
order) and drops the rows already read without decoding them. ``IterableDataset.state_dict()`` of ``datasets`` is not
used: by its documentation it loses the shuffle buffer's content on resume, so a resumed run would not be identical.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from .arguments import DataArguments
from .bad_examples import SKIP_REASONS, BadExampleError, ExampleProblem
from .dataset import SegmentationDataset, checked_label
from .label_formats import ColorTable, color_table_for_flag, find_columns
from .labels import LabelMapper, check_id2label, find_class_label, hub_id2label, load_id2label_file
from .sources import HubSource, pick_split
from .transforms import (
    SegmentationEvalTransform,
    SegmentationTrainTransform,
    Transform,
    eval_image_processor,
    example_rng,
    normalization_from_processor,
)

logger = logging.getLogger(__name__)



class StreamSkipStats:
    """The bad examples one process skipped in a stream (the counters of :class:`~msaf_hf.data.SkipStats`), keyed
    by the example's stream key."""

    def __init__(self, split: str) -> None:
        self.split = split
        self.unmatched_files = 0
        self._reasons: dict[int, str] = {}

    def record(self, key: int, reason: str) -> bool:
        first = key not in self._reasons
        self._reasons[key] = reason
        return first

    def is_bad(self, key: int) -> bool:
        return key in self._reasons

    @property
    def num_skipped(self) -> int:
        return len(self._reasons)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for reason in self._reasons.values():
            name = reason if reason in SKIP_REASONS.values() else "other"
            out[name] = out.get(name, 0) + 1
        return out

    def bad_indices(self) -> list[int]:
        return sorted(self._reasons)

    def __repr__(self) -> str:
        return f"StreamSkipStats(split={self.split!r}, skipped={self.num_skipped}, by_reason={self.counts()})"


class StreamingSegmentationDataset(torch.utils.data.IterableDataset):
    """One process's share of a streamed training split, as ``{"pixel_values", "labels"}`` examples.

    ``rows`` is the process's ``datasets.IterableDataset`` (shuffled, split by node, images undecoded); ``source``
    the :class:`HubSource` that decodes its rows. ``len()`` is the number of rows of the whole split (all processes).
    Iterate it in the training process (DataLoader ``num_workers=0``): its position is what checkpoints save.
    """

    def __init__(
        self,
        rows: Any,
        source: HubSource,
        transform: Transform,
        label_mapper: LabelMapper,
        *,
        num_rows: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        skip_bad_examples: bool = False,
        split: str = "train",
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"StreamingSegmentationDataset: rank {rank} is not in 0..{world_size - 1}.")
        self.rows, self.source, self.transform, self.label_mapper = rows, source, transform, label_mapper
        self.num_rows, self.rank, self.world_size = int(num_rows), int(rank), int(world_size)
        self.seed, self.skip_bad_examples, self.split = int(seed), skip_bad_examples, split
        self.examples_per_epoch: int | None = None
        """Good examples per epoch on this process (the same on every process); None: one pass over the share."""
        self.stats = StreamSkipStats(split)
        self.epoch = 0
        self.position = {"epoch": 0, "rows": 0, "examples": 0}
        """Where the last example handed out came from: epoch, rows read and examples yielded in that epoch."""
        self._resume_at: dict[str, int] | None = None
        self._warned_epochs: set[int] = set()

    def __len__(self) -> int:
        return self.num_rows

    @property
    def ignore_index(self) -> int:
        return self.label_mapper.ignore_index

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next iteration: it reshuffles the stream and keys the augmentation."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, int | None]:
        """This process's position (see :attr:`position`) and the epoch length it was read with."""
        return {**self.position, "examples_per_epoch": self.examples_per_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (of :meth:`state_dict`): the next iteration of ``state["epoch"]`` skips what was
        read; other epochs start at their beginning."""
        if state.get("examples_per_epoch") != self.examples_per_epoch:
            raise ValueError(
                f"The checkpoint's stream position was saved with {state.get('examples_per_epoch')} examples per "
                f"epoch and process, this run reads {self.examples_per_epoch}: resume with the checkpoint's batch "
                "size, accumulation and number of processes."
            )
        self._resume_at = {key: int(state[key]) for key in ("epoch", "rows", "examples")}
        self.position = dict(self._resume_at)

    def __iter__(self):
        if torch.utils.data.get_worker_info() is not None:
            raise RuntimeError(
                "StreamingSegmentationDataset is read in the training process (DataLoader num_workers=0): in worker "
                "processes each worker would read the whole share again and the checkpointed position would be wrong."
            )
        epoch, target = self.epoch, self.examples_per_epoch
        rows_done = examples_done = 0
        if self._resume_at is not None and self._resume_at["epoch"] == epoch:
            rows_done, examples_done = self._resume_at["rows"], self._resume_at["examples"]
        self._resume_at = None
        self.position = {"epoch": epoch, "rows": rows_done, "examples": examples_done}
        self.rows.set_epoch(epoch)
        read = 0
        while target is None or examples_done < target:
            read_in_pass = good_in_pass = 0
            for row in self.rows:
                key, read = read, read + 1
                read_in_pass += 1
                if key < rows_done:
                    continue  # read before the checkpoint: dropped undecoded
                example = self._example(row, key, epoch)
                if example is None:
                    continue  # bad, skipped (--skip_bad_examples)
                good_in_pass += 1
                examples_done += 1
                self.position = {"epoch": epoch, "rows": read, "examples": examples_done}
                yield example
                if target is not None and examples_done >= target:
                    return
            if read_in_pass == 0:
                raise ValueError(
                    f"{self.source.description}: process {self.rank} of {self.world_size} got no rows of the stream "
                    f"({self.num_rows} rows in all); use fewer processes or more data."
                )
            if good_in_pass == 0 and read > rows_done:
                raise RuntimeError(
                    f"Every example process {self.rank} read from {self.source.description} in epoch {epoch} is bad "
                    f"({self.stats}); nothing to train on. Run msaf-hf check-data on the data."
                )
            if target is None:
                return
            if epoch not in self._warned_epochs:
                self._warned_epochs.add(epoch)
                logger.warning(
                    "%s: the share of process %d ended after %d rows with %d of the %d examples of epoch %d "
                    "(shards of unequal size, or skipped bad examples); reading it again from its start.",
                    self.source.description, self.rank, read_in_pass, examples_done, target, epoch,
                )

    def _example(self, row: dict[str, Any], key: int, epoch: int) -> dict[str, torch.Tensor] | None:
        index = key * self.world_size + self.rank
        name = self.source.row_name(row)
        try:
            raw = self.source.decode_row(row, name)
            label = checked_label(raw.image, raw.label, self.label_mapper)
        except ExampleProblem as problem:
            error = BadExampleError.for_example(
                self.split, index, index, problem.name or name, problem.reason, problem.detail
            )
            if not self.skip_bad_examples:
                raise error from problem
            if self.stats.record(index, problem.reason):
                logger.warning("Skipping: %s", error)
            return None
        pixel_values, labels = self.transform(raw.image, label, example_rng(self.seed, epoch, index))
        return {"pixel_values": pixel_values, "labels": labels}


def load_streaming_splits(
    args: DataArguments,
    *,
    seed: int = 0,
    image_processor: Any = None,
    id2label: dict[int, str] | None = None,
    color_table: ColorTable | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> tuple[StreamingSegmentationDataset, SegmentationDataset | None, dict[int, str]]:
    """(training stream, evaluation dataset or None, id2label) of ``args.dataset_name`` (``load_segmentation_data``
    with ``--streaming``): the training split as a stream (see the module docstring), the evaluation split map-style
    (read into memory). Columns, colour masks (``--label_colors``, or ``color_table``) and class names as map-style
    data (``id2label`` wins). ``rank``/``world_size`` default to Accelerate's ``PartialState``."""
    import datasets
    from datasets.distributed import split_dataset_by_node

    args.check_streaming()
    if args.source_kind() != "hub":
        raise ValueError("--streaming needs --dataset_name.")
    if rank is None or world_size is None:
        from accelerate import PartialState

        state = PartialState()
        rank, world_size = state.process_index, state.num_processes
    where = f"dataset {args.dataset_name!r}"
    try:
        streams = datasets.load_dataset(
            args.dataset_name, args.dataset_config_name, cache_dir=args.dataset_cache_dir, streaming=True
        )
    except Exception as err:
        raise ValueError(
            f"Could not stream {where} with datasets.load_dataset(..., streaming=True) ({type(err).__name__}: "
            f"{err}). --dataset_name must be a Hub dataset id or a local folder of parquet shards."
        ) from err
    if not isinstance(streams, datasets.IterableDatasetDict):
        streams = datasets.IterableDatasetDict({args.train_split: streams})
    train_split = pick_split(list(streams), args.train_split, "--train_split", where, can_carve=False)
    description = f"{where}, split '{train_split}' (streamed)"
    image_column, label_column = find_columns(streams[train_split].features, args.image_column, args.label_column,
                                              description)
    source = HubSource(streams[train_split], image_column, label_column, args.name_column, description)
    color_table = color_table_for_flag(args.label_colors, color_table, ignore_index=args.ignore_index,
                                       unknown_to_ignore=args.unknown_colors_to_ignore)
    if color_table is not None:
        source.label_decoder = color_table.decode
    num_rows = count_rows(args, train_split)
    rows = source.dataset
    if args.max_train_samples is not None:
        rows = rows.take(args.max_train_samples)
        num_rows = args.max_train_samples if num_rows is None else min(num_rows, args.max_train_samples)
    if num_rows is None:
        raise ValueError(
            f"--streaming: the number of rows of {description} is unknown (its dataset card gives no split sizes "
            "and its files are not parquet); pass --max_train_samples N to set the epoch length."
        )
    rows = rows.shuffle(seed=seed, buffer_size=args.shuffle_buffer_size)
    rows = split_dataset_by_node(rows, rank=rank, world_size=world_size)

    if id2label is None and args.id2label_file is None and color_table is not None and color_table.names is not None:
        id2label = {i: color_table.names.get(i, f"class_{i}") for i in color_table.class_ids}
    if id2label is not None:  # the model's label set
        id2label = {int(k): str(v) for k, v in sorted(id2label.items(), key=lambda item: int(item[0]))}
        check_id2label(id2label, f"the id2label given for {where}")
    else:
        id2label = _resolve_id2label(args, source, where)
    processor = image_processor or eval_image_processor(args.eval_size, args.ignore_index, args.reduce_labels)
    mean, std = normalization_from_processor(processor)  # train inputs normalised as the saved processor does
    void_labels = tuple(args.void_labels)
    mapper = LabelMapper(len(id2label), args.ignore_index, void_labels, args.reduce_labels)
    transform = SegmentationTrainTransform(
        args.resolved_crop_size(), args.scale_range, args.scale_step, args.base_size, args.hflip_probability,
        args.ignore_index, image_mean=mean, image_std=std,
    )
    train = StreamingSegmentationDataset(
        rows, source, transform, mapper, num_rows=num_rows, rank=rank, world_size=world_size, seed=seed,
        skip_bad_examples=args.skip_bad_examples, split="train",
    )
    eval_dataset = None
    if args.eval_split is not None:
        eval_split = pick_split(list(streams), args.eval_split, "--eval_split", where, can_carve=False)
        eval_dataset = _in_memory_eval(args, streams[eval_split], f"{where}, split '{eval_split}'", mapper, seed,
                                       processor, color_table)
    train.id2label = id2label
    if eval_dataset is not None:
        eval_dataset.id2label = id2label
    return train, eval_dataset, id2label


def _in_memory_eval(args: DataArguments, stream: Any, where: str, mapper: LabelMapper, seed: int,
                    image_processor: Any, color_table: ColorTable | None) -> SegmentationDataset:
    """The evaluation split read from its stream into a map-style dataset (files undecoded, so it stays small)."""
    import datasets

    image_column, label_column = find_columns(stream.features, args.image_column, args.label_column, where)
    source = HubSource(stream, image_column, label_column, args.name_column, where)
    rows = source.dataset
    if args.max_eval_samples is not None:
        rows = rows.take(args.max_eval_samples)
    table = datasets.Dataset.from_list(list(rows), features=rows.features)
    if len(table) == 0:
        raise ValueError(f"{where} is empty.")
    processor = image_processor or eval_image_processor(args.eval_size, args.ignore_index, args.reduce_labels)
    table_source = HubSource(table, image_column, label_column, source.name_column, where)
    if color_table is not None:
        table_source.label_decoder = color_table.decode
    return SegmentationDataset(
        table_source, "eval", SegmentationEvalTransform(processor), mapper, seed=seed,
        skip_bad_examples=args.skip_bad_examples, replacement="masked",
    )


def count_rows(args: DataArguments, split: str) -> int | None:
    """Rows of ``split``: the split sizes of the dataset card, else the parquet footers of its files; None when
    neither is available."""
    import datasets
    import fsspec
    import pyarrow.parquet as pq

    try:
        builder = datasets.load_dataset_builder(args.dataset_name, args.dataset_config_name,
                                                cache_dir=args.dataset_cache_dir)
        splits = builder.info.splits or {}
        if split in splits and splits[split].num_examples:
            return int(splits[split].num_examples)
        files = next((list(f) for name, f in (builder.config.data_files or {}).items() if str(name) == split), [])
        if not files or not all(str(f).endswith(".parquet") for f in files):
            return None
        total = 0
        for path in files:
            with fsspec.open(str(path), "rb") as handle:  # local paths and hf:// URLs alike; reads only the footer
                total += pq.read_metadata(handle).num_rows
        return total
    except Exception as err:  # the caller asks for --max_train_samples instead
        logger.warning("Could not count the rows of split '%s' of %s (%s: %s).", split, args.dataset_name,
                       type(err).__name__, err)
        return None


def _resolve_id2label(args: DataArguments, source: HubSource, where: str) -> dict[int, str]:
    """``--id2label_file``, else a ``ClassLabel`` label feature, else ``id2label.json`` beside the data (local
    folder or Hub repository root). A stream is not scanned to infer the number of classes."""
    id2label: dict[int, str] | None = None
    if args.id2label_file is not None:
        id2label = load_id2label_file(args.id2label_file)
    else:
        class_label = find_class_label(source.features[source.label_column])
        if class_label is not None:
            id2label = dict(enumerate(class_label.names))
        elif Path(args.dataset_name).is_dir():
            candidate = Path(args.dataset_name) / "id2label.json"
            id2label = load_id2label_file(candidate) if candidate.is_file() else None
        else:
            id2label = hub_id2label(args.dataset_name)
    if id2label is None:
        raise ValueError(
            f"No class names found for {where} (no ClassLabel feature, no id2label.json beside the data), and a "
            "stream is not scanned to infer them: pass --id2label_file path/to/id2label.json ({\"0\": \"name0\", ...})."
        )
    check_id2label(id2label, f"class names of {where}")
    return id2label
