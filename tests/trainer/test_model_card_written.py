"""A finished training run leaves JOB/model/model_card.json (+ .md) beside final.keras, and
what the card says is what the job's own files say."""

from __future__ import annotations

import hashlib
import json

import pytest

from bonify.model_card import CARD_FILE, CARD_MARKDOWN_FILE
from bonify.vocabulary import CLASS_NAMES
from tests.support.trainer_runs import run_python


def _card(job) -> dict:
    return json.loads((job / "model" / CARD_FILE).read_text())


@pytest.mark.slow
def test_the_card_is_written_beside_the_final_model(short_trained_job):
    job, _ = short_trained_job
    assert (job / "model" / "final.keras").is_file()
    assert (job / "model" / CARD_FILE).is_file()
    assert "not a medical device" in (job / "model" / CARD_MARKDOWN_FILE).read_text()


@pytest.mark.slow
def test_the_input_spec_is_the_data_the_model_was_trained_on(short_trained_job, sample_shards_dir):
    job, _ = short_trained_job
    manifest = json.loads((sample_shards_dir / "manifest.json").read_text())
    spec = _card(job)["input_spec"]
    assert spec["image_size"] == manifest["image_size"] == 64
    assert spec["resize"] == manifest["resize"]
    assert spec["schema_version"] == manifest["schema_version"]
    assert spec["class_names"] == list(CLASS_NAMES)
    assert (spec["dtype"], spec["channels"]) == ("uint8", 1)
    # The threshold is the operating point the trainer fitted on the validation split
    # (tests/trainer/test_study_validation.py checks the fit).
    card = _card(job)
    assert card["threshold"] == card["operating_point"]["threshold"]
    assert (card["threshold_source"], card["operating_point"]["source"]) == ("fitted", "trainer")


@pytest.mark.slow
def test_the_phase_metrics_are_those_of_training_state(short_trained_job):
    job, _ = short_trained_job
    state = json.loads((job / "training_state.json").read_text())
    expected = [
        (row["name"], row["best_val_accuracy"], row["best_val_loss"], row["best_epoch"])
        for row in state["phases"]
    ]
    card = [
        (row["name"], row["best_val_accuracy"], row["best_val_loss"], row["best_epoch"])
        for row in _card(job)["validation"]
    ]
    assert card == expected and len(card) == 2


@pytest.mark.slow
def test_the_hashes_are_those_of_the_manifest_and_config_files(
    short_trained_job, sample_shards_dir
):
    job, _ = short_trained_job
    card = _card(job)
    manifest_bytes = (sample_shards_dir / "manifest.json").read_bytes()
    assert card["training_data"]["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    config_bytes = (job / "config.yaml").read_bytes()
    assert card["config"]["sha256"] == hashlib.sha256(config_bytes).hexdigest()
    assert card["config"]["values"]["data"]["image_size"] == 64


@pytest.mark.slow
def test_rerunning_a_finished_job_keeps_its_card(short_trained_job, sample_shards_dir):
    job, config = short_trained_job
    before = (job / "model" / CARD_FILE).read_bytes()
    rerun = run_python(
        "-m", "trainer", "--data_dir", str(sample_shards_dir), "--job_dir", str(job),
        "--config", str(config),
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "already finished" in rerun.stdout
    assert (job / "model" / CARD_FILE).read_bytes() == before
