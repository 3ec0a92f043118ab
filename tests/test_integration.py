"""transformers integration: Auto classes, save/load, pipeline, remote code without msaf_hf, new label sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForSemanticSegmentation,
    pipeline,
)

import msaf_hf
from msaf_hf import DSNetConfig, DSNetForSemanticSegmentation, DSNetImageProcessor, DSNetModel


@pytest.fixture
def saved_model(tmp_path, tiny_config):
    torch.manual_seed(0)
    tiny_config.id2label = {0: "sky", 1: "road", 2: "car", 3: "tree", 4: "person"}
    tiny_config.label2id = {v: k for k, v in tiny_config.id2label.items()}
    model = DSNetForSemanticSegmentation(tiny_config).eval()
    # non-trivial BatchNorm statistics, so that save/load really has to carry them
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    folder = tmp_path / "dsnet-tiny"
    model.save_pretrained(folder)
    DSNetImageProcessor().save_pretrained(folder)
    return model, folder


def test_auto_classes_resolve_to_dsnet(saved_model):
    model, folder = saved_model
    assert isinstance(AutoConfig.from_pretrained(folder), DSNetConfig)
    assert isinstance(AutoModel.from_pretrained(folder), DSNetModel)
    assert isinstance(AutoModelForSemanticSegmentation.from_pretrained(folder), DSNetForSemanticSegmentation)
    assert isinstance(AutoImageProcessor.from_pretrained(folder), DSNetImageProcessor)
    assert isinstance(AutoConfig.for_model("dsnet"), DSNetConfig)


def test_save_load_gives_identical_logits(saved_model):
    model, folder = saved_model
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    loaded = AutoModelForSemanticSegmentation.from_pretrained(folder).eval()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)


def test_saved_folder_carries_remote_code(saved_model):
    _, folder = saved_model
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_dsnet.DSNetConfig",
        "AutoModel": "modeling_dsnet.DSNetModel",
        "AutoModelForSemanticSegmentation": "modeling_dsnet.DSNetForSemanticSegmentation",
    }
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["auto_map"] == {"AutoImageProcessor": "image_processing_dsnet.DSNetImageProcessor"}
    for name in ("configuration_dsnet.py", "modeling_dsnet.py", "image_processing_dsnet.py"):
        source = (folder / name).read_text()
        imports = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}  # noqa: E501
        assert imports <= {"__future__", "collections", "dataclasses", "typing", "torch", "transformers",
                           "huggingface_hub", "numpy", "PIL", "", "math"}, (name, imports)


def test_pipeline(saved_model, transformers_log_messages):
    model, folder = saved_model
    segmenter = pipeline("image-segmentation", model=str(folder))
    # transformers' model-type check knows DSNet
    assert not [m for m in transformers_log_messages if "is not supported" in m]
    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    results = segmenter(image)
    assert results and all(r["mask"].size == (70, 50) for r in results)
    assert {r["label"] for r in results} <= set(model.config.id2label.values())
    # the masks are exactly the post-processed argmax map
    processor = DSNetImageProcessor()
    with torch.no_grad():
        outputs = model(**processor(image, return_tensors="pt"))
    class_map = processor.post_process_semantic_segmentation(outputs, target_sizes=[(50, 70)])[0].numpy()
    for result in results:
        class_id = model.config.label2id[result["label"]]
        assert np.array_equal(np.array(result["mask"]) > 0, class_map == class_id)


@pytest.mark.slow
def test_new_label_set_with_ignore_mismatched_sizes(tmp_path):
    config = msaf_hf.load_preset("dsnet", base_channels=4, num_labels=19)
    model = DSNetForSemanticSegmentation(config)
    model.save_pretrained(tmp_path)
    tuned = AutoModelForSemanticSegmentation.from_pretrained(tmp_path, num_labels=11, ignore_mismatched_sizes=True)
    assert tuned.decode_head.classifier.out_channels == 11
    assert all(head.classifier.out_channels == 11 for head in tuned.auxiliary_heads)
    assert torch.equal(tuned.dsnet.stem[0].conv.weight, model.dsnet.stem[0].conv.weight)
    assert torch.equal(tuned.decode_head.conv.conv.weight, model.decode_head.conv.conv.weight)
    tuned.train()
    tuned(torch.randn(2, 3, 32, 32), labels=torch.randint(0, 11, (2, 32, 32))).loss.backward()


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "msaf_hf" or name.startswith("msaf_hf."):
                raise ImportError("msaf_hf is not installed here")
    sys.meta_path.insert(0, Block())
    try:
        import msaf_hf
        raise SystemExit("msaf_hf should not be importable")
    except ImportError:
        pass
    import numpy as np, PIL.Image, torch
    torch.set_num_threads(2)  # as in the test process: the convolution kernels depend on the thread count
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline
    folder, expected = sys.argv[1], sys.argv[2]
    model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    data = torch.load(expected)
    with torch.no_grad():
        logits = model(data["x"]).logits
    # same weights and code; a separate process may pick other float32 kernels, so allow rounding-level error
    error = (logits - data["logits"]).abs().max() / data["logits"].abs().max()
    assert error < 1e-6, error
    segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True)
    image = PIL.Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8))
    assert all(r["mask"].size == (40, 40) for r in segmenter(image))
    print("REMOTE-OK", type(processor).__name__)
    """
)


@pytest.mark.slow
def test_remote_code_loads_without_msaf_hf(saved_model, tmp_path):
    model, folder = saved_model
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        torch.save({"x": x, "logits": model(x).logits}, tmp_path / "expected.pt")
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(tmp_path / "expected.pt")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "REMOTE-OK DSNetImageProcessor" in result.stdout
