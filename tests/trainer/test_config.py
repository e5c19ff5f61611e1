"""Config layering (defaults -> YAML -> --set) and one-line errors naming the key."""

from __future__ import annotations

import re

import pytest
import yaml

from trainer.config import DEFAULTS, dump_config, load_config, resume_conflict
from trainer.errors import TrainerError


def test_defaults_are_the_reference_recipe():
    config = load_config(None)
    assert config["model"]["backbone"] == "densenet169"
    assert config["data"]["image_size"] == 320
    assert config["training"]["global_batch_size"] == 32
    assert [p["learning_rate"] for p in config["phases"]] == [1e-4, 5e-6, 1e-6]
    assert [p["epochs"] for p in config["phases"]] == [20, 20, 15]
    assert config["phases"][0]["trainable"] == "last_n:60"
    assert [p["reduce_lr"]["patience"] for p in config["phases"]] == [4, 4, 3]
    assert [p["early_stopping"]["patience"] for p in config["phases"]] == [10, 10, 8]


def test_shipped_reference_yaml_equals_defaults():
    assert load_config("mura_densenet169") == load_config(None)


def test_yaml_then_set_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"image_size": 64}, "phases": [{"epochs": 2}]}))
    config = load_config(str(path), ["training.seed=7", "phases.0.learning_rate=0.5"])
    assert config["data"]["image_size"] == 64
    assert config["training"]["seed"] == 7
    assert len(config["phases"]) == 1
    assert config["phases"][0]["epochs"] == 2 and config["phases"][0]["learning_rate"] == 0.5
    # a phase given in YAML gets every default it does not set
    assert (
        config["phases"][0]["reduce_lr"]["factor"] == DEFAULTS["phases"][0]["reduce_lr"]["factor"]
    )


def test_shipped_name_resolves():
    assert load_config("sample_cpu")["model"]["backbone"] == "small_cnn"


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model.bogus=1"], "model.bogus"),
        (["training.global_batch_size=0"], "training.global_batch_size"),
        (["phases.0.trainable=some"], "phases[0].trainable"),
        (["model.backbone=resnet"], "model.backbone"),
        (["phases.9.epochs=1"], "phases.9"),
        (["distribute.mixed_precision=fp8"], "distribute.mixed_precision"),
    ],
)
def test_bad_override_is_an_error_naming_the_key(overrides, key):
    with pytest.raises(TrainerError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, overrides)


def test_unknown_yaml_key_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  epochz: 3\n")
    with pytest.raises(TrainerError, match="training.epochz"):
        load_config(str(path))


def test_missing_config_file_is_an_error():
    with pytest.raises(TrainerError, match="no such file"):
        load_config("/nonexistent/config.yaml")


def test_set_whole_phase_list_fills_phase_defaults():
    config = load_config(None, ["phases=[{name: a, epochs: 2}, {name: b, learning_rate: 0.01}]"])
    assert [p["name"] for p in config["phases"]] == ["a", "b"]
    assert config["phases"][0]["epochs"] == 2 and config["phases"][1]["learning_rate"] == 0.01
    assert config["phases"][1]["optimizer"] == "adam"
    # (the defaults resolved: an unset monitor is training.monitor's, see test_study_validation)
    assert config["phases"][1]["early_stopping"] == load_config(None)["phases"][0][
        "early_stopping"
    ] | {"patience": 10}


def test_set_phases_to_a_non_list_is_an_error():
    with pytest.raises(TrainerError, match="'phases' must be a non-empty list"):
        load_config(None, ["phases=3"])


def test_exponent_without_a_dot_is_a_number_in_yaml_and_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("phases:\n  - {learning_rate: 1e-4}\n")
    assert load_config(str(path))["phases"][0]["learning_rate"] == 1e-4
    assert load_config(None, ["phases.1.learning_rate=3E-6"])["phases"][1]["learning_rate"] == 3e-6


@pytest.mark.parametrize(
    "override, key",
    [
        ("model=5", "model"),
        ("training.seed=[1", "training.seed"),
        ("training.max_checkpoints=0", "training.max_checkpoints"),
        ("phases.0.reduce_lr.min_lr=abc", "phases[0].reduce_lr.min_lr"),
        ("phases.1.early_stopping.min_delta=x", "phases[1].early_stopping.min_delta"),
        ("model.head_dropout=[1.5, 0.2]", "model.head_units"),
        ("data.shuffle_buffer=0", "data.shuffle_buffer"),
        ("loss.focal_alpha=2", "loss.focal_alpha"),
        ("phases.0.class_weights=maybe", "phases[0].class_weights"),
        ("model.backbone=small_cnn", "model.weights"),  # small_cnn has no ImageNet weights
    ],
)
def test_bad_values_are_errors_naming_the_key(override, key):
    with pytest.raises(TrainerError, match=re.escape(key)):
        load_config(None, [override])


def test_set_a_mapping_key_merges_and_checks_its_keys():
    config = load_config(None, ["data.augment={brightness: 0.3}"])
    assert config["data"]["augment"]["brightness"] == 0.3
    assert config["data"]["augment"]["flip_left_right"] is True
    with pytest.raises(TrainerError, match="data.augment.bogus"):
        load_config(None, ["data.augment={bogus: 1}"])


def test_resume_conflict_names_the_first_key_that_changes_the_checkpoints():
    saved = yaml.safe_load(dump_config(load_config(None)))
    assert (
        resume_conflict(saved, load_config(None, ["training.verbose=2", "distribute.xla=true"]))
        is None
    )
    assert resume_conflict(saved, load_config(None, ["phases.1.trainable=head_only"])) == (
        "phases.1.trainable",
        "all",
        "head_only",
    )
    shorter = load_config(None, ["phases=[{epochs: 1}, {epochs: 1}]"])
    assert resume_conflict(saved, shorter)[0].startswith("phases.")
    assert resume_conflict(saved, load_config(None, ["training.global_batch_size=64"]))[0] == (
        "training.global_batch_size"
    )
