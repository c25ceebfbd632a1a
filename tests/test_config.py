"""The config schema and its dotted overrides: unknown keys rejected, types checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsol.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    config_from_dict,
    flatten_config,
    load_config,
)


def test_defaults_are_the_papers_full_scale_settings() -> None:
    config = RunConfig()
    assert (config.data.resize, config.data.crop) == (256, 224)
    assert config.classifier.backbone == "resnet18" and config.classifier.pretrained
    classifier = config.classifier
    assert (classifier.optimizer, classifier.batch_size, classifier.lr) == ("sgd", 16, 1e-3)
    assert (classifier.weight_decay, classifier.lr_step, classifier.epochs) == (1e-4, 80, 200)
    mask = config.mask
    assert (mask.optimizer, mask.batch_size, mask.lr, mask.epochs) == ("sgd", 128, 1e-4, 100)
    assert mask.lam == 1.0 and mask.reg and mask.ce
    assert config.selection.threshold == 0.1


def test_dotted_override_sets_a_nested_field_with_its_type() -> None:
    raw = apply_overrides({}, ["mask.lam=0.5", "mask.reg=false", "seed=3", "data.root=/x"])
    config = config_from_dict(raw)
    assert config.mask.lam == 0.5 and config.mask.reg is False and config.seed == 3
    assert config.data.root == Path("/x")


def test_unknown_key_is_rejected_with_the_valid_neighbours() -> None:
    with pytest.raises(ConfigError) as error:
        apply_overrides({}, ["mask.lamda=0.5"])
    assert "mask.lamda" in str(error.value) and "mask.lam" in str(error.value)


def test_wrong_type_names_the_field_and_the_value() -> None:
    with pytest.raises(ConfigError) as error:
        apply_overrides({}, ["mask.epochs=many"])
    assert "mask.epochs" in str(error.value) and "many" in str(error.value)


def test_setting_a_section_to_a_scalar_is_rejected() -> None:
    with pytest.raises(ConfigError, match="is a section"):
        apply_overrides({}, ["mask=3"])


def test_override_without_equals_sign_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"key=value"):
        apply_overrides({}, ["mask.lam"])


def test_crop_must_be_a_multiple_of_32_and_the_message_quotes_the_value_once() -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict({"data": {"crop": 100}})
    (line,) = [line for line in str(error.value).splitlines() if "data.crop" in line]
    assert line.strip() == "data.crop: must be a multiple of 32 (g downsamples 5 times), got 100"


def test_a_type_error_quotes_the_value_it_got() -> None:
    with pytest.raises(ConfigError, match=r"mask\.epochs: .*integer.* \(got 'many'\)"):
        config_from_dict({"mask": {"epochs": "many"}})


def test_unknown_key_in_a_file_names_the_file_and_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("mask:\n  lamb: 2\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value)
    # The same message as an unknown --set key: the valid keys of that section.
    assert "mask.lamb: unknown config key 'mask.lamb'; valid keys here: " in str(error.value)
    assert "mask.lam," in str(error.value)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_file_then_overrides_then_flatten_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("name: a\nmask:\n  lam: 2.0\n")
    config = load_config(path, ["mask.lam=0.25"])
    flat = flatten_config(config)
    assert flat["mask.lam"] == 0.25 and flat["name"] == "a"
    assert flat["data.root"] == str(config.data.root)
    assert all("." in key or key in RunConfig.model_fields for key in flat)


def test_shipped_cpu_config_is_valid() -> None:
    config = load_config(Path(__file__).parents[1] / "configs" / "synthetic_cpu.yaml")
    assert config.data.crop % 32 == 0 and not config.classifier.pretrained
