"""Distributed training and evaluation for real: two CPU processes (gloo) started by `accelerate launch`.

The test launches this file as the training script; each process trains a few steps with the library, evaluates,
and writes its final weights and the all-reduced confusion matrix. The test then checks that both processes end
with identical weights and that the 2-process confusion matrix equals the single-process one on the same
evaluation set (5 images: uneven shards of 3 and 2).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # every test here launches processes with `accelerate launch`

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCELERATE_CONFIG = REPO_ROOT / "configuration" / "accelerate" / "cpu_2proc.yaml"


def _arguments(output_dir: str):
    from msaf_hf.data import DataArguments
    from msaf_hf.training import DSNetTrainingArguments, ModelArguments

    return (
        ModelArguments(config_overrides="base_channels=4,ohem_min_kept=64"),
        DataArguments(synthetic=True, synthetic_num_train=24, synthetic_num_eval=5, synthetic_image_size=[32, 32]),
        DSNetTrainingArguments(output_dir=output_dir, max_steps=6, per_device_train_batch_size=2, logging_steps=2,
                          eval_steps="3", checkpointing_steps="3", disable_tqdm=True),
    )


def _worker(output_dir: str) -> None:
    """Runs in every launched process."""
    from accelerate import PartialState
    from safetensors.torch import save_file

    from msaf_hf.training import train

    torch.set_num_threads(1)
    # Count the DDP wrappers still alive when the process group is destroyed: one that outlives it destroys the
    # group from its Reducer while holding the GIL, which can deadlock with Gloo's worker threads at exit.
    from accelerate import Accelerator

    ddp_alive_at_destroy = []
    end_training = Accelerator.end_training

    def counting_end_training(self):
        ddp = torch.nn.parallel.DistributedDataParallel
        ddp_alive_at_destroy.append(sum(isinstance(obj, ddp) for obj in gc.get_objects()))
        return end_training(self)

    Accelerator.end_training = counting_end_training
    output = train(*_arguments(output_dir))
    state = PartialState()
    rank = state.process_index
    weights = {k: v.detach().clone().contiguous() for k, v in output.model.state_dict().items()}
    save_file(weights, os.path.join(output_dir, f"rank{rank}_weights.safetensors"))
    save_file({"confusion_matrix": output.confusion_matrix}, os.path.join(output_dir, f"rank{rank}_cm.safetensors"))
    with open(os.path.join(output_dir, f"rank{rank}.json"), "w") as handle:
        json.dump({"num_processes": state.num_processes, "backend": str(state.backend),
                   "device": str(state.device), "global_step": output.global_step,
                   "ddp_alive_at_destroy": ddp_alive_at_destroy}, handle)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_train_identically_and_evaluate_exactly(tmp_path):
    from safetensors.torch import load_file

    launcher = Path(sys.executable).with_name("accelerate")
    if not launcher.is_file():
        pytest.skip(f"the accelerate launcher is not installed next to {sys.executable}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}  # noqa: E501
    env.pop("CUDA_VISIBLE_DEVICES", None)
    command = [str(launcher), "launch", "--config_file", str(ACCELERATE_CONFIG), "--main_process_port", str(_free_port()),  # noqa: E501
               __file__, str(tmp_path)]
    # On a timeout the launcher and both ranks must go: killing only the launcher would leave a rank blocked in a
    # collective, holding its port, for every later run.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.terminate()  # on SIGTERM the launcher's agent stops its workers (each runs in a session of its own)
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        pytest.fail(f"accelerate launch timed out after 300 s (all its processes killed):\n"
                    f"{stdout[-3000:]}\n{stderr[-5000:]}")
    assert process.returncode == 0, stdout[-3000:] + stderr[-5000:]

    infos = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(info["num_processes"] == 2 and info["global_step"] == 6 for info in infos), infos
    assert infos[0]["backend"] == "gloo"
    assert all(info["ddp_alive_at_destroy"] == [0] for info in infos), infos

    # Identical weights (parameters and BatchNorm buffers) on both processes.
    rank0, rank1 = (load_file(tmp_path / f"rank{rank}_weights.safetensors") for rank in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert [k for k in rank0 if not torch.equal(rank0[k], rank1[k])] == []

    # The distributed confusion matrix is exactly the single-process one of the saved final model.
    from accelerate.state import AcceleratorState

    from msaf_hf import DSNetForSemanticSegmentation
    from msaf_hf.data import load_segmentation_data
    from msaf_hf.evaluation import evaluate

    distributed = [load_file(tmp_path / f"rank{rank}_cm.safetensors")["confusion_matrix"] for rank in (0, 1)]
    assert torch.equal(distributed[0], distributed[1])
    model_args, data_args, training_args = _arguments(str(tmp_path))
    data = load_segmentation_data(data_args, seed=training_args.seed)
    final = DSNetForSemanticSegmentation.from_pretrained(tmp_path / "final")
    assert all(torch.equal(v, rank0[k]) for k, v in final.state_dict().items())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = evaluate(final, data.eval, show_progress=False)
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(True)
    assert torch.equal(distributed[0], single.confusion_matrix)
    valid_pixels = sum(int((data.eval[i]["labels"] != data.ignore_index).sum()) for i in range(len(data.eval)))
    assert int(distributed[0].sum()) == valid_pixels  # 5 images over 2 processes: none counted twice

    # Checkpoints were written once, atomically, by the two processes together.
    checkpoints = sorted(p.name for p in tmp_path.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-3", "checkpoint-6"]
    assert {p.name for p in (tmp_path / "checkpoint-6").glob("random_states_*.pkl")} == {
        "random_states_0.pkl", "random_states_1.pkl"}


def _refused_worker(output_dir: str) -> None:
    """Runs in every launched process when another run holds the folder: each must learn the verdict and stop."""
    from accelerate import PartialState

    from msaf_hf.training import train
    from msaf_hf.training.run_folder import OutputDirLockedError

    try:
        train(*_arguments(output_dir))
    except OutputDirLockedError as err:
        with open(os.path.join(output_dir, f"refused{PartialState().process_index}.txt"), "w") as handle:
            handle.write(str(err))
        sys.exit(3)


def test_a_locked_folder_stops_every_process_of_a_distributed_run(tmp_path):
    """Only the main process takes the lock; the other one learns its verdict and stops too (no hang)."""
    from msaf_hf.training.run_folder import RunLock

    launcher = Path(sys.executable).with_name("accelerate")
    if not launcher.is_file():
        pytest.skip(f"the accelerate launcher is not installed next to {sys.executable}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}  # noqa: E501
    env.pop("CUDA_VISIBLE_DEVICES", None)
    command = [str(launcher), "launch", "--config_file", str(ACCELERATE_CONFIG), "--main_process_port", str(_free_port()),  # noqa: E501
               __file__, str(tmp_path), "refused"]
    with RunLock(tmp_path):  # this process holds the folder
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   cwd=tmp_path, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"a rank hung instead of stopping:\n{stdout[-3000:]}\n{stderr[-5000:]}")
    assert process.returncode != 0
    for rank in (0, 1):
        message = (tmp_path / f"refused{rank}.txt").read_text()
        assert f"in use by another training run (pid {os.getpid()} on host {socket.gethostname()}" in message
    assert not list(tmp_path.glob("checkpoint-*")) and not (tmp_path / "run.json").exists()


if __name__ == "__main__":
    if sys.argv[2:] == ["refused"]:
        _refused_worker(sys.argv[1])
    else:
        _worker(sys.argv[1])
