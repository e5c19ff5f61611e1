"""Running the trainer as a user does: `python -m trainer ...` in a subprocess, bounded.

Every test that trains end to end goes through these, so the command line, the
environment (no inherited TF_CONFIG) and the timeout are the same everywhere.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

#: Seconds; a hung run fails its test instead of blocking the suite.
RUN_TIMEOUT = 300


def stage_env(extra: dict | None = None) -> dict:
    """The test process's environment for a stage subprocess: this checkout importable, no
    TF_CONFIG inherited from the caller (it would turn a run into a multi-worker one)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env.pop("TF_CONFIG", None)
    env.update(extra or {})
    return env


def trainer_command(shards, job, config, *extra: str) -> list[str]:
    """`python -m trainer --data_dir SHARDS --job_dir JOB --config CONFIG EXTRA...`."""
    return [
        sys.executable, "-m", "trainer", "--data_dir", str(shards), "--job_dir", str(job),
        "--config", str(config), *extra,
    ]  # fmt: skip


def run_python(*arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python ARGUMENTS...` from the repository root, output captured, bounded."""
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=REPO_ROOT,
        env=stage_env(env),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def run_trainer(shards, job, config, *extra: str, env: dict | None = None):
    """Run the trainer to its end; returns the CompletedProcess (exit code not checked)."""
    return run_python(*trainer_command(shards, job, config, *extra)[1:], env=env)


def final_weights(job: pathlib.Path) -> list[np.ndarray]:
    """The weights of JOB/model/final.keras, in the model's order."""
    import keras

    return [np.asarray(w) for w in keras.saving.load_model(job / "model" / "final.keras").weights]
