"""msaf_hf.recipes: command lines parsed by HfArgumentParser with YAML recipes, and the types they check.

`--eval_split none` ('none' for no evaluation data, says --help) used to stop with "eval_split must be a string, got
None": HfArgumentParser replaces the field's declared `str | None` by `str`, so the type check no longer knew that
None is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from msaf_hf.data import DataArguments
from msaf_hf.evaluation.cli import EvaluationArguments
from msaf_hf.recipes import parse_command_line
from msaf_hf.training.arguments import parse_args

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO_ROOT / "configuration" / "quickstart.yaml")


@pytest.mark.parametrize("spelling", ["none", "None", "null", ""])
def test_eval_split_none_on_the_training_command_line(spelling):
    _, data_args, _ = parse_args(["--synthetic", "--eval_split", spelling])
    assert data_args.eval_split is None
    _, data_args, _ = parse_args(["--config", QUICKSTART, "--eval_split", spelling])  # the flag wins over the recipe
    assert data_args.eval_split is None


def test_help_promises_none_for_no_evaluation_data(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert "'none' for no evaluation data" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("value", ["none", "null", "None", "''"])
def test_eval_split_none_in_a_recipe(tmp_path, value):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"synthetic: true\neval_split: {value}\n")
    assert parse_args(["--config", str(recipe)])[1].eval_split is None
    # The evaluation script's parser reads the same recipe.
    _, data_args = parse_command_line(["--config", str(recipe)], (EvaluationArguments, DataArguments),
                                      ignore_unknown_recipe_keys=True)
    assert data_args.eval_split is None


def test_optional_fields_still_reject_other_types(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("synthetic: true\neval_split: [validation]\n")
    with pytest.raises(ValueError, match=r"DataArguments\.eval_split must be a string \(or None\), got \["):
        parse_args(["--config", str(recipe)])
    recipe.write_text("synthetic: true\ntrain_split: null\n")  # train_split may not be None
    with pytest.raises(ValueError, match=r"DataArguments\.train_split must be a string, got None"):
        parse_args(["--config", str(recipe)])


@pytest.mark.usefixtures("one_thread_and_fresh_accelerate_state")
def test_training_runs_without_evaluation_data(tmp_path):
    from msaf_hf.training.cli import main

    output = main(["--config", QUICKSTART, "--eval_split", "none", "--max_steps", "2", "--synthetic_num_train", "16",
                   "--synthetic_image_size", "32", "--crop_size", "32", "--output_dir", str(tmp_path / "run"),
                   "--logging_steps", "1"])
    assert output.global_step == 2 and output.eval_dataset is None
    assert (tmp_path / "run" / "final" / "preprocessor_config.json").is_file()
