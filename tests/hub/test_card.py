"""Tests of msaf_hf.hub.card: model-card rendering from a saved folder and its metadata round trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import yaml
from hub_testing import EVAL_RESULTS, LEAKY_TOKEN, make_model_folder
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch_file

from msaf_hf.hub import load_card_inputs, render_model_card
from msaf_hf.hub.card import safetensors_num_parameters


def test_card_renders_all_sections(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "model")
    card = render_model_card(folder, repo_id="me/dsnet-cityscapes", base_model="me/dsnet-imagenet")
    text = str(card)
    for heading in (
        "# dsnet-cityscapes",
        "## Model description",
        "### Variant",
        "## Evaluation results",
        "### Per-class IoU",
        "## Training procedure",
        "### Training hyperparameters",
        "### Training data",
        "## How to use",
        "### With `msaf_hf` installed",
        "### Without `msaf_hf` (remote code)",
        "## Citation",
    ):
        assert heading in text, heading
    # Variant, from config.json / preprocessor_config.json / safetensors header.
    assert "| Head type | fcn |" in text
    assert "| Base width (channels) | 32 |" in text
    assert "| Fusion | MSAF (Multi-Scale Attention Fusion) |" in text
    assert "| Number of classes | 3 |" in text
    assert f"| Parameters | {8 * 3 * 3 * 3 + 3} |" in text
    assert "| Input size used | 512 × 1024 (H × W) |" in text
    # Metrics, per-class table with labels, hyperparameters.
    assert "| Mean IoU | 71.23% |" in text and "| Pixel accuracy | 95.12% |" in text
    assert "| 0 | road | 91.00% |" in text and "| 2 | sky | n/a |" in text
    assert "| learning_rate | 0.01 |" in text and "| max_steps | 160000 |" in text
    assert "Evaluated on **Cityscapes** (`validation` split)" in text
    assert "fine-tuned from [`me/dsnet-imagenet`]" in text
    # Usage with and without msaf_hf, and the citation.
    assert "import msaf_hf" in text
    assert 'AutoModelForSemanticSegmentation.from_pretrained("me/dsnet-cityscapes")' in text
    assert 'AutoImageProcessor.from_pretrained("me/dsnet-cityscapes")' in text
    assert 'pipeline("image-segmentation", model="me/dsnet-cityscapes")' in text
    assert 'from_pretrained("me/dsnet-cityscapes", trust_remote_code=True)' in text
    assert "DSNet: A Novel Way to Use Atrous Convolutions in Semantic Segmentation" in text
    assert "Guo, Zilu and Bian, Liuyang and Wei, Hu and Li, Jingyu and Ni, Huasheng and Huang, Xuan" in text
    assert "2406.03702" in text and "Circuits and Systems for Video Technology" in text
    # No leftover template syntax, no secret, tables not broken by blank lines.
    assert "{{" not in text and "{%" not in text
    assert LEAKY_TOKEN not in text and "hub_token" not in text
    assert "|\n\n|" not in text


def test_card_metadata_round_trips(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "model")
    card = render_model_card(folder, repo_id="me/dsnet-cityscapes", base_model="me/dsnet-imagenet", tags=["cityscapes"])
    loaded = ModelCard(str(card))  # parse the rendered text back, as the Hub / from_pretrained would
    data = loaded.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "image-segmentation"
    assert data.license == "apache-2.0"
    assert data.base_model == "me/dsnet-imagenet"
    assert data.datasets == ["me/cityscapes"]
    assert {"dsnet", "msaf", "semantic-segmentation", "real-time", "cityscapes"} <= set(data.tags)
    assert data.model_name == "dsnet-cityscapes"

    metrics = {r.metric_type: r.metric_value for r in data.eval_results}
    assert metrics == {
        "mean_iou": EVAL_RESULTS["mean_iou"],
        "pixel_accuracy": EVAL_RESULTS["pixel_accuracy"],
        "mean_accuracy": EVAL_RESULTS["mean_class_accuracy"],
    }
    for result in data.eval_results:
        assert result.task_type == "image-segmentation"
        assert result.dataset_type == "me/cityscapes"
        assert result.dataset_name == "Cityscapes"
        assert result.dataset_split == "validation"
    # The raw YAML model-index parses with huggingface_hub's own parser to the same results.
    metadata = yaml.safe_load(str(card).split("---")[1])
    name, results = model_index_to_eval_results(metadata["model-index"])
    assert name == "dsnet-cityscapes"
    assert results == card.data.eval_results == data.eval_results


def test_card_degrades_gracefully_without_results(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "converted", training_state=False, results=False)
    card = render_model_card(folder, repo_id="me/dsnet-base", converted=True)
    text = str(card)
    loaded = ModelCard(text)
    assert not loaded.data.eval_results and "model-index" not in text
    assert loaded.data.base_model is None and loaded.data.datasets is None
    assert "No evaluation results were recorded" in text
    assert "No training hyperparameters were recorded" in text
    assert "converted from a published DSNet checkpoint" in text
    assert "### Per-class IoU" not in text and "### Training data" not in text
    assert "## Citation" in text and "{{" not in text

    # A bare config dict, with keys missing: still a valid card.
    minimal = render_model_card({"model_type": "dsnet"}, repo_id="me/bare")
    assert ModelCard(str(minimal)).data.pipeline_tag == "image-segmentation"
    assert "| Architecture | DSNet |" in str(minimal)
    assert "does not ship the model code" in str(minimal)

    # A config object with to_dict() (like a PretrainedConfig).
    class FakeConfig:
        def to_dict(self) -> dict:
            return {"model_type": "dsnet", "head_type": "aux", "num_labels": 19, "auto_map": {"AutoConfig": "x.Y"}}

    from_object = str(render_model_card(FakeConfig(), repo_id="me/obj", eval_results={"mean_iou": 0.5}))
    assert "| Head type | aux |" in from_object and "trust_remote_code=True" in from_object
    assert ModelCard(from_object).data.eval_results[0].metric_value == 0.5
    assert ModelCard(from_object).data.eval_results[0].dataset_type == "custom"


def test_card_inputs_from_trainer_files(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "m", training_state=False, results=False)
    (folder / "all_results.json").write_text(
        json.dumps(
            {"eval_mean_iou": 0.6, "eval_overall_accuracy": 0.9, "eval_per_category_iou": [0.5, 0.7], "train_loss": 1.2}
        )
    )
    assert load_card_inputs(folder) == {
        "eval_results": {"mean_iou": 0.6, "pixel_accuracy": 0.9, "per_class_iou": [0.5, 0.7]}
    }
    text = str(render_model_card(folder, repo_id="me/m"))
    assert "| Mean IoU | 60.00% |" in text and "| 1 | car | 70.00% |" in text
    # The trainer's eval_results.json: None for absent classes, class names, step, dataset keys.
    trainer_file = {
        "mean_iou": 0.5,
        "pixel_accuracy": 0.8,
        "mean_class_accuracy": 0.6,
        "per_class_iou": [0.4, None],
        "per_class_accuracy": [0.5, None],
        "class_names": ["left", "right"],
        "step": 1200,
        "dataset_name": "toy",
        "dataset_split": "validation",
    }
    card = render_model_card({"model_type": "dsnet"}, repo_id="me/t", eval_results=trainer_file)
    assert "| 0 | left | 40.00% | 50.00% |" in card.text and "| 1 | right | n/a | n/a |" in card.text
    assert "| Evaluated at training step | 1200 |" in card.text
    assert {r.dataset_split for r in card.data.eval_results} == {"validation"}
    # Explicit arguments win over files; read_folder_results=False ignores them.
    explicit = render_model_card(folder, repo_id="me/m", eval_results={"mean_iou": 0.42}, dataset_name="ADE20K")
    assert [r.metric_value for r in explicit.data.eval_results] == [0.42]
    assert not render_model_card(folder, repo_id="me/m", read_folder_results=False).data.eval_results


def test_metric_values_survive_yaml_exactly() -> None:
    values = {"mean_iou": 1 / 3, "pixel_accuracy": math.pi / 4, "mean_class_accuracy": 0.1 + 0.2}
    card = render_model_card({"model_type": "dsnet"}, repo_id="me/x", eval_results=values, dataset_name="X")
    parsed = {r.metric_type: r.metric_value for r in ModelCard(str(card)).data.eval_results}
    assert parsed == {"mean_iou": 1 / 3, "pixel_accuracy": math.pi / 4, "mean_accuracy": 0.1 + 0.2}


def test_parameter_count_from_safetensors_headers(tmp_path: Path) -> None:
    folder = make_model_folder(tmp_path / "m", training_state=False, results=False)
    assert safetensors_num_parameters(folder) == 8 * 3 * 3 * 3 + 3  # BatchNorm buffers are not parameters
    # Every top-level shard counts, whatever its dtype (bfloat16 has no numpy dtype: only the header is read).
    save_file({"extra.weight": np.zeros((2, 5), np.float32)}, str(folder / "model-extra.safetensors"))
    save_torch_file({"half.weight": torch.zeros(4, 4, dtype=torch.bfloat16)}, str(folder / "model-half.safetensors"))
    assert safetensors_num_parameters(folder) == 8 * 3 * 3 * 3 + 3 + 10 + 16
    assert f"| Parameters | {8 * 3 * 3 * 3 + 3 + 10 + 16} |" in str(render_model_card(folder, repo_id="me/m"))
    # A file that is not safetensors gives no count (the card leaves the row out) rather than an error.
    (folder / "broken.safetensors").write_bytes(b"\xff" * 16)
    assert safetensors_num_parameters(folder) is None
    assert "| Parameters |" not in str(render_model_card(folder, repo_id="me/m"))
    assert safetensors_num_parameters(tmp_path / "empty-dir-does-not-exist") is None
