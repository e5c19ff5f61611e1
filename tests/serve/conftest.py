"""A model the trainer really wrote (with its model card), shared by the serve tests."""

from __future__ import annotations

import pathlib

import pytest


@pytest.fixture(scope="session")
def trained_job(short_trained_job) -> pathlib.Path:
    """JOB folder of the trainer's shortest real run on the sample shards (64 px, pad)."""
    job, _ = short_trained_job
    return job


@pytest.fixture
def broken_model(trained_job, tmp_path) -> pathlib.Path:
    """JOB/model folder with the trained job's card beside a final.keras that is not a model."""
    broken = tmp_path / "job" / "model"
    broken.mkdir(parents=True)
    (broken / "model_card.json").write_text((trained_job / "model" / "model_card.json").read_text())
    (broken / "final.keras").write_bytes(b"not a keras zip")
    return broken
