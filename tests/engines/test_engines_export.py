"""msaf_hf.engines: export to OpenVINO / ONNX Runtime, engine models, int8, evaluation and the errors users meet.

Tiny DSNets (base width 4) at 64x64; the exported folders are built once per module. Converting to an engine takes
a few seconds of CPU per export, so the tests that export are marked slow (they still run in `make test`)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from torch import nn

from msaf_hf import DSNetForSemanticSegmentation, load_preset
from msaf_hf.engines import (
    DEFAULT_QUANTIZATION_SCHEME,
    MissingEngineError,
    ONNXRuntimeSegmenter,
    OpenVINOSegmenter,
    export_to_engine,
    load_calibration_images,
    load_segmentation_model,
    read_engine_spec,
)

SIZE = (64, 64)
NUM_LABELS = 4  # the synthetic set's classes, so that the synthetic set calibrates and evaluates these models


def _tiny_model(seed: int = 0) -> DSNetForSemanticSegmentation:
    torch.manual_seed(seed)
    model = DSNetForSemanticSegmentation(load_preset("dsnet", base_channels=4, num_labels=NUM_LABELS, ohem_min_kept=64))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that folding them is not a no-op
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.rand(shape, generator=generator) * 0.2 - 0.1)
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
    return model.eval()


def _relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours - reference).abs().max() / reference.abs().max()).item()


@pytest.fixture(scope="module")
def tiny_model() -> DSNetForSemanticSegmentation:
    return _tiny_model()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model):
    """(engine, precision) -> exported folder, built on first use."""
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("nncf")
    root = tmp_path_factory.mktemp("engines")
    folders: dict[tuple[str, str], Path] = {}
    calibration = load_calibration_images("synthetic", num_samples=8, size=SIZE)

    def get(engine: str, precision: str) -> Path:
        if (engine, precision) not in folders:
            folders[engine, precision] = export_to_engine(
                tiny_model, root / f"{engine}-{precision}", engine=engine, precision=precision, height=SIZE[0],
                width=SIZE[1], calibration_images=calibration if precision == "int8" else None,
            )
        return folders[engine, precision]

    return get


def _images(*shapes: tuple[int, ...]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(shape, generator=generator) for shape in shapes]


# ---------------------------------------------------------------------------------------------------------------
# fp32 parity
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_openvino_fp32_matches_torch_at_any_size(exported, tiny_model):
    folder = exported("openvino", "fp32")
    spec = read_engine_spec(folder)
    assert (spec.name, spec.precision, spec.input_size) == ("openvino", "fp32", None)
    # The export's own check, recorded in config.json: against torch float32 and against the float64 result.
    check = json.loads((folder / "config.json").read_text())["engine"]["check"]
    assert check["input_shape"] == [1, 3, *SIZE] and check["argmax_agreement"] >= 0.999
    assert check["max_relative_difference"] <= 1e-4 and check["max_relative_difference_to_float64"] <= 1e-4
    assert 0 < check["torch_float32_to_float64"] <= 1e-4  # float32 rounding: never exactly 0, never large
    model = load_segmentation_model(folder, num_threads=1)
    assert isinstance(model, OpenVINOSegmenter)
    for pixel_values in _images((1, 3, 64, 64), (2, 3, 64, 64), (1, 3, 48, 80), (1, 3, 96, 128)):
        with torch.no_grad():
            reference = tiny_model(pixel_values=pixel_values).logits
        logits = model(pixel_values=pixel_values).logits
        assert logits.shape == reference.shape
        assert _relative(logits, reference) <= 1e-4, pixel_values.shape
        assert (logits.argmax(1) == reference.argmax(1)).float().mean() >= 0.999


@pytest.mark.slow
def test_onnxruntime_fp32_matches_torch_and_is_fixed_size(exported, tiny_model):
    folder = exported("onnxruntime", "fp32")
    spec = read_engine_spec(folder)
    assert (spec.name, spec.precision, spec.input_size) == ("onnxruntime", "fp32", SIZE)
    model = load_segmentation_model(folder, num_threads=1)
    assert isinstance(model, ONNXRuntimeSegmenter)
    for pixel_values in _images((1, 3, 64, 64), (3, 3, 64, 64)):  # the batch size is free
        with torch.no_grad():
            reference = tiny_model(pixel_values=pixel_values).logits
        logits = model(pixel_values=pixel_values).logits
        assert _relative(logits, reference) <= 1e-4
        assert (logits.argmax(1) == reference.argmax(1)).float().mean() >= 0.999
    with pytest.raises(ValueError, match=r"takes 64x64 images only.*got 48x80.*--height 48 --width 80"):
        model(pixel_values=torch.zeros(1, 3, 48, 80))
    # The folder's image processor brings any image to the fixed size.
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    assert processor["do_resize"] is True and processor["size"] == {"height": 64, "width": 64}


# ---------------------------------------------------------------------------------------------------------------
# int8
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["openvino", "onnxruntime"])
def test_int8_export_is_quantised_and_runs(exported, tiny_model, engine):
    folder = exported(engine, "int8")
    spec = read_engine_spec(folder)
    assert spec.precision == "int8"
    assert spec.quantization["scheme"]["name"] == DEFAULT_QUANTIZATION_SCHEME.name == "balanced"
    assert spec.quantization["calibration_images"] == 8 and spec.quantization["nodes_kept_fp32"] == 0
    check = json.loads((folder / "config.json").read_text())["engine"]["check"]
    assert check["input"] == "the first calibration image" and check["input_shape"] == [1, 3, *SIZE]
    if engine == "openvino":
        import openvino as ov

        graph = ov.Core().read_model(str(folder / "openvino_model.xml"))
        assert [op for op in graph.get_ops() if op.get_type_name() == "FakeQuantize"], "the model was not quantised"
        # The default scheme quantises every part, MSAF's attention convolutions and the trunk included.
        reads_int8 = _convolutions_reading_int8(graph)
        assert all(any(reads_int8[part]) for part in (".fusions.", ".shared_stage1.", "decode_head.conv")), reads_int8
    else:
        import onnx

        graph = onnx.load(str(folder / "model.onnx"))
        assert any(node.op_type == "QuantizeLinear" for node in graph.graph.node)
    model = load_segmentation_model(folder, num_threads=1)
    # Images of the calibration distribution (the synthetic set's validation split, not used for calibration).
    pixel_values = torch.cat(load_calibration_images("synthetic", split="validation",
                                                      num_samples=4, size=SIZE))
    logits = model(pixel_values=pixel_values).logits
    with torch.no_grad():
        reference = tiny_model(pixel_values=pixel_values).logits
    assert logits.shape == reference.shape and torch.isfinite(logits).all()
    # int8 of a random 4-channel-wide network is coarse (cosine similarity ~0.9 here; accuracy on trained models is
    # measured by scripts/int8_sensitivity.py), but it must follow the float32 logits: a mis-scaled, mis-wired or
    # uncalibrated quantisation gives a similarity near 0 (or negative).
    similarity = torch.nn.functional.cosine_similarity(logits.flatten(), reference.flatten(), dim=0).item()
    assert similarity > 0.8, f"{engine} int8 vs torch: cosine similarity {similarity:.4f}"


def _convolutions_reading_int8(graph) -> dict[str, list[bool]]:
    """For parts of DSNet (a substring of the node names): for each of its convolutions, whether it reads a quantised
    input (a FakeQuantize right before it)."""
    parts = (".fusions.", ".shared_stage1.", ".shared_stage2.", ".skip_stage.", ".context_branch.", "decode_head.conv")
    found: dict[str, list[bool]] = {part: [] for part in parts}
    for op in graph.get_ops():
        if op.get_type_name() != "Convolution":
            continue
        quantised = op.input_value(0).get_node().get_type_name() == "FakeQuantize"
        for part in parts:
            if part in op.get_friendly_name():
                found[part].append(quantised)
    assert all(found.values()), f"no convolution found for {[p for p, v in found.items() if not v]}"
    return found


@pytest.mark.slow
def test_accurate_scheme_keeps_the_shared_trunk_in_float32(tmp_path, tiny_model):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import openvino as ov

    calibration = load_calibration_images("synthetic", num_samples=4, size=SIZE)
    folder = export_to_engine(tiny_model, tmp_path / "accurate", engine="openvino", precision="int8",
                              height=SIZE[0], width=SIZE[1], calibration_images=calibration,
                              quantization_scheme="accurate")
    spec = read_engine_spec(folder)
    assert spec.quantization["scheme"]["name"] == "accurate" and spec.quantization["nodes_kept_fp32"] > 0
    reads_int8 = _convolutions_reading_int8(ov.Core().read_model(str(folder / "openvino_model.xml")))
    trunk = [".shared_stage1.", ".shared_stage2.", ".skip_stage."]
    assert not any(any(reads_int8[part]) for part in trunk), reads_int8  # float32: no quantiser before them
    assert all(any(reads_int8[part]) for part in (".context_branch.", ".fusions.", "decode_head.conv")), reads_int8
    logits = load_segmentation_model(folder, num_threads=1)(pixel_values=torch.cat(calibration[:2])).logits
    assert logits.shape == (2, NUM_LABELS, SIZE[0] // 4, SIZE[1] // 4) and torch.isfinite(logits).all()


def test_calibration_errors(tmp_path, tiny_model):
    pytest.importorskip("openvino")
    with pytest.raises(ValueError, match="calibration set is empty"):
        export_to_engine(tiny_model, tmp_path / "out", engine="openvino", precision="int8", height=64, width=64,
                         calibration_images=[])
    with pytest.raises(ValueError, match="needs calibration images"):
        export_to_engine(tiny_model, tmp_path / "out", engine="openvino", precision="int8", height=64, width=64)
    # Calibration reads images only: a dataset of another label space (6 classes for a 4-class model) calibrates.
    import datasets

    def png(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        PIL.Image.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue()

    rng = np.random.default_rng(0)
    folder = tmp_path / "six-classes"
    folder.mkdir()
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image()})
    rows = {"image": [], "label": []}
    for _ in range(3):
        rows["image"].append({"bytes": png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), "path": None})
        label = rng.integers(0, 6, (32, 32), dtype=np.uint8)
        label[0, 0] = 5
        rows["label"].append({"bytes": png(label), "path": None})
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    images = load_calibration_images(str(folder), split="train", num_samples=2)
    assert len(images) == 2 and images[0].shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="at least 1"):
        load_calibration_images(str(folder), split="train", num_samples=0)
    with pytest.raises(ValueError, match=r"split 'calibration' not found .*pass --calibration_split"):
        load_calibration_images(str(folder), split="calibration", num_samples=2)
    with pytest.raises(TypeError, match="image processor"):
        load_calibration_images(str(folder), tiny_model.config, num_samples=2)  # the earlier signature


def test_fixed_size_calibration_must_match_the_export_size(tmp_path, tiny_model):
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match=r"fixed to 64x64, but calibration images have size \(32, 32\)"):
        export_to_engine(tiny_model, tmp_path / "out", engine="onnxruntime", precision="int8", height=64, width=64,
                         calibration_images=[torch.zeros(1, 3, 32, 32)])


# ---------------------------------------------------------------------------------------------------------------
# Folders: wrong engine, reuse, evaluate.py, pipeline
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_wrong_engine_and_plain_checkpoint_folders(exported, tiny_model, tmp_path):
    with pytest.raises(ValueError, match="exported for onnxruntime, not openvino.*ONNXRuntimeSegmenter"):
        OpenVINOSegmenter.from_pretrained(exported("onnxruntime", "fp32"))
    with pytest.raises(ValueError, match="exported for openvino, not onnxruntime"):
        ONNXRuntimeSegmenter.from_pretrained(exported("openvino", "fp32"))
    tiny_model.save_pretrained(tmp_path / "torch")
    with pytest.raises(ValueError, match="is a PyTorch checkpoint, not an exported engine folder"):
        OpenVINOSegmenter.from_pretrained(tmp_path / "torch")
    assert isinstance(load_segmentation_model(tmp_path / "torch"), DSNetForSemanticSegmentation)


@pytest.mark.slow
def test_export_into_a_used_folder_replaces_the_earlier_export(tmp_path, tiny_model):
    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "out"
    export_to_engine(tiny_model, folder, engine="onnxruntime", height=64, width=64, check=False)
    (folder / "notes.txt").write_text("mine")
    export_to_engine(tiny_model, folder, engine="openvino", height=64, width=64, check=False)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "notes.txt", "openvino_model.bin", "openvino_model.xml", "preprocessor_config.json"
    ]
    assert isinstance(load_segmentation_model(folder), OpenVINOSegmenter)
    assert not list(tmp_path.glob(".out.export-*"))  # no staging folder left behind


@pytest.mark.slow
def test_evaluate_script_on_an_exported_folder(exported, tiny_model, tmp_path):
    from msaf_hf.evaluation import main

    common = ["--synthetic", "--synthetic_num_labels", "4", "--synthetic_num_eval", "6", "--synthetic_num_train", "6",
              "--eval_split", "validation"]
    tiny_model.save_pretrained(tmp_path / "torch")
    torch_result = main(["--model_name_or_path", str(tmp_path / "torch"), "--output_file", str(tmp_path / "t.json"),
                         *common])
    engine_result = main(["--model_name_or_path", str(exported("openvino", "fp32")), "--flip",
                          "--output_file", str(tmp_path / "e.json"), *common])
    assert engine_result["num_images"] == torch_result["num_images"] == 6
    no_flip = main(["--model_name_or_path", str(exported("openvino", "fp32")), "--output_file",
                    str(tmp_path / "e2.json"), *common])
    assert no_flip["confusion_matrix"] == torch_result["confusion_matrix"]
    assert engine_result["test_time_augmentation"]["flip"] is True


@pytest.mark.slow
def test_image_segmentation_pipeline_on_an_engine_model(exported):
    from transformers import AutoImageProcessor, pipeline

    folder = exported("onnxruntime", "fp32")  # fixed 64x64: the processor resizes any image to it
    segmenter = pipeline("image-segmentation", model=load_segmentation_model(folder),
                         image_processor=AutoImageProcessor.from_pretrained(folder))
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    results = segmenter(image)
    assert results and all(r["mask"].size == (70, 50) for r in results)


# ---------------------------------------------------------------------------------------------------------------
# Missing extras
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "extra", "engine"), [("openvino", "openvino", "openvino"),
                                                         ("onnxruntime", "onnxruntime", "onnxruntime")])
@pytest.mark.slow
def test_missing_engine_package_names_the_extra(exported, tiny_model, tmp_path, monkeypatch, module, extra, engine):
    folder = exported(engine, "fp32")
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(MissingEngineError, match=rf"pip install 'msaf_hf\[{extra}\]'"):
        load_segmentation_model(folder)
    with pytest.raises(MissingEngineError, match=rf"msaf_hf\[{extra}\]"):
        export_to_engine(tiny_model, tmp_path / "out", engine=engine, height=64, width=64)


def test_missing_nncf_names_the_extra(tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(MissingEngineError, match=r"msaf_hf\[openvino\]"):
        export_to_engine(tiny_model, tmp_path / "out", engine="openvino", precision="int8", height=64, width=64,
                         calibration_images=[torch.zeros(1, 3, 64, 64)])


@pytest.mark.slow
def test_package_imports_without_any_engine():
    code = (
        "import sys\n"
        "for name in ('openvino', 'onnxruntime', 'nncf', 'onnx', 'onnxscript'): sys.modules[name] = None\n"
        "import msaf_hf, msaf_hf.engines, msaf_hf.evaluation\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_benchmark_engine_variants_are_validated():
    from msaf_hf.benchmarking import ENGINE_VARIANTS, InferenceCase

    assert set(ENGINE_VARIANTS) == {"openvino-fp32", "openvino-bf16", "openvino-int8", "onnxruntime-fp32",
                                    "onnxruntime-int8"}
    InferenceCase("dsnet", "openvino-int8")
    with pytest.raises(ValueError, match="cannot be torch.compiled"):
        InferenceCase("dsnet", "openvino-fp32", compile_mode="default")
    with pytest.raises(ValueError, match="only the 'eval' variant"):
        InferenceCase("segformer-b0", "onnxruntime-fp32")
    InferenceCase("dsnet", "onnxruntime-int8", quantization_scheme="naive")
    with pytest.raises(ValueError, match="scheme applies to the int8"):
        InferenceCase("dsnet", "openvino-fp32", quantization_scheme="naive")


@pytest.mark.slow
def test_benchmark_times_engines_per_quantization_scheme(tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    # In its own process, as users run it: engines timed with two threads in the pytest process left it in a state
    # where a later fork (another test starting processes) segfaulted.
    output = tmp_path / "benchmark.json"
    command = [sys.executable, str(Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"), "inference",
               "--models", "dsnet", "--variants", "eval", "openvino-fp32", "openvino-int8", "--quantization_schemes",
               "naive", "balanced", "--height", "32", "--width", "64", "--warmup", "0", "--repeats", "1", "--no-flops",
               "--json", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(output.read_text())["results"]
    assert [r["variant"] for r in results] == ["eval", "openvino-fp32", "openvino-int8", "openvino-int8"]
    assert [r.get("quantization_scheme") for r in results] == [None, None, "naive", "balanced"]
    assert results[1]["engine_check"]["argmax_agreement"] > 0.99  # the same weights as the torch rows
    assert all(r["images_per_s"] > 0 for r in results)
    assert "openvino-int8 (naive)" in result.stdout and "openvino-int8 (balanced)" in result.stdout


@pytest.mark.slow
def test_pictures_from_an_exported_folder_match_the_torch_model(exported, tiny_model, tmp_path):
    """scripts/predict.py and the demo load models through msaf_hf.visualization.load_segmenter: an exported folder
    runs as its engine (logits only, so no fusion maps) and predicts what the PyTorch model predicts."""
    from transformers import AutoImageProcessor

    from msaf_hf.visualization import Segmenter
    from msaf_hf.visualization import load_segmenter as load_for_pictures

    folder = exported("openvino", "fp32")
    segmenter = load_for_pictures(str(folder), device="cpu")
    assert isinstance(segmenter.model, OpenVINOSegmenter)
    assert not segmenter.supports_fusion_maps
    with pytest.raises(ValueError, match="fusion maps"):
        segmenter.predict([PIL.Image.new("RGB", SIZE[::-1])], fusion_maps=True)

    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8)) for _ in range(2)]
    reference = Segmenter(tiny_model, AutoImageProcessor.from_pretrained(folder), device="cpu")
    assert reference.supports_fusion_maps
    for ours, theirs in zip(segmenter.predict(images), reference.predict(images), strict=True):
        assert ours.label_map.shape == SIZE
        assert (ours.label_map == theirs.label_map).mean() >= 0.999


def test_old_spellings_of_the_quantization_scheme_still_work(caplog):
    """`--recipe` (export) and `--int8-recipes` (benchmark) are deprecated spellings; folders exported before the
    rename (`quantization.recipe` in config.json) still read, as `quantization.scheme`."""
    from msaf_hf.engines import exporting

    args = exporting.build_parser().parse_args(["model", "out", "--recipe", "accurate"])
    with caplog.at_level("WARNING"):
        assert exporting._quantization_scheme(args) == "accurate"
    assert "--recipe is deprecated" in caplog.text
    new = exporting.build_parser().parse_args(["model", "out", "--quantization_scheme", "naive"])
    assert exporting._quantization_scheme(new) == "naive"
    assert exporting._quantization_scheme(exporting.build_parser().parse_args(["model", "out"])) == "balanced"
    with pytest.raises(SystemExit, match="disagree"):
        exporting._quantization_scheme(exporting.build_parser().parse_args(
            ["model", "out", "--recipe", "naive", "--quantization_scheme", "accurate"]))

    from msaf_hf.commands import benchmark
    for flag in ("--int8-recipes", "--quantization_schemes"):
        parsed = benchmark.build_parser().parse_args(["inference", flag, "naive", "accurate"])
        assert parsed.quantization_schemes == ["naive", "accurate"]

    from msaf_hf.engines import EngineSpec

    old = EngineSpec.from_dict({"name": "openvino", "precision": "int8", "input_size": None, "example_size": [32, 64],
                                "quantization": {"recipe": {"name": "balanced"}, "calibration_images": 4}})
    assert old.quantization == {"scheme": {"name": "balanced"}, "calibration_images": 4}
