"""A job killed at any moment is finished by rerunning the same command (+ --overwrite),
and the result equals an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bonify.vocabulary import MANIFEST_FILE

from .conftest import REPO_ROOT_FOR_SUBPROCESS, one_line, run_job, shard_bytes


def test_killed_run_is_refused_then_finished_with_overwrite(sample_dataset_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--input_dir", str(sample_dataset_dir), "--output_dir", str(out), "--image_size", "256"]
    process = subprocess.Popen(
        [sys.executable, "-m", "beam_preprocess", *argv],
        cwd=REPO_ROOT_FOR_SUBPROCESS,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT_FOR_SUBPROCESS)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Kill it (SIGKILL: no cleanup) as soon as it has written its first shard.
    deadline = time.monotonic() + 120
    while not list(out.glob("mura-*.tfrecord-*")) and time.monotonic() < deadline:
        assert process.poll() is None, one_line(process.stderr.read())[-3:]
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not (out / MANIFEST_FILE).exists(), "the job finished before it could be killed"

    assert run_job(argv) == 2
    assert "incomplete previous run" in capsys.readouterr().err
    assert run_job([*argv, "--overwrite"]) == 0

    clean = tmp_path / "clean"
    assert run_job([*argv[:3], str(clean), *argv[4:]]) == 0
    assert shard_bytes(out) == shard_bytes(clean)
