"""transformers' own common test suites run on DSNet: ModelTesterMixin (DSNetModel, DSNetForSemanticSegmentation),
ConfigTester and ImageProcessingTestMixin, the way transformers tests SegFormer (a tiny model tester).

The suites ship only in transformers' source distribution; `make test` fetches the one of the installed version
into the git-ignored `.cache/transformers-tests/` (scripts/fetch_transformers_test_suites.py). Without it this
module skips (in CI, `CI=true`, it fails). Three helper modules the suites import are not in the source
distribution; they are stood in for below (`_stand_ins`), each with what it provides.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import unittest
from pathlib import Path

import pytest
import torch
import transformers
from conftest import missing_input

import msaf_hf  # noqa: F401  (registers DSNet with the Auto classes)
from msaf_hf import DSNetConfig, DSNetForSemanticSegmentation, DSNetImageProcessor, DSNetModel

pytestmark = pytest.mark.slow  # transformers' common suites: hundreds of checks (make test runs them; test-fast not)

SUITES = Path(__file__).resolve().parents[1] / ".cache" / "transformers-tests" / transformers.__version__ / "tests"
PACKAGE = "transformers_common_tests"

if not (SUITES / "test_modeling_common.py").is_file():
    missing_input(
        f"transformers {transformers.__version__}'s common test suites are not fetched ({SUITES} is absent): run "
        "`python scripts/fetch_transformers_test_suites.py` (needs the package index), or `make test`.",
        allow_module_level=True,
    )
if importlib.util.find_spec("parameterized") is None:
    missing_input("the common suites need `parameterized` (pip install -e '.[test]')", allow_module_level=True)


def _stand_ins() -> None:
    """Modules test_modeling_common / test_configuration_common import from transformers' repository but the
    source distribution leaves out."""
    export = types.ModuleType(f"{PACKAGE}.exporters.test_export")

    class ExportTesterMixin:  # torch.export tests: DSNet's own export test is below (test_torch_export)
        pass

    export.ExportTesterMixin = ExportTesterMixin
    generation = types.ModuleType(f"{PACKAGE}.generation.test_utils")

    class GenerationTesterMixin:  # DSNet does not generate; the suite only checks the tester does not use this
        pass

    generation.GenerationTesterMixin = GenerationTesterMixin
    configuration = types.ModuleType(f"{PACKAGE}.utils.test_configuration_utils")
    # Every common PreTrainedConfig argument with a non-default value (check_config_arguments_init sets them all).
    configuration.config_common_kwargs = {
        "return_dict": False,
        "output_hidden_states": True,
        "output_attentions": True,
        "dtype": "float16",
        "chunk_size_feed_forward": 5,
        "architectures": ["DSNetForSemanticSegmentation"],
        "id2label": {0: "label"},
        "label2id": {"label": "0"},
        "problem_type": "regression",
    }
    hub_objects = types.ModuleType("fetch_hub_objects_for_ci")  # transformers' utils/, for its CI image cache

    def url_to_local_path(url: str) -> str:
        raise RuntimeError(f"tests download nothing: {url} is not available")

    hub_objects.url_to_local_path = url_to_local_path
    sys.modules.setdefault(hub_objects.__name__, hub_objects)
    for name, module in (("exporters", export), ("generation", generation), ("utils", configuration)):
        package = types.ModuleType(f"{PACKAGE}.{name}")
        package.__path__ = []
        sys.modules[package.__name__] = package
        sys.modules[module.__name__] = module


def _load_suites():
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(SUITES)]
        sys.modules[PACKAGE] = package
        _stand_ins()
    return (
        importlib.import_module(f"{PACKAGE}.test_modeling_common"),
        importlib.import_module(f"{PACKAGE}.test_configuration_common"),
        importlib.import_module(f"{PACKAGE}.test_image_processing_common"),
    )


modeling_common, configuration_common, image_processing_common = _load_suites()
ModelTesterMixin = modeling_common.ModelTesterMixin
floats_tensor, ids_tensor = modeling_common.floats_tensor, modeling_common.ids_tensor
ConfigTester = configuration_common.ConfigTester
ImageProcessingTestMixin = image_processing_common.ImageProcessingTestMixin
ImageProcessingTester = image_processing_common.ImageProcessingTester


class DSNetModelTester:
    """A tiny DSNet (base width 4, one block per stage, one MSAF context pool, 3 classes) on 16x16 images: the
    suites loop over every parameter, so fewer tensors keep them fast."""

    def __init__(self, parent, batch_size=2, image_size=16, num_channels=3, num_labels=3, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.num_channels = num_channels
        self.num_labels = num_labels
        self.is_training = is_training
        self.use_labels = True

    def get_config(self) -> DSNetConfig:
        return DSNetConfig(
            num_channels=self.num_channels,
            base_channels=4,
            shared_depth=1,
            detail_depth=1,
            context_depth=1,
            num_labels=self.num_labels,
            fusion_context_sizes=[2],
            pyramid_dilations=[1, 2],
            ohem_min_kept=16,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        labels = ids_tensor([self.batch_size, self.image_size, self.image_size], self.num_labels)
        return self.get_config(), pixel_values, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}


class DSNetModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (DSNetModel, DSNetForSemanticSegmentation)
    has_attentions = True  # the MSAF fusion weights
    test_resize_embeddings = False
    test_torch_exportable = True

    def setUp(self):
        self.model_tester = DSNetModelTester(self)
        self.config_tester = ConfigTester(
            self, config_class=DSNetConfig, has_text_modality=False, common_properties=["num_channels", "base_channels"]
        )

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels and model_class is DSNetForSemanticSegmentation:
            # The same labels on every call (tuple/dict equivalence compares two calls), every class present.
            tester = self.model_tester
            shape = (tester.batch_size, tester.image_size, tester.image_size)
            inputs_dict["labels"] = torch.arange(torch.Size(shape).numel()).reshape(shape) % tester.num_labels
        return inputs_dict

    def _segmenter_only(self, test_name: str) -> None:
        # transformers skips base models in its training tests by looking them up in its own MODEL_MAPPING,
        # which classes registered with the Auto API are not part of: DSNetModel (an encoder) has no loss.
        classes = self.all_model_classes
        self.all_model_classes = (DSNetForSemanticSegmentation,)
        try:
            getattr(super(), test_name)()
        finally:
            self.all_model_classes = classes

    def test_training(self):
        self._segmenter_only("test_training")

    def test_training_gradient_checkpointing(self):
        self._segmenter_only("test_training_gradient_checkpointing")

    def test_training_gradient_checkpointing_use_reentrant_false(self):
        self._segmenter_only("test_training_gradient_checkpointing_use_reentrant_false")

    def test_training_gradient_checkpointing_use_reentrant_true(self):
        self._segmenter_only("test_training_gradient_checkpointing_use_reentrant_true")

    def test_hidden_states_output(self):
        """DSNet's own layout (the common test assumes one hidden state per transformer layer): stem (1/4), the
        shared stages (1/4, 1/8), three fusions (1/8) and the pyramid projection (1/8)."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        size = self.model_tester.image_size
        p = config.base_channels
        expected = [(p, size // 4), (p, size // 4), (2 * p, size // 8)] + [(4 * p, size // 8)] * 3
        expected.append((config.decoder_channels, size // 8))
        for model_class in self.all_model_classes:
            for how in ("argument", "config"):
                model_config = DSNetConfig(**{**config.to_dict(), "output_hidden_states": how == "config"})
                model = model_class(model_config).eval()
                with torch.no_grad():
                    out = model(**inputs, **({"output_hidden_states": True} if how == "argument" else {}))
                shapes = [(h.shape[1], h.shape[2]) for h in out.hidden_states]
                self.assertEqual(shapes, expected)
                self.assertEqual(out.hidden_states[0].shape[0], self.model_tester.batch_size)

    def test_attention_outputs(self):
        """The attentions are the three MSAF fusion weight maps, in (0, 1), at 1/8 resolution."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        size = self.model_tester.image_size
        for model_class in self.all_model_classes:
            model = model_class(config).eval()
            with torch.no_grad():
                plain = model(**inputs)
                out = model(**inputs, output_attentions=True)
            self.assertIsNone(plain.attentions)
            self.assertEqual(len(out.attentions), 3)
            for weights in out.attentions:
                self.assertEqual(tuple(weights.shape), (self.model_tester.batch_size, 4 * config.base_channels, size // 8, size // 8))  # noqa: E501
                self.assertTrue(bool(((weights >= 0) & (weights <= 1)).all()))

    @unittest.skip(reason="DSNet has no token embeddings (a convolutional model: nothing to get, set or resize)")
    def test_model_get_set_embeddings(self):
        pass

    def test_config(self):
        self.config_tester.run_common_tests()

    @pytest.mark.slow
    def test_compiles_without_graph_breaks(self):
        """What `_can_compile_fullgraph = True` promises: the whole forward (output capturing included) in one graph,
        inference and training with labels. (The suite's own compile tests need an accelerator or are slow.)"""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        labels = self._prepare_for_class(inputs, DSNetForSemanticSegmentation, return_labels=True)["labels"]
        model = DSNetForSemanticSegmentation(config).eval()  # runs DSNetModel inside: both classes are traced
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        with torch.no_grad():
            expected = model(**inputs, output_hidden_states=True).to_tuple()
            for ours, theirs in zip(compiled(**inputs, output_hidden_states=True).to_tuple(), expected, strict=False):
                torch.testing.assert_close(ours, theirs)
        model.train()
        torch.compile(model, fullgraph=True, backend="eager")(**inputs, labels=labels).loss.backward()
        torch._dynamo.reset()

    def test_torch_export(self):
        """Stands in for the source distribution's missing ExportTesterMixin: torch.export, same logits."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        model = DSNetForSemanticSegmentation(config).eval()
        with torch.no_grad():
            expected = model(**inputs).logits
            exported = torch.export.export(model, args=(), kwargs=inputs)
            torch.testing.assert_close(exported.module()(**inputs).logits, expected)


class DSNetImageProcessingTester(ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        super().__init__(
            parent, batch_size=3, min_resolution=16, max_resolution=48, do_resize=True,
            size={"height": 24, "width": 32}, num_labels=3, **kwargs,
        )

    def _get_image_processing_classes(self):
        # The suite finds classes from the test file's folder (tests/models/<type>/); DSNet's is registered here.
        # Only the PIL backend: torchvision's wheels do not import beside this project's CPU torch build.
        return {"pil": DSNetImageProcessor}


class DSNetImageProcessingTest(
    ImageProcessingTestMixin, image_processing_common.PostProcessSemanticSegmentationTestMixin, unittest.TestCase
):
    image_processor_tester_class = DSNetImageProcessingTester

    @unittest.skip(
        reason="torchvision backend not testable here: torchvision's wheels do not import beside the CPU torch build"
    )
    def test_new_models_require_torchvision_backend(self):
        pass
