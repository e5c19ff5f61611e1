"""Running the trainer as a user does: `python -m trainer ...` in a subprocess, bounded.

Every test that trains end to end goes through these, so the command line, the
environment (no inherited TF_CONFIG) and the timeout are the same everywhere.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
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


def free_ports(count: int) -> list[int]:
    """`count` distinct free TCP ports on 127.0.0.1."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_worker_group(command: list[str], count: int = 2) -> list[subprocess.Popen]:
    """`command` started as each of `count` MultiWorkerMirroredStrategy workers on
    127.0.0.1 (its own TF_CONFIG each), from the repository root, output piped."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(count)]}
    processes = []
    for index in range(count):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(
            subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=stage_env({"TF_CONFIG": tf_config}),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return processes


def finish_worker_group(processes: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    """Wait (bounded) for every worker: [(returncode, stdout, stderr)] per worker; a worker
    still running after RUN_TIMEOUT is killed by PID."""
    try:
        outputs = [process.communicate(timeout=RUN_TIMEOUT) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
    return [(p.returncode, out, err) for p, (out, err) in zip(processes, outputs, strict=True)]


#: The smallest real run: a tiny CNN, two phases of one short epoch each (head only, then
#: all layers). Its numbers do not matter; what the trainer writes (final.keras, the model
#: card, the state files) is what the next stage reads.
SHORT_RUN_CONFIG = """
model: {backbone: small_cnn, weights: none, small_cnn_width: 4, head_units: [16],
        head_dropout: [0.1]}
data: {image_size: 64, shuffle_buffer: 64}
training: {global_batch_size: 8, steps_per_epoch: 2, validation_steps: 1, verbose: 2,
           tensorboard_images: 0}
distribute: {mixed_precision: "off"}
phases:
  - {name: head, trainable: head_only, learning_rate: 0.01, epochs: 1}
  - {name: all, trainable: all, learning_rate: 0.001, epochs: 1}
"""


def train_short_job(shards, folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Run SHORT_RUN_CONFIG on `shards` into folder/job; returns (job, config file)."""
    config = folder / "short.yaml"
    config.write_text(SHORT_RUN_CONFIG)
    job = folder / "job"
    trained = run_trainer(shards, job, config)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (job / "model" / "final.keras").is_file()
    return job, config


def final_weights(job: pathlib.Path) -> list[np.ndarray]:
    """The weights of JOB/model/final.keras, in the model's order."""
    import keras

    return [np.asarray(w) for w in keras.saving.load_model(job / "model" / "final.keras").weights]
