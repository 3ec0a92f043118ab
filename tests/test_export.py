"""Export: ONNX (checked with onnxruntime; dynamic batch, fixed spatial size for MSAF) and torch.export."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import load_fixture, require_reference

from msaf_hf import DSNetForSemanticSegmentation, load_preset
from msaf_hf.convert import convert_original_checkpoint
from msaf_hf.engines import compare_with_torch
from msaf_hf.export import export_onnx, export_program

FIXTURE = "dsnet_head64_tiny"  # published-code weights, 1x3x128x160


@pytest.fixture(scope="module")
def fixture_model_and_input():
    tensors, meta = load_fixture(FIXTURE)
    names = {i: f"c{i}" for i in range(meta["num_classes"])}
    model, _ = convert_original_checkpoint(require_reference() / f"{FIXTURE}.pth", id2label=names)
    return model.eval(), tensors["pixel_values"]


def _relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return ((ours - reference).abs().max() / reference.abs().max()).item()


# ---------------------------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("deploy", [True, False], ids=["deployed", "eval"])
def test_onnx_matches_onnxruntime_with_dynamic_batch(fixture_model_and_input, tmp_path, deploy):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    model, pixel_values = fixture_model_and_input
    model = copy.deepcopy(model)
    if deploy:
        model.to_deploy()
    example = torch.cat([pixel_values, pixel_values.flip(-1)])  # batch 2 at export
    path = export_onnx(model, tmp_path / "dsnet.onnx", example, dynamic_batch=True)
    assert path.is_file()

    import onnx

    graph_input = onnx.load(str(path)).graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "pixel_values"
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch
    assert [d.dim_value for d in dims[1:]] == [3, 128, 160]  # fixed channels and spatial size

    for batch in (example, pixel_values, torch.cat([example, pixel_values])):  # batch 2, 1 and 3
        report = compare_with_torch(path, model, batch)
        assert report["max_relative_difference"] <= 1e-4, f"batch {batch.shape[0]}: onnxruntime vs torch {report}"


@pytest.mark.slow
def test_onnx_spatial_size_is_fixed_for_msaf(fixture_model_and_input, tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    model, pixel_values = fixture_model_and_input
    model = copy.deepcopy(model).to_deploy()
    with pytest.raises(ValueError, match="context pools"):
        export_onnx(model, tmp_path / "dynamic.onnx", pixel_values, dynamic_spatial=True)
    path = export_onnx(model, tmp_path / "fixed.onnx", pixel_values)
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # onnxruntime refuses another size
        compare_with_torch(path, model, torch.randn(1, 3, 128, 192))


@pytest.mark.slow
def test_onnx_dynamic_spatial_size_without_context_pools(tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    config = load_preset("dsnet", base_channels=4, num_labels=5, fusion_type="aff")
    model = DSNetForSemanticSegmentation(config).eval().to_deploy()
    path = export_onnx(model, tmp_path / "aff.onnx", torch.randn(2, 3, 64, 96), dynamic_spatial=True)
    for shape in ((1, 3, 96, 64), (3, 3, 72, 200)):
        report = compare_with_torch(path, model, torch.randn(shape))
        assert report["max_relative_difference"] <= 1e-4, f"{shape}: {report}"


# ---------------------------------------------------------------------------------------------------------------
# torch.export
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torch_export_matches_eager_with_dynamic_batch_and_size(fixture_model_and_input):
    model, pixel_values = fixture_model_and_input
    model = copy.deepcopy(model).to_deploy()
    program = export_program(model, pixel_values, dynamic_batch=True, dynamic_spatial=True)
    assert isinstance(program, torch.export.ExportedProgram)
    exported = program.module()
    torch.manual_seed(0)
    for inputs in (pixel_values, torch.randn(3, 3, 128, 160), torch.randn(2, 3, 96, 200)):
        with torch.no_grad():
            expected = model(inputs).logits
            ours = exported(inputs)
        assert ours.shape == expected.shape
        assert _relative_error(ours, expected) <= 1e-6


@pytest.mark.slow
def test_torch_export_of_eval_model_with_static_shapes(fixture_model_and_input):
    model, pixel_values = fixture_model_and_input
    program = export_program(model, pixel_values, dynamic_batch=False)
    with torch.no_grad():
        expected = model(pixel_values).logits
        ours = program.module()(pixel_values)
    assert _relative_error(ours, expected) <= 1e-6


def test_export_refuses_training_mode_and_odd_sizes(tiny_config):
    model = DSNetForSemanticSegmentation(tiny_config)  # training mode
    with pytest.raises(ValueError, match="eval"):
        export_program(model, torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="multiples of 8"):
        export_program(model.eval(), torch.randn(1, 3, 60, 64))
