"""Fixtures shared by every stage's tests: a generated MURA tree and its shards.

Both are session-scoped and built by the real code paths (the sample generator and the
Beam job on the offline FnApiRunner), so every stage is tested on what the previous stage
really writes. Tests that modify a tree or shards copy them first.
"""

from __future__ import annotations

import os
import pathlib

import pytest

# Keep TensorFlow quiet and deterministic enough for tests; set before any TF import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"

#: Small enough to generate and preprocess in seconds, big enough for every class and
#: region to appear in every split.
TEST_SAMPLE_PATIENTS = 60
TEST_IMAGE_SIZE = 64


@pytest.fixture(scope="session")
def sample_dataset_dir(tmp_path_factory) -> pathlib.Path:
    """A generated MURA tree; returns the folder that contains MURA-v1.1/."""
    from bonify.sample import generate_sample

    out = tmp_path_factory.mktemp("sample")
    generate_sample(out, patients=TEST_SAMPLE_PATIENTS, seed=0)
    return out


@pytest.fixture(scope="session")
def sample_shards_dir(tmp_path_factory, sample_dataset_dir) -> pathlib.Path:
    """The Beam job's output for `sample_dataset_dir` at TEST_IMAGE_SIZE px (PNG)."""
    from beam_preprocess.__main__ import main as preprocess_main

    out = tmp_path_factory.mktemp("shards")
    exit_code = preprocess_main(
        [
            "--input_dir",
            str(sample_dataset_dir),
            "--output_dir",
            str(out),
            "--image_size",
            str(TEST_IMAGE_SIZE),
            "--overwrite",
            "--runner=FnApiRunner",
        ]
    )
    assert exit_code == 0
    return out


@pytest.fixture(scope="session")
def short_trained_job(tmp_path_factory, sample_shards_dir) -> tuple[pathlib.Path, pathlib.Path]:
    """(JOB, config file) of the trainer's shortest real run on `sample_shards_dir` (64 px,
    pad): final.keras, its model card and the state files, as the later stages read them."""
    from tests.support.trainer_runs import train_short_job

    return train_short_job(sample_shards_dir, tmp_path_factory.mktemp("short_job"))
