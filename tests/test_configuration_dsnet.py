import json

import pytest

from msaf_hf import DSNetConfig, list_presets, load_preset
from msaf_hf.presets import configuration_dir


def test_defaults_describe_published_dsnet():
    config = DSNetConfig()
    assert (config.base_channels, config.head_type, config.fusion_type) == (32, "head128", "msaf")
    assert config.fusion_context_sizes == [4, 8, 16]
    assert (config.main_loss_weight, config.auxiliary_loss_weights) == (0.6, [0.2, 0.2])
    assert (config.ohem_threshold, config.ohem_min_kept, config.semantic_loss_ignore_index) == (0.9, 131072, 255)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("dsnet", dict(base_channels=32, head_type="head128", detail_depth=2, context_depth=2)),
        ("dsnet-head64", dict(base_channels=32, head_type="head64")),
        ("dsnet-head256", dict(base_channels=32, head_type="head256")),
        ("dsnet-base", dict(base_channels=64, head_type="head128", detail_depth=3, context_depth=3)),
        ("dsnet_m", dict(base_channels=64, detail_depth=3)),  # the published MODEL.NAME works too
    ],
)
def test_presets(name, expected):
    config = load_preset(name, num_labels=11)
    assert config.num_labels == 11
    for key, value in expected.items():
        assert getattr(config, key) == value


def test_preset_files_are_listed_and_json():
    names = list_presets()
    assert {"dsnet", "dsnet-head64", "dsnet-head256", "dsnet-base"} <= set(names)
    for name in names:
        assert json.loads((configuration_dir() / f"{name}.json").read_text())["model_type"] == "dsnet"


def test_unknown_preset_lists_available():
    with pytest.raises(ValueError, match="Available presets: .*dsnet-base"):
        load_preset("dsnet-huge")


def test_round_trip(tmp_path):
    config = DSNetConfig(num_labels=3, class_weights=[1.0, 2.0, 0.5], fusion_context_sizes=(4, 8))
    config.save_pretrained(tmp_path)
    loaded = DSNetConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.fusion_context_sizes == [4, 8]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(head_type="head512"), "head_type"),
        (dict(fusion_type="concat"), "fusion_type"),
        (dict(fusion_context_sizes=[]), "fusion_context_sizes"),
        (dict(fusion_context_sizes=[4, 0]), "fusion_context_sizes"),
        (dict(base_channels=0), "base_channels"),
        (dict(base_channels=-8), "base_channels"),
        (dict(detail_depth=0), "detail_depth"),
        (dict(fusion_reduction=1000), "fusion_reduction"),
        (dict(fusion_reduction=0), "fusion_reduction"),
        (dict(pyramid_dilations=[]), "pyramid_dilations"),
        (dict(auxiliary_loss_weights=[0.2]), "auxiliary_loss_weights"),
        (dict(ohem_threshold=1.5), "ohem_threshold"),
        (dict(ohem_min_kept=0), "ohem_min_kept"),
        (dict(num_labels=3, class_weights=[1.0, 1.0]), "class_weights"),
        (dict(num_labels=300, semantic_loss_ignore_index=255), "semantic_loss_ignore_index"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"DSNetConfig.{field}"):
        DSNetConfig(**kwargs)


def test_error_lists_accepted_values():
    with pytest.raises(ValueError, match="head64.*head128.*head256"):
        DSNetConfig(head_type="big")


def test_aff_needs_no_context_sizes():
    assert DSNetConfig(fusion_type="aff", fusion_context_sizes=[]).fusion_type == "aff"


@pytest.mark.parametrize("head_type, decoder, skip, pyramid", [("head64", 2, 1, 4), ("head128", 4, 1, 4), ("head256", 8, 2, 8)])  # noqa: E501
def test_head_widths(head_type, decoder, skip, pyramid):
    config = DSNetConfig(head_type=head_type, base_channels=8)
    assert (config.decoder_channels, config.skip_channels, config.pyramid_channels) == (8 * decoder, 8 * skip, 8 * pyramid)  # noqa: E501
