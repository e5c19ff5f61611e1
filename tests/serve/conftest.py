"""A model the trainer really wrote (with its model card), shared by the serve tests."""

from __future__ import annotations

import pathlib

import pytest


@pytest.fixture(scope="session")
def trained_job(short_trained_job) -> pathlib.Path:
    """JOB folder of the trainer's shortest real run on the sample shards (64 px, pad)."""
    job, _ = short_trained_job
    return job
