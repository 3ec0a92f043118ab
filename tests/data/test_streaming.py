"""``--streaming`` data (msaf_hf.data.streaming): per-process shares, per-epoch coverage, the map-style decoding and
validation, exact positions, and the refused combinations. Per-process streams are built here with an explicit rank
and world size; tests/training/test_streaming_training.py runs them in two real processes."""

from __future__ import annotations

import logging

import pytest
import torch

from msaf_hf.data import BadExampleError, DataArguments, StreamingSegmentationDataset, load_segmentation_data

try:  # imported as part of a `tests` package
    from ..streaming_fixtures import row_of, write_parquet_folder
except ImportError:  # tests/ on sys.path (pytest's default layout)
    from streaming_fixtures import row_of, write_parquet_folder


@pytest.fixture(scope="module")
def parquet_folder(tmp_path_factory):
    return write_parquet_folder(tmp_path_factory.mktemp("stream") / "data", num_rows=24, num_shards=3)


def streaming_args(folder, **overrides) -> DataArguments:
    values = {"dataset_name": str(folder), "streaming": True, "crop_size": [32, 32], "scale_range": [1.0, 1.0],
              "shuffle_buffer_size": 5, "eval_split": "none"}
    values.update(overrides)
    return DataArguments(**values)


def share(args: DataArguments, rank: int, world_size: int, per_process: int | None, seed: int = 3):
    from msaf_hf.data import load_streaming_splits

    train, _, _ = load_streaming_splits(args, seed=seed, rank=rank, world_size=world_size)
    train.examples_per_epoch = per_process
    return train


def rows_of_epoch(dataset: StreamingSegmentationDataset, epoch: int) -> list[int]:
    dataset.set_epoch(epoch)
    return [row_of(example["pixel_values"]) for example in dataset]


@pytest.mark.slow
@pytest.mark.parametrize("num_shards, world_size", [(3, 2), (4, 2)])
def test_every_row_once_per_epoch_across_processes(tmp_path, num_shards, world_size):
    """Row-wise split (3 shards over 2 processes), shard-wise split (4 shards over 2 processes)."""
    folder = write_parquet_folder(tmp_path / "data", num_rows=24, num_shards=num_shards)
    args = streaming_args(folder)
    per_process = 24 // world_size
    orders = []
    for epoch in (0, 1):
        seen = [rows_of_epoch(share(args, rank, world_size, per_process), epoch) for rank in range(world_size)]
        assert all(len(rows) == per_process for rows in seen)
        assert sorted(sum(seen, [])) == list(range(24)), seen  # every row, once
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled every epoch
    again = [rows_of_epoch(share(args, rank, world_size, per_process), 1) for rank in range(world_size)]
    assert again == orders[1]  # a function of (seed, epoch)
    if world_size > 1:
        other_seed = [rows_of_epoch(share(args, rank, world_size, per_process, seed=4), 1)
                      for rank in range(world_size)]
        assert other_seed != orders[1]


def test_len_is_the_number_of_rows_and_max_train_samples_takes_the_first_rows(parquet_folder):
    assert len(share(streaming_args(parquet_folder), 0, 2, None)) == 24
    args = streaming_args(parquet_folder, max_train_samples=10)
    seen = [rows_of_epoch(share(args, rank, 2, None), 0) for rank in (0, 1)]
    assert len(share(args, 0, 2, None)) == 10
    assert sorted(sum(seen, [])) == list(range(10))


@pytest.mark.parametrize("label_format", ["index", pytest.param("colour", marks=pytest.mark.slow)])
def test_streamed_examples_are_decoded_mapped_and_validated_like_map_style(parquet_folder, tmp_path, label_format):
    """Same decoding (index masks; colour masks with --label_colors and auto-detected pixel_values/annotation
    columns), label mapping (--void_labels 2) and transform as map-style data (deterministic here)."""
    common = {"void_labels": [2], "hflip_probability": 0.0}
    if label_format == "colour":
        parquet_folder = write_parquet_folder(tmp_path / "data", colors=True, columns=("pixel_values", "annotation"))
        common["label_colors"] = str(tmp_path / "colors.json")
    streamed = share(streaming_args(parquet_folder, **common), 0, 1, None)
    streamed.set_epoch(0)
    by_row = {row_of(example["pixel_values"]): example for example in streamed}
    mapped = load_segmentation_data(streaming_args(parquet_folder, streaming=False, **common), seed=3).train
    assert len(by_row) == len(mapped) == 24
    for index in range(24):
        expected = mapped[index]
        row = row_of(expected["pixel_values"])
        assert torch.equal(by_row[row]["pixel_values"], expected["pixel_values"])
        assert torch.equal(by_row[row]["labels"], expected["labels"])
        assert set(expected["labels"].unique().tolist()) == {0, 1, 255}


def test_eval_split_stays_map_style(parquet_folder):
    data = load_segmentation_data(streaming_args(parquet_folder, eval_split="validation"), seed=3)
    assert isinstance(data.train, StreamingSegmentationDataset)
    assert len(data.eval) == 4 and data.eval[3]["labels"].shape == (32, 32)
    assert data.id2label == {0: "class0", 1: "class1", 2: "class2"}


# Slow: a parquet stream closed before its end costs 5 s in datasets (its wait for arrow's reader threads to stop).
@pytest.mark.slow
def test_a_bad_example_is_named_or_skipped(tmp_path, caplog):
    folder = write_parquet_folder(tmp_path / "data", num_rows=12, num_shards=2, bad_row=5)
    dataset = share(streaming_args(folder), 0, 1, None)
    with pytest.raises(BadExampleError, match=r"name 'ex05'.*label values \[7\]"):
        list(dataset)
    dataset = share(streaming_args(folder, skip_bad_examples=True), 0, 1, 12)
    with caplog.at_level(logging.WARNING):
        rows = rows_of_epoch(dataset, 0)
    # 11 good rows, then the share is read again from its start to fill the epoch's 12 examples.
    assert len(rows) == 12 and 5 not in rows and sorted(set(rows)) == [r for r in range(12) if r != 5]
    assert dataset.stats.num_skipped >= 1 and set(dataset.stats.counts()) == {"label_out_of_range"}
    assert "Skipping: Bad example" in caplog.text and "reading it again from its start" in caplog.text


@pytest.mark.slow
def test_a_saved_position_continues_the_epoch_exactly(tmp_path):
    folder = write_parquet_folder(tmp_path / "data", num_rows=12, num_shards=2, bad_row=4)
    args = streaming_args(folder, skip_bad_examples=True, scale_range=[0.5, 2.0], crop_size=[16, 16])
    whole = share(args, 1, 2, 8)
    whole.set_epoch(2)
    uninterrupted = list(whole)
    first = share(args, 1, 2, 8)
    first.set_epoch(2)
    iterator = iter(first)
    head = [next(iterator) for _ in range(3)]
    state = first.state_dict()
    assert state["epoch"] == 2 and state["examples"] == 3 and state["rows"] >= 3
    resumed = share(args, 1, 2, 8)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)
    tail = list(resumed)
    assert len(head) + len(tail) == len(uninterrupted) == 8
    for got, expected in zip(head + tail, uninterrupted, strict=True):
        assert torch.equal(got["pixel_values"], expected["pixel_values"])
        assert torch.equal(got["labels"], expected["labels"])
    resumed.set_epoch(3)  # the next epoch starts at its beginning
    assert len(list(resumed)) == 8
    resumed.examples_per_epoch = 6
    with pytest.raises(ValueError, match="8 examples per epoch and process, this run reads 6"):
        resumed.load_state_dict(state)


@pytest.mark.parametrize("overrides, message", [
    ({"dataset_name": None, "synthetic": True}, "--synthetic data is read from local files"),
    ({"dataset_name": None, "image_dir": "imgs", "mask_dir": "masks"}, "--image_dir data is read from local files"),
    ({"dataset_name": None, "cityscapes_root": "cs"}, "--cityscapes_root data is read from local files"),
    ({"dataset_name": None, "coco_annotations": "a.json", "image_dir": "imgs"},
     "--coco_annotations data is read from local files"),
    ({"eval_split_fraction": 0.2}, "--eval_split_fraction needs random access"),
    ({"shuffle_buffer_size": 0}, "shuffle_buffer_size must be >= 1"),
])
def test_unsupported_combinations_are_refused(parquet_folder, overrides, message):
    with pytest.raises(ValueError, match=message):
        streaming_args(parquet_folder, **overrides)


def test_unknown_number_of_rows_needs_max_train_samples(parquet_folder, monkeypatch):
    from msaf_hf.data import streaming

    monkeypatch.setattr(streaming, "count_rows", lambda args, split: None)
    with pytest.raises(ValueError, match="number of rows of .* is unknown.*--max_train_samples"):
        share(streaming_args(parquet_folder), 0, 1, None)
    assert len(share(streaming_args(parquet_folder, max_train_samples=6), 0, 1, None)) == 6


def test_missing_class_names_are_asked_for(tmp_path):
    folder = write_parquet_folder(tmp_path / "data", num_rows=4, num_shards=1)
    (folder / "id2label.json").unlink()
    with pytest.raises(ValueError, match="a stream is not scanned.*--id2label_file"):
        share(streaming_args(folder), 0, 1, None)


def test_reading_in_dataloader_workers_is_refused(parquet_folder):
    loader = torch.utils.data.DataLoader(share(streaming_args(parquet_folder), 0, 1, None), batch_size=2,
                                         num_workers=1)
    with pytest.raises(RuntimeError, match="num_workers=0"):
        next(iter(loader))
