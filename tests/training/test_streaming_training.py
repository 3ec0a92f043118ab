"""Training with ``--streaming`` (msaf_hf.training.streaming_state): exact resume in one process, and, for real with
two CPU processes (gloo) started by ``accelerate launch`` from a fresh interpreter, every training example seen once
per epoch and a killed, resumed run ending with the weights of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests"))
from streaming_fixtures import row_of, write_parquet_folder  # noqa: E402

ACCELERATE_CONFIG = REPO_ROOT / "configuration" / "accelerate" / "cpu_2proc.yaml"


class Crash(Exception):
    """Stands for the process being killed."""


def crash_at(step: int):
    def callback(state) -> None:
        if state.global_step == step:
            raise Crash(f"killed after step {step}")

    return callback


def streamed_run(data_dir: Path, output_dir: Path, **overrides):
    from msaf_hf.data import DataArguments
    from msaf_hf.training import DSNetTrainingArguments, ModelArguments

    data = {"dataset_name": str(data_dir), "streaming": True, "shuffle_buffer_size": 5, "crop_size": [32, 32],
            "eval_split": "none"}
    training = {"output_dir": str(output_dir), "max_steps": 10, "per_device_train_batch_size": 2,
                "gradient_accumulation_steps": 2, "logging_steps": 1, "checkpointing_steps": "4",
                "disable_tqdm": True}
    for key, value in overrides.items():
        (data if key in DataArguments.__dataclass_fields__ else training)[key] = value
    return (ModelArguments(config_overrides="base_channels=4,ohem_min_kept=64"), DataArguments(**data),
            DSNetTrainingArguments(**training))


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread_and_fresh_accelerate_state")
def test_a_streamed_run_killed_and_resumed_ends_like_an_uninterrupted_one(tmp_path):
    """24 rows (one bad, skipped: the share is read again to fill an epoch), 2 x 2 accumulation = 6 steps per epoch;
    killed after step 9, resumed from checkpoint-8 (mid-epoch 1: 4 of its 12 micro-batches consumed)."""
    from msaf_hf.training import TrainerState, list_checkpoints, train

    data_dir = write_parquet_folder(tmp_path / "data", num_rows=24, num_shards=3, bad_row=7)
    common = {"skip_bad_examples": True, "eval_split": "validation", "scale_range": [0.5, 2.0]}
    reference = train(*streamed_run(data_dir, tmp_path / "a", **common))
    assert reference.global_step == 10
    _reset_accelerate()
    with pytest.raises(Crash):
        train(*streamed_run(data_dir, tmp_path / "b", **common), callbacks=[crash_at(9)])
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["checkpoint-4", "checkpoint-8"]
    saved = TrainerState.load(tmp_path / "b" / "checkpoint-8")
    assert (saved.global_step, saved.epoch, saved.batches_in_epoch) == (8, 1, 4)
    position = torch.load(tmp_path / "b" / "checkpoint-8" / "custom_checkpoint_0.pkl", weights_only=False)
    assert position["num_processes"] == 1
    assert position["positions"][0]["epoch"] == 1 and position["positions"][0]["examples"] == 8
    _reset_accelerate()
    resumed = train(*streamed_run(data_dir, tmp_path / "b", resume_from_checkpoint="latest", **common))
    assert resumed.global_step == 10

    expected = load_file(tmp_path / "a" / "final" / "model.safetensors")
    actual = load_file(tmp_path / "b" / "final" / "model.safetensors")
    assert expected.keys() == actual.keys()
    assert [k for k in expected if not torch.equal(expected[k], actual[k])] == []

    def late(folder):
        return [(h["step"], h["loss"], h["learning_rate"]) for h in TrainerState.load(folder).log_history
                if "loss" in h and h["step"] > 8]

    assert late(tmp_path / "a") == late(tmp_path / "b") and len(late(tmp_path / "a")) == 2
    assert reference.metrics["mean_iou"] == resumed.metrics["mean_iou"]


def test_a_stream_position_resumes_only_with_the_same_number_of_processes():
    from msaf_hf.training.streaming_state import StreamPositions

    dataset = SimpleNamespace(load_state_dict=lambda state: None)
    positions = StreamPositions(dataset, SimpleNamespace(num_processes=1, process_index=0))
    with pytest.raises(ValueError, match="written by 2 processes .* this run has 1.*same number of processes"):
        positions.load_state_dict({"num_processes": 2, "positions": [{}, {}]})


def test_class_weights_auto_is_refused_with_a_stream(tmp_path):
    from msaf_hf.data import DataArguments, load_segmentation_data
    from msaf_hf.training.models import resolve_class_weights

    data_dir = write_parquet_folder(tmp_path / "data", num_rows=4, num_shards=1)
    data = load_segmentation_data(DataArguments(dataset_name=str(data_dir), streaming=True, eval_split="none"))
    with pytest.raises(ValueError, match="--class_weights auto .* --streaming .* --class_weights FILE.json"):
        resolve_class_weights("auto", data)


# --------------------------------------------------------------------------------------------------
# Two real processes
# --------------------------------------------------------------------------------------------------
def _worker(data_dir: str, output_dir: str, mode: str) -> None:
    """Runs in every launched process: 24 rows, 2 processes x 2 images = 6 steps per epoch, 12 steps (2 epochs)."""
    from accelerate import PartialState

    from msaf_hf import DSNetForSemanticSegmentation
    from msaf_hf.training import train

    torch.set_num_threads(1)
    seen: list[int] = []
    forward = DSNetForSemanticSegmentation.forward

    def recording_forward(self, pixel_values=None, **kwargs):
        if self.training:  # what each training step of this process was given
            seen.extend(row_of(image) for image in pixel_values)
        return forward(self, pixel_values=pixel_values, **kwargs)

    DSNetForSemanticSegmentation.forward = recording_forward
    resume = {"resume_from_checkpoint": "latest"} if mode == "resume" else {}
    arguments = streamed_run(Path(data_dir), Path(output_dir), max_steps=12, gradient_accumulation_steps=1,
                             scale_range=[1.0, 1.0], **resume)
    try:
        output = train(*arguments, callbacks=[crash_at(9)] if mode == "crash" else ())
        step = output.global_step
    except Crash:
        step = -9
    rank = PartialState().process_index  # (after train: its Accelerator sets up the CPU process group)
    with open(os.path.join(output_dir, f"{mode}_rank{rank}.json"), "w") as handle:
        json.dump({"rows": seen, "global_step": step, "num_processes": PartialState().num_processes}, handle)


def _launch(tmp_path: Path, data_dir: Path, output_dir: Path, mode: str) -> None:
    launcher = Path(sys.executable).with_name("accelerate")
    if not launcher.is_file():
        pytest.skip(f"the accelerate launcher is not installed next to {sys.executable}")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [str(launcher), "launch", "--config_file", str(ACCELERATE_CONFIG), "--main_process_port", str(port),
               __file__, str(data_dir), str(output_dir), mode]
    # A fresh interpreter (not forked from pytest); on a timeout the launcher and both ranks go.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"accelerate launch ({mode}) timed out:\n{stdout[-3000:]}\n{stderr[-5000:]}")
    assert process.returncode == 0, stdout[-3000:] + stderr[-5000:]


@pytest.mark.slow
def test_two_processes_stream_every_example_once_per_epoch_and_resume_exactly(tmp_path):
    data_dir = write_parquet_folder(tmp_path / "data", num_rows=24, num_shards=3)
    _launch(tmp_path, data_dir, tmp_path / "a", "full")
    runs = [json.loads((tmp_path / "a" / f"full_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(run["num_processes"] == 2 and run["global_step"] == 12 for run in runs)
    for epoch in (0, 1):
        rows = [run["rows"][12 * epoch: 12 * (epoch + 1)] for run in runs]
        assert sorted(rows[0] + rows[1]) == list(range(24)), rows  # every example once, on one process
    assert runs[0]["rows"][:12] != runs[0]["rows"][12:]  # reshuffled

    _launch(tmp_path, data_dir, tmp_path / "b", "crash")
    _launch(tmp_path, data_dir, tmp_path / "b", "resume")
    crashed = [json.loads((tmp_path / "b" / f"crash_rank{rank}.json").read_text()) for rank in (0, 1)]
    resumed = [json.loads((tmp_path / "b" / f"resume_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [run["global_step"] for run in crashed + resumed] == [-9, -9, 12, 12]
    for rank in (0, 1):  # resumed from checkpoint-8: the rows after it are the uninterrupted run's
        assert crashed[rank]["rows"][:16] + resumed[rank]["rows"] == runs[rank]["rows"]
    expected = load_file(tmp_path / "a" / "final" / "model.safetensors")
    actual = load_file(tmp_path / "b" / "final" / "model.safetensors")
    assert [k for k in expected if not torch.equal(expected[k], actual[k])] == []
    losses = [[h["loss"] for h in json.loads((tmp_path / run / "trainer_state.json").read_text())["log_history"]
               if "loss" in h] for run in ("a", "b")]
    assert losses[0][-1] == losses[1][-1]


if __name__ == "__main__":
    _worker(*sys.argv[1:4])
