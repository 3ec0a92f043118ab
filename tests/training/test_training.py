"""Training with Accelerate (msaf_hf.training, scripts/train.py): recipes, schedule, exact resume, atomic
checkpoints, saved folders, label mapping, bad inputs, trackers and the quickstart command."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from msaf_hf import DSNetForSemanticSegmentation, DSNetImageProcessor, load_preset
from msaf_hf.configuration_dsnet import CITYSCAPES_CLASS_WEIGHTS
from msaf_hf.data import BadExampleError, DataArguments, synthetic_id2label
from msaf_hf.training import (
    DSNetTrainingArguments,
    EpochShuffleSampler,
    ModelArguments,
    TrainerState,
    build_model,
    find_latest_checkpoint,
    list_checkpoints,
    lr_factor,
    parse_args,
    train,
)

try:  # imported as part of a `tests` package
    from .hub_fixtures import local_hub, local_hub_client  # noqa: F401
except ImportError:  # tests/ on sys.path (pytest's default layout)
    from hub_fixtures import local_hub, local_hub_client  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((REPO_ROOT / "configuration").glob("*.yaml"))


pytestmark = pytest.mark.usefixtures("one_thread_and_fresh_accelerate_state")


def tiny_run(output_dir: Path, **overrides) -> tuple[ModelArguments, DataArguments, DSNetTrainingArguments]:
    """Arguments of a seconds-long run: base width 4, 32x32 synthetic images, 5 steps per epoch."""
    model = {"config_overrides": "base_channels=4,ohem_min_kept=64"}
    data = {"synthetic": True, "synthetic_num_train": 20, "synthetic_num_eval": 3, "synthetic_image_size": [32, 32]}
    training = {"output_dir": str(output_dir), "max_steps": 8, "per_device_train_batch_size": 2,
                "gradient_accumulation_steps": 2, "logging_steps": 1, "disable_tqdm": True}
    for key, value in overrides.items():
        target = model if key in ModelArguments.__dataclass_fields__ else (
            data if key in DataArguments.__dataclass_fields__ else training)
        target[key] = value
    return ModelArguments(**model), DataArguments(**data), DSNetTrainingArguments(**training)


class Crash(Exception):
    """Stands for the process being killed."""


def crash_at(step: int):
    def callback(state: TrainerState) -> None:
        if state.global_step == step:
            raise Crash(f"killed after step {step}")

    return callback


# --------------------------------------------------------------------------------------------------
# Recipes and the command line
# --------------------------------------------------------------------------------------------------
def test_recipe_supplies_values_and_the_command_line_wins(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "synthetic: true\ncrop_size: [48, 64]\nlearning_rate: 0.05\nmax_steps: 7\nchannels_last: true\n"
        "optimizer: adamw\nconfig_overrides:\n  ohem_min_kept: 100\n  base_channels: 4\n"
        "checkpointing_steps: epoch\nvoid_labels: [11, 12]\n"
    )
    model_args, data_args, args = parse_args(
        ["--config", str(recipe), "--learning_rate", "0.02", "--channels_last", "false", "--void_labels", "3"]
    )
    assert args.learning_rate == 0.02 and args.channels_last is False  # command line wins
    assert data_args.void_labels == [3]
    assert args.max_steps == 7 and args.optimizer == "adamw" and args.checkpointing_steps == "epoch"
    assert data_args.synthetic is True and data_args.crop_size == [48, 64]
    assert model_args.parsed_config_overrides() == {"ohem_min_kept": 100, "base_channels": 4}
    # Without the recipe the defaults are back.
    _, data_default, args_default = parse_args(["--synthetic"])
    assert args_default.learning_rate == 0.01 and args_default.optimizer == "sgd" and data_default.crop_size is None


def test_recipe_errors_name_the_key(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("synthetic: true\nlearnig_rate: 0.1\n")
    with pytest.raises(ValueError, match="learnig_rate"):
        parse_args(["--config", str(recipe)])
    recipe.write_text("synthetic: true\noptimizer: adam\n")
    with pytest.raises(ValueError, match="optimizer='adam' is not one of"):
        parse_args(["--config", str(recipe)])
    recipe.write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        parse_args(["--config", str(recipe)])
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        parse_args(["--config", str(tmp_path / "nowhere.yaml")])


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_packaged_recipes_parse(recipe):
    extra = ["--dataset_name", "some/dataset"] if recipe.stem == "camvid" else []
    model_args, data_args, args = parse_args(["--config", str(recipe), *extra])
    data_args.source_kind()  # exactly one data source
    overrides = model_args.parsed_config_overrides()
    load_preset(model_args.preset, num_labels=19, **{k: v for k, v in overrides.items() if k != "class_weights"})
    if recipe.stem != "quickstart":  # the paper's settings
        assert (args.optimizer, args.learning_rate, args.momentum, args.weight_decay) == ("sgd", 0.01, 0.9, 5e-4)
        assert (args.lr_scheduler_type, args.poly_power) == ("poly", 0.9)
        assert overrides["ohem_min_kept"] == 131072 and data_args.hflip_probability == 0.5
    if data_args.id2label_file is not None:
        from msaf_hf.data import load_id2label_file

        load_id2label_file(data_args.id2label_file)  # the packaged class-name file exists


def test_cityscapes_recipe_is_the_published_one():
    model_args, data_args, args = parse_args(["--config", str(REPO_ROOT / "configuration" / "cityscapes.yaml")])
    assert model_args.parsed_config_overrides()["class_weights"] == list(CITYSCAPES_CLASS_WEIGHTS)
    assert data_args.resolved_crop_size() == (1024, 1024) and data_args.base_size == 2048
    assert data_args.eval_size is None  # whole 1024x2048 images
    assert args.sync_batchnorm == "auto"


def test_config_overrides_parsing():
    args = ModelArguments(config_overrides="ohem_min_kept=100,class_weights=[1, 2.5, 3],head_type=head64")
    assert args.parsed_config_overrides() == {"ohem_min_kept": 100, "class_weights": [1, 2.5, 3], "head_type": "head64"}
    assert ModelArguments(config_overrides="class_weights=cityscapes").parsed_config_overrides()["class_weights"] == (
        list(CITYSCAPES_CLASS_WEIGHTS))
    with pytest.raises(ValueError, match="unknown DSNetConfig field.*ohem_minkept"):
        ModelArguments(config_overrides="ohem_minkept=3").parsed_config_overrides()
    with pytest.raises(ValueError, match="comes from the dataset"):
        ModelArguments(config_overrides="num_labels=3").parsed_config_overrides()
    with pytest.raises(ValueError, match="not 'key=value'"):
        ModelArguments(config_overrides="ohem_min_kept").parsed_config_overrides()


def test_training_arguments_validation():
    with pytest.raises(ValueError, match="checkpointing_steps"):
        DSNetTrainingArguments(checkpointing_steps="often")
    with pytest.raises(ValueError, match="report_to"):
        DSNetTrainingArguments(report_to="tensorbored")
    with pytest.raises(ValueError, match="optimizer"):
        DSNetTrainingArguments(optimizer="lamb")
    assert DSNetTrainingArguments(eval_steps="none").eval_steps is None
    assert DSNetTrainingArguments(max_grad_norm=0).max_grad_norm is None


# --------------------------------------------------------------------------------------------------
# Schedule and data order
# --------------------------------------------------------------------------------------------------
def test_lr_factor_poly_warmup_cosine():
    assert lr_factor(0, 100) == 1.0
    assert lr_factor(50, 100) == pytest.approx(0.5**0.9)
    assert lr_factor(99, 100) == pytest.approx(0.01**0.9)
    assert lr_factor(0, 100, warmup_steps=4) == pytest.approx(1 / 5)
    assert lr_factor(3, 100, warmup_steps=4) == pytest.approx(4 / 5 * (1 - 3 / 100) ** 0.9)
    assert lr_factor(50, 100, kind="cosine") == pytest.approx(0.5)
    assert lr_factor(70, 100, kind="constant") == 1.0


def test_sampler_order_is_a_function_of_seed_and_epoch():
    a, b = EpochShuffleSampler(50, seed=3, num_used=48), EpochShuffleSampler(50, seed=3, num_used=48)
    b.set_epoch(1)
    b.set_epoch(0)
    assert list(a) == list(b) and len(list(a)) == 48 and len(set(a)) == 48
    assert a.permutation(1) != a.permutation(0)
    assert EpochShuffleSampler(50, seed=4).permutation(0) != EpochShuffleSampler(50, seed=3).permutation(0)
    torch.manual_seed(0)
    first = a.permutation(2)
    torch.manual_seed(123)  # global RNG state is irrelevant
    assert a.permutation(2) == first


# --------------------------------------------------------------------------------------------------
# Training, exact resume and checkpoints
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    # 20 images / (2 per batch x 2 accumulation) = 5 steps per epoch; 8 steps cross an epoch boundary.
    # Checkpoints at steps 3 and 6 (mid-epoch: the resumed run must skip the consumed batches of epoch 1).
    common = {"checkpointing_steps": "3", "checkpoints_total_limit": 2, "eval_steps": "epoch"}
    reference = train(*tiny_run(tmp_path / "a", **common))
    assert reference.global_step == 8

    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    with pytest.raises(Crash):
        train(*tiny_run(tmp_path / "b", **common), callbacks=[crash_at(7)])
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["checkpoint-3", "checkpoint-6"]
    saved = TrainerState.load(tmp_path / "b" / "checkpoint-6")
    assert (saved.global_step, saved.epoch, saved.batches_in_epoch) == (6, 1, 2)
    assert not (tmp_path / "b" / "final").exists()

    AcceleratorState._reset_state(True)
    # Resumed with DataLoader workers: augmentation is keyed on (seed, epoch, index), so it must not matter.
    resumed = train(*tiny_run(tmp_path / "b", resume_from_checkpoint="latest", num_workers=2, **common))
    assert resumed.global_step == 8
    expected = load_file(tmp_path / "a" / "final" / "model.safetensors")
    actual = load_file(tmp_path / "b" / "final" / "model.safetensors")
    assert expected.keys() == actual.keys()
    different = [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert different == []
    # Same losses and learning rates after the resume point; the limit kept the last two checkpoints.
    history_a = TrainerState.load(tmp_path / "a").log_history
    history_b = TrainerState.load(tmp_path / "b").log_history
    def late(history):
        return [(h["step"], h["loss"], h["learning_rate"]) for h in history if "loss" in h and h["step"] > 6]
    assert late(history_a) == late(history_b) and len(late(history_a)) == 2
    assert [p.name for p in list_checkpoints(tmp_path / "a")] == ["checkpoint-6", "checkpoint-8"]


def test_resume_with_other_batch_settings_needs_allow_changed_settings(tmp_path, caplog):
    common = {"checkpointing_steps": "3", "eval_split": "none"}
    with pytest.raises(Crash):
        train(*tiny_run(tmp_path, **common), callbacks=[crash_at(4)])
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    # 3 steps x 4 images consumed in epoch 0; now 4 images per micro-batch without accumulation.
    changed = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}
    with pytest.raises(ValueError, match="(?s)gradient_accumulation_steps: 2 -> 1.*per_device_train_batch_size: 2 -> 4"):  # noqa: E501
        train(*tiny_run(tmp_path, resume_from_checkpoint=str(tmp_path / "checkpoint-3"), **changed, **common))
    AcceleratorState._reset_state(True)
    output = train(*tiny_run(tmp_path, resume_from_checkpoint=str(tmp_path / "checkpoint-3"), allow_changed_settings=True,  # noqa: E501
                             **changed, **common))
    assert output.global_step == 8
    assert "with changed settings" in caplog.text and "per_device_train_batch_size: 2 -> 4" in caplog.text
    epochs = [h["epoch"] for h in TrainerState.load(tmp_path).log_history if "loss" in h]
    assert epochs == sorted(epochs) and epochs[-1] == 1  # 5 steps per epoch: step 8 is in epoch 1


def test_the_loop_reads_device_values_only_when_logging(tmp_path, monkeypatch):
    """Host synchronisation (reading a tensor's value) happens once per logging window, not per step."""
    import msaf_hf.training.trainer as training_module

    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code
            # (EpochShuffleSampler.permutation reads its CPU-generated permutation once per epoch: not device data.)
            if caller.co_filename == training_module.__file__ and caller.co_name != "permutation":
                reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    train(*tiny_run(tmp_path, eval_split="none", max_steps=8, logging_steps=4, gradient_accumulation_steps=1))
    assert reads == ["tolist", "tolist"]  # steps 4 and 8


def test_logged_learning_rates_follow_the_poly_schedule(tmp_path):
    output = train(*tiny_run(tmp_path, gradient_accumulation_steps=1, max_steps=6, eval_split="none", warmup_steps=2,
                             per_device_train_batch_size=4, channels_last=True,
                             # (base width 8: channels-last backward on CPU corrupts memory in torch 2.13 at width 4)
                             config_overrides="base_channels=8,ohem_min_kept=64"))
    reloaded = DSNetForSemanticSegmentation.from_pretrained(output.final_dir)  # channels-last weights save fine
    assert all(torch.equal(v, output.model.state_dict()[k]) for k, v in reloaded.state_dict().items())
    logged = [(h["step"], h["learning_rate"]) for h in TrainerState.load(tmp_path).log_history if "learning_rate" in h]
    assert [step for step, _ in logged] == [1, 2, 3, 4, 5, 6]
    for step, lr in logged:  # step s (1-based) used the factor of 0-based step s - 1
        assert lr == pytest.approx(0.01 * lr_factor(step - 1, 6, "poly", 0.9, 2), rel=1e-12)


def test_a_crash_while_checkpointing_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    real_save_state = Accelerator.save_state
    calls = []

    def failing_save_state(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:  # the second checkpoint dies half-written
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"truncated")
            raise OSError("disk full")
        return real_save_state(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", failing_save_state)
    with pytest.raises(OSError, match="disk full"):
        train(*tiny_run(tmp_path, checkpointing_steps="2", eval_split="none"))
    assert calls[1].endswith("checkpoint-4.tmp")
    assert (tmp_path / "checkpoint-4.tmp").is_dir() and not (tmp_path / "checkpoint-4").exists()
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"

    monkeypatch.setattr(Accelerator, "save_state", real_save_state)
    AcceleratorState._reset_state(True)
    output = train(*tiny_run(tmp_path, checkpointing_steps="2", eval_split="none", resume_from_checkpoint="latest"))
    assert output.global_step == 8
    assert not (tmp_path / "checkpoint-4.tmp").exists()  # the unfinished save was cleaned up
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-6", "checkpoint-8"]


def test_bf16_mixed_precision_keeps_float32_weights(tmp_path):
    output = train(*tiny_run(tmp_path, mixed_precision="bf16", max_steps=4, config_overrides="base_channels=8,ohem_min_kept=64"))  # noqa: E501
    from accelerate.state import AcceleratorState

    assert AcceleratorState().mixed_precision == "bf16"
    assert {p.dtype for p in output.model.parameters()} == {torch.float32}  # autocast: the weights stay float32
    assert {t.dtype for t in load_file(tmp_path / "final" / "model.safetensors").values() if t.is_floating_point()} == {
        torch.float32}
    assert 0.0 <= output.metrics["mean_iou"] <= 1.0
    assert json.loads((tmp_path / "final" / "training_hyperparameters.json").read_text())["mixed_precision"] == "bf16"


@pytest.mark.slow
def test_saved_folders_reload_with_the_dataset_labels(tmp_path):
    output = train(*tiny_run(tmp_path, eval_steps="4", synthetic_num_labels=3))
    names = synthetic_id2label(3)
    for folder in (tmp_path / "final", tmp_path / "best"):
        assert (folder / "model.safetensors").is_file()
        config = json.loads((folder / "config.json").read_text())
        assert {int(k): v for k, v in config["id2label"].items()} == names
        model = DSNetForSemanticSegmentation.from_pretrained(folder)
        assert model.config.num_labels == 3
        assert isinstance(DSNetImageProcessor.from_pretrained(folder), DSNetImageProcessor)
        results = json.loads((folder / "eval_results.json").read_text())
        assert results["class_names"] == list(names.values()) and len(results["per_class_iou"]) == 3
    final_results = json.loads((tmp_path / "final" / "eval_results.json").read_text())
    assert final_results["mean_iou"] == pytest.approx(output.metrics["mean_iou"])
    assert final_results["step"] == 8
    # The best folder holds the evaluation with the highest mIoU.
    evaluations = [h for h in TrainerState.load(tmp_path).log_history if "mean_iou" in h]
    assert [h["step"] for h in evaluations] == [4, 8]
    best = json.loads((tmp_path / "best" / "eval_results.json").read_text())
    assert best["mean_iou"] == pytest.approx(max(h["mean_iou"] for h in evaluations))
    # The files the Hub model card reads.
    from msaf_hf.hub import load_card_inputs

    card = load_card_inputs(tmp_path / "final")
    assert card["eval_results"]["mean_iou"] == pytest.approx(output.metrics["mean_iou"])
    assert card["training_hyperparameters"]["learning_rate"] == 0.01
    # The reloaded final model is the trained one.
    reloaded = DSNetForSemanticSegmentation.from_pretrained(tmp_path / "final")
    for key, value in output.model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key


def test_new_label_set_needs_ignore_mismatched_sizes(tmp_path):
    pretrained = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=3))
    pretrained.save_pretrained(tmp_path / "pretrained")
    five = {i: f"c{i}" for i in range(5)}
    with pytest.raises(ValueError, match="--ignore_mismatched_sizes"):
        build_model(ModelArguments(model_name_or_path=str(tmp_path / "pretrained")), five)
    model = build_model(ModelArguments(model_name_or_path=str(tmp_path / "pretrained"), ignore_mismatched_sizes=True), five)  # noqa: E501
    assert model.config.num_labels == 5 and model.config.id2label == five
    new_state, old_state = model.state_dict(), pretrained.state_dict()
    resized = [k for k in new_state if new_state[k].shape != old_state[k].shape]
    assert resized and all(k.startswith(("decode_head.", "auxiliary_heads.")) for k in resized)
    kept = [k for k in new_state if k.startswith("dsnet.")]
    assert kept and all(torch.equal(new_state[k], old_state[k]) for k in kept)  # the encoder is reused as is
    # Same number of classes: the dataset's class names replace the model's, weights untouched.
    renamed = build_model(ModelArguments(model_name_or_path=str(tmp_path / "pretrained")), {0: "a", 1: "b", 2: "c"})
    assert renamed.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert all(torch.equal(v, old_state[k]) for k, v in renamed.state_dict().items())


def test_fine_tuning_from_a_trained_folder(tmp_path):
    first = train(*tiny_run(tmp_path / "first", eval_split="none", max_steps=2, synthetic_num_labels=3))
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    second = train(*tiny_run(tmp_path / "second", eval_split="none", max_steps=2, synthetic_num_labels=5,
                             model_name_or_path=str(first.final_dir), ignore_mismatched_sizes=True))
    assert second.model.config.num_labels == 5
    assert json.loads((tmp_path / "second" / "final" / "config.json").read_text())["id2label"]["4"] == "ring"


def _folder_dataset(root: Path, bad_value: int | None = None) -> tuple[Path, Path]:
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        PIL.Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f"img{i}.png")
        label = rng.integers(0, 3, (32, 32), dtype=np.uint8)
        if bad_value is not None and i == 3:
            label[5, 5] = bad_value
        PIL.Image.fromarray(label).save(masks / f"img{i}.png")
    (root / "id2label.json").write_text(json.dumps({"0": "a", "1": "b", "2": "c"}))
    return images, masks


def test_bad_data_and_bad_settings_fail_with_clear_errors(tmp_path):
    images, masks = _folder_dataset(tmp_path / "data", bad_value=7)
    with pytest.raises(BadExampleError, match="img3"):
        train(*tiny_run(tmp_path / "out", synthetic=False, image_dir=str(images), mask_dir=str(masks),
                        gradient_accumulation_steps=1, max_steps=4))
    with pytest.raises(ValueError, match="at least 2|>= 2"):
        train(*tiny_run(tmp_path / "bs1", per_device_train_batch_size=1))
    with pytest.raises(ValueError, match="fewer than one optimiser step"):
        train(*tiny_run(tmp_path / "small", synthetic_num_train=3))
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        train(*tiny_run(tmp_path / "x", resume_from_checkpoint=str(tmp_path / "data")))


def test_existing_run_is_not_silently_restarted(tmp_path):
    train(*tiny_run(tmp_path, eval_split="none", max_steps=2, checkpointing_steps="2"))
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    with pytest.raises(FileExistsError, match="--resume_from_checkpoint latest"):
        train(*tiny_run(tmp_path, eval_split="none", max_steps=2, checkpointing_steps="2"))


def test_tensorboard_logs_losses_lr_and_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(*tiny_run(tmp_path, report_to="tensorboard", max_steps=4, logging_steps=2))
    event_files = list((tmp_path / "runs").rglob("events.out.tfevents.*"))
    assert event_files
    tags, steps = set(), {}
    for file in event_files:
        accumulator = EventAccumulator(str(file))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            tags.add(tag)
            steps[tag] = [event.step for event in accumulator.Scalars(tag)]
    assert {"train/loss", "train/main_loss", "train/learning_rate", "train/images_per_second",
            "eval/mean_iou"} <= tags
    assert steps["train/loss"] == [2, 4] and steps["eval/mean_iou"] == [4]


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------
def _run_script(args: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    # `msaf-hf train ...` as the README shows it (python -m msaf_hf: the same command without the installed script)
    return subprocess.run([sys.executable, "-m", "msaf_hf", "train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_quickstart_command_short(tmp_path):
    """The README's command, shortened: trains, evaluates, saves, reloads and reports the reloaded mIoU."""
    result = _run_script(
        ["--config", "quickstart", "--output_dir", "outputs/quickstart",
         "--max_steps", "20", "--synthetic_num_train", "160", "--synthetic_num_eval", "8", "--eval_steps", "10",
         "--disable_tqdm"], tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"^quickstart mIoU: (\d\.\d{4}) \(reloaded from outputs/quickstart/final", result.stdout, re.M)
    assert match, result.stdout
    saved = json.loads((tmp_path / "outputs" / "quickstart" / "final" / "eval_results.json").read_text())
    assert float(match.group(1)) == pytest.approx(saved["mean_iou"], abs=5e-5)  # the reloaded model scores the same


@pytest.mark.slow
def test_quickstart_command_full(tmp_path):
    """`msaf-hf train --config quickstart` as in the README (2-3 minutes)."""
    result = _run_script(["--config", "quickstart", "--disable_tqdm"],
                         tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"^quickstart mIoU: (\d\.\d{4}) \(reloaded from outputs/quickstart/final", result.stdout, re.M)
    assert match, result.stdout
    assert float(match.group(1)) > 0.8  # 4 classes: chance is far below
    assert not math.isnan(float(match.group(1)))


@pytest.mark.slow
def test_push_to_hub_during_and_after_training(tmp_path, monkeypatch, local_hub_client):
    from huggingface_hub import HfApi

    token = local_hub_client.add_token("me")
    monkeypatch.setenv("HF_TOKEN", token)
    output = train(*tiny_run(tmp_path / "out", push_to_hub=True, hub_model_id="me/dsnet-tiny",
                             hub_strategy="checkpoint", checkpointing_steps="4", max_steps=8))
    api = HfApi(endpoint=local_hub_client.url, token=token)
    files = set(api.list_repo_files("me/dsnet-tiny"))
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md", "eval_results.json",
            "training_hyperparameters.json", "last-checkpoint/trainer_state.json",
            "last-checkpoint/optimizer.bin"} <= files
    assert not [f for f in files if "random_states" in f]  # the RNG pickles stay on this machine
    titles = [commit.title for commit in api.list_repo_commits("me/dsnet-tiny")]
    assert titles[0] == "End of training" and "Training in progress, step 4" in titles
    pushed = DSNetForSemanticSegmentation.from_pretrained("me/dsnet-tiny", token=token)
    assert all(torch.equal(v, output.model.state_dict()[k]) for k, v in pushed.state_dict().items())


# --------------------------------------------------------------------------------------------------
# One run per output folder (issue 10)
# --------------------------------------------------------------------------------------------------
def _reset_accelerate():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)


def test_rerun_with_overwrite_replaces_the_earlier_run_completely(tmp_path):
    """The earlier run's checkpoints have higher step numbers: they must neither swallow nor outlive the new run's."""
    train(*tiny_run(tmp_path, eval_split="none", max_steps=6, checkpointing_steps="2"))
    first_id = json.loads((tmp_path / "run.json").read_text())["run_id"]
    (tmp_path / "notes.txt").write_text("mine")  # not a training output: left alone
    _reset_accelerate()
    train(*tiny_run(tmp_path, eval_split="none", max_steps=2, checkpointing_steps="2", overwrite_output_dir=True))
    second_id = json.loads((tmp_path / "run.json").read_text())["run_id"]
    assert second_id != first_id
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2"]
    assert TrainerState.load(tmp_path / "checkpoint-2").run_id == second_id
    assert json.loads((tmp_path / "final" / "train_results.json").read_text())["global_step"] == 2
    assert find_latest_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_checkpoints_of_another_run_are_never_resumed_or_rotated(tmp_path):
    with pytest.raises(Crash):
        train(*tiny_run(tmp_path, eval_split="none", checkpointing_steps="2", checkpoints_total_limit=1),
              callbacks=[crash_at(3)])
    foreign = tmp_path / "checkpoint-8"  # e.g. copied in from another run's folder
    foreign.mkdir()
    (foreign / "trainer_state.json").write_text(json.dumps({"global_step": 8, "run_id": "someone-else"}))
    run_id = json.loads((tmp_path / "run.json").read_text())["run_id"]
    assert find_latest_checkpoint(tmp_path, run_id) == tmp_path / "checkpoint-2"
    _reset_accelerate()
    with pytest.raises(FileExistsError, match="checkpoints of another run \\(checkpoint-8\\)"):
        train(*tiny_run(tmp_path, eval_split="none", checkpointing_steps="2", resume_from_checkpoint="latest"))
    assert (foreign / "trainer_state.json").is_file()


def test_a_finished_run_is_not_overwritten_without_asking(tmp_path):
    train(*tiny_run(tmp_path, eval_split="none", max_steps=2))  # no checkpoints: final/, all_results.json
    assert not list_checkpoints(tmp_path)
    _reset_accelerate()
    with pytest.raises(FileExistsError, match=r"earlier run \(all_results.json, final/.*--overwrite_output_dir"):
        train(*tiny_run(tmp_path, eval_split="none", max_steps=2, learning_rate=0.05))
    assert json.loads((tmp_path / "final" / "training_hyperparameters.json").read_text())["learning_rate"] == 0.01
    _reset_accelerate()
    train(*tiny_run(tmp_path, eval_split="none", max_steps=2, learning_rate=0.05, overwrite_output_dir=True))
    assert json.loads((tmp_path / "final" / "training_hyperparameters.json").read_text())["learning_rate"] == 0.05


def test_resume_latest_without_a_checkpoint_is_an_error_naming_the_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"no complete checkpoint.*" + re.escape(str(tmp_path)) + r".*notes\.txt"):  # noqa: E501
        train(*tiny_run(tmp_path, resume_from_checkpoint="latest"))
    assert not (tmp_path / "final").exists()


_BLOCKED_RUN = """
import pathlib, sys, time
from msaf_hf.training import cli, trainer

started, release = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
original = trainer.DSNetTrainer.train

def blocked(self, callbacks=()):
    def wait(state):
        if state.global_step == 1:
            started.write_text("step 1")
            while not release.exists():
                time.sleep(0.05)
    return original(self, callbacks=[wait])

trainer.DSNetTrainer.train = blocked
cli.main(sys.argv[3:])
"""


@pytest.mark.slow
def test_two_runs_on_one_folder_the_second_is_refused_and_a_killed_run_is_taken_over(tmp_path):
    import signal
    import socket
    import time

    out = tmp_path / "out"
    argv = ["--synthetic", "--synthetic_num_train", "8", "--synthetic_num_eval", "2", "--synthetic_image_size", "32",
            "32", "--config_overrides", "base_channels=4,ohem_min_kept=64", "--per_device_train_batch_size", "2",
            "--max_steps", "2", "--checkpointing_steps", "1", "--disable_tqdm", "--output_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}

    def start_blocked(name: str, *extra: str) -> tuple[subprocess.Popen, Path, Path]:
        started, release = tmp_path / f"{name}.started", tmp_path / f"{name}.release"
        process = subprocess.Popen([sys.executable, "-c", _BLOCKED_RUN, str(started), str(release), *argv, *extra],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 240
        while not started.exists():
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the first run did not reach step 1"
            time.sleep(0.1)
        return process, started, release

    first, _, release = start_blocked("first", "--overwrite_output_dir")
    try:
        second = _run_script([*argv, "--overwrite_output_dir"], tmp_path, timeout=240)
        assert second.returncode != 0
        assert "in use by another training run" in second.stderr
        assert f"pid {first.pid} on host {socket.gethostname()}" in second.stderr, second.stderr[-3000:]
        assert (out / "checkpoint-1").is_dir()  # the first run's files are untouched
        release.write_text("go")
        stdout, stderr = first.communicate(timeout=240)
        assert first.returncode == 0, stderr[-3000:]
        assert re.search(r"^out mIoU: ", stdout, re.M)  # it reports its own model
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()

    # A run killed while holding the folder: the next one detects the dead holder and takes over.
    killed, _, _ = start_blocked("killed", "--overwrite_output_dir")
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    resumed = _run_script([*argv, "--resume_from_checkpoint", "latest"], tmp_path, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Taking over the lock of pid {killed.pid}" in resumed.stderr
    assert "Resumed from" in resumed.stderr and (out / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_quickstart_twice_in_one_folder(tmp_path, monkeypatch, caplog):
    """The quickstart recipe sets overwrite_output_dir: running it again replaces the earlier run and succeeds."""
    from msaf_hf.training import main

    monkeypatch.chdir(tmp_path)
    args = ["--config", str(REPO_ROOT / "configuration" / "quickstart.yaml"), "--max_steps", "2",
            "--synthetic_num_train", "16", "--synthetic_num_eval", "2", "--eval_steps", "none",
            "--checkpointing_steps", "1", "--config_overrides", "base_channels=4,ohem_min_kept=64", "--disable_tqdm"]
    first = main(args)
    first_id = json.loads((tmp_path / "outputs" / "quickstart" / "run.json").read_text())["run_id"]
    _reset_accelerate()
    second = main(args)
    assert first.global_step == second.global_step == 2
    assert "deleted the earlier run's" in caplog.text
    assert json.loads((tmp_path / "outputs" / "quickstart" / "run.json").read_text())["run_id"] != first_id
    assert [p.name for p in list_checkpoints(tmp_path / "outputs" / "quickstart")] == ["checkpoint-1", "checkpoint-2"]


@pytest.mark.slow
def test_a_failed_final_push_fails_the_command(tmp_path, monkeypatch, local_hub_client):
    token = local_hub_client.add_token("me")
    monkeypatch.setenv("HF_TOKEN", token)
    local_hub_client.fail_for(3600, 503)  # the Hub is down for the whole run
    out = tmp_path / "out"
    argv = ["--synthetic", "--synthetic_num_train", "8", "--synthetic_num_eval", "2", "--synthetic_image_size", "32",
            "32", "--config_overrides", "base_channels=4,ohem_min_kept=64", "--per_device_train_batch_size", "2",
            "--max_steps", "2", "--disable_tqdm", "--output_dir", str(out), "--push_to_hub", "--hub_model_id",
            "me/dsnet-tiny"]
    from msaf_hf.training import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value.code)  # a message: the exit status is 1
    assert "final push to the Hub failed" in message and "503" in message
    retry = message.splitlines()[-1].strip()
    assert retry.startswith("msaf-hf push ") and str(out / "final") in retry
    assert (out / "final" / "model.safetensors").is_file()  # the trained model stays on disk

    # The printed command pushes just the model once the Hub is back.
    local_hub_client.clear_faults()
    import shlex

    words = shlex.split(retry)
    env = {**local_hub_client.client_env(token=token), "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-m", "msaf_hf", *words[1:]], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    from huggingface_hub import HfApi

    api = HfApi(endpoint=local_hub_client.url, token=token)
    assert "model.safetensors" in set(api.list_repo_files("me/dsnet-tiny"))


# --------------------------------------------------------------------------------------------------
# Resume: changed settings, damaged checkpoints, another architecture
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory):
    """A run killed after step 5, with checkpoints at steps 2 and 4 (copied for each test that uses it)."""
    folder = tmp_path_factory.mktemp("crashed") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.raises(Crash):
            train(*tiny_run(folder, eval_split="none", checkpointing_steps="2"), callbacks=[crash_at(5)])
    finally:
        torch.set_num_threads(threads)
        _reset_accelerate()
    return folder


def _copy_run(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".run.lock"))
    return target


def test_resume_with_changed_settings_is_an_error_listing_them(crashed_run, tmp_path):
    folder = _copy_run(crashed_run, tmp_path / "run")
    with pytest.raises(ValueError) as info:
        train(*tiny_run(folder, eval_split="none", checkpointing_steps="2", resume_from_checkpoint="latest",
                        learning_rate=0.02, crop_size=[24, 24], lr_scheduler_type="cosine", hflip_probability=0.0))
    text = str(info.value)
    for line in ("learning_rate: 0.01 -> 0.02", "crop_size: None -> [24, 24]", "lr_scheduler_type: 'poly' -> 'cosine'",
                 "hflip_probability: 0.5 -> 0.0", "--allow_changed_settings"):
        assert line in text, text
    _reset_accelerate()
    with pytest.raises(ValueError, match="config.head_type: 'head128' -> 'head64'"):
        train(*tiny_run(folder, eval_split="none", resume_from_checkpoint="latest",
                        config_overrides="base_channels=4,ohem_min_kept=64,head_type=head64"))
    _reset_accelerate()
    with pytest.raises(ValueError, match="(?s)optimizer: 'sgd' -> 'adamw'.*cannot continue"):
        train(*tiny_run(folder, eval_split="none", resume_from_checkpoint="latest", optimizer="adamw",
                        allow_changed_settings=True))


def test_allowed_changed_settings_are_used_and_recorded(crashed_run, tmp_path):
    folder = _copy_run(crashed_run, tmp_path / "run")
    train(*tiny_run(folder, eval_split="none", checkpointing_steps="2", resume_from_checkpoint="latest",
                    learning_rate=0.02, momentum=0.8, allow_changed_settings=True))
    logged = [(h["step"], h["learning_rate"]) for h in TrainerState.load(folder).log_history if "learning_rate" in h]
    for step, lr in logged:  # the checkpoint's rate before step 4, the new one after
        assert lr == pytest.approx((0.01 if step <= 4 else 0.02) * lr_factor(step - 1, 8), rel=1e-12), (step, lr)
    assert [step for step, _ in logged] == [1, 2, 3, 4, 5, 6, 7, 8]
    used = json.loads((folder / "final" / "training_hyperparameters.json").read_text())
    assert used["learning_rate"] == 0.02 and used["momentum"] == 0.8
    assert "learning_rate 0.01 -> 0.02" in used["changed_on_resume"] and "at step 4" in used["changed_on_resume"]
    assert TrainerState.load(folder / "checkpoint-8").settings["learning_rate"] == 0.02
    from msaf_hf.hub import render_model_card

    card = str(render_model_card(folder / "final", repo_id="me/dsnet"))
    assert "changed_on_resume" in card and "learning_rate 0.01 -> 0.02" in card


def test_resume_with_another_architecture_is_a_short_error(crashed_run, tmp_path):
    folder = _copy_run(crashed_run, tmp_path / "run")
    with pytest.raises(ValueError) as info:
        train(*tiny_run(folder, eval_split="none", resume_from_checkpoint="latest", allow_changed_settings=True,
                        config_overrides="base_channels=8,ohem_min_kept=64"))
    text = str(info.value)
    assert "another architecture" in text and "tensors differ in shape" in text
    assert len(text.splitlines()) <= 3 and len(text) < 600, text


def test_a_damaged_newest_checkpoint_is_named_and_the_previous_one_offered(crashed_run, tmp_path):
    folder = _copy_run(crashed_run, tmp_path / "run")
    weights = folder / "checkpoint-4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(RuntimeError) as info:
        train(*tiny_run(folder, eval_split="none", checkpointing_steps="2", resume_from_checkpoint="latest"))
    text = str(info.value)
    assert str(weights) in text and f"--resume_from_checkpoint {folder / 'checkpoint-2'}" in text, text
    _reset_accelerate()  # the offered checkpoint works
    output = train(*tiny_run(folder, eval_split="none", checkpointing_steps="2",
                             resume_from_checkpoint=str(folder / "checkpoint-2")))
    assert output.global_step == 8


@pytest.mark.parametrize("line, name", [("seed: [1, 2]", "seed"), ("max_steps: 2.5", "max_steps"),
                                        ("per_device_train_batch_size: [8]", "per_device_train_batch_size"), ("synthetic: 3", "synthetic")])  # noqa: E501
def test_recipe_values_of_the_wrong_type_fail_at_parse_time(tmp_path, line, name):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"synthetic: true\n{line}\n")
    with pytest.raises(ValueError, match=rf"\.{name} must be"):
        parse_args(["--config", str(recipe)])
    recipe.write_text("synthetic: true\nmax_steps: 300.0\nlearning_rate: 1\n")  # integral values are fine
    args = parse_args(["--config", str(recipe)])[2]
    assert args.max_steps == 300 and isinstance(args.max_steps, int) and args.learning_rate == 1.0
