"""The same job on the other runners: FnApiRunner with one in-process worker and
PortableRunner LOOPBACK write byte-identical shards to the default run (one worker process
per core); the Dataflow job builds offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bonify.vocabulary import MANIFEST_FILE

from .conftest import REPO_ROOT_FOR_SUBPROCESS, one_line, run_job, shard_bytes

IMAGE_SIZE = 64  # as tests/conftest.py, so the outputs are comparable


def _manifest_counts(output_dir):
    manifest = json.loads((output_dir / MANIFEST_FILE).read_text())
    return {key: manifest[key] for key in ("input_images", "written", "rejected", "splits")}


@pytest.mark.parametrize(
    "runner_flags",
    [
        ["--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory"],
        ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
    ],
    ids=["fnapi_one_in_process_worker", "portable_loopback"],
)
def test_runner_writes_the_same_records_as_the_default_run(
    runner_flags, sample_dataset_dir, sample_shards_dir, tmp_path
):
    out = tmp_path / "out"
    code = run_job(
        [
            "--input_dir",
            sample_dataset_dir,
            "--output_dir",
            out,
            "--image_size",
            IMAGE_SIZE,
            *runner_flags,
        ]
    )
    assert code == 0
    expected = shard_bytes(sample_shards_dir)
    assert expected, "the default run wrote no shards"
    assert shard_bytes(out) == expected
    assert _manifest_counts(out) == _manifest_counts(sample_shards_dir)


def test_dataflow_job_builds_offline_with_setup_file(sample_dataset_dir, tmp_path):
    out = tmp_path / "out"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "beam_preprocess",
            "--input_dir",
            str(sample_dataset_dir),
            "--output_dir",
            str(out),
            "--runner",
            "DataflowRunner",
            "--project",
            "my-project",
            "--region",
            "us-central1",
            "--temp_location",
            "gs://my-bucket/tmp",
            "--setup_file",
            "./setup.py",
            "--dry_run=True",
        ],
        cwd=REPO_ROOT_FOR_SUBPROCESS,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT_FOR_SUBPROCESS)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, one_line(completed.stderr)[-5:]
    assert "dry run on DataflowRunner: job built" in completed.stdout
    assert not out.exists()
