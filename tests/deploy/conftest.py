"""Fixtures of the deployment tests.

`multiworker_run`: a real 2-worker MultiWorkerMirroredStrategy run whose TF_CONFIG comes
from the Kubernetes code path (`bonify-train --tf_config_from_k8s`, trainer/k8s_cluster.py).

Each process gets the env an Indexed Job pod gets (JOB_COMPLETION_INDEX, HOSTNAME
`<job-name>-<index>`, the BONIFY_* variables of k8s/overlays/multi-node-gpu), with the
worker addresses pointed at loopback through BONIFY_WORKER_ADDRESS_TEMPLATE and one port
per index, since both "pods" share this machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import types

import pytest

from bonify.vocabulary import MANIFEST_FILE
from tests.support.trainer_runs import free_ports

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 300

# The smallest run of the real trainer: one phase, one epoch of STEPS steps, a tiny CNN.
TINY_CONFIG = """\
model: {backbone: small_cnn, weights: none, small_cnn_width: 4, head_units: [8], head_dropout: [0.0]}
data: {image_size: IMAGE_SIZE, shuffle_buffer: 64}
training: {global_batch_size: 8, steps_per_epoch: STEPS, validation_steps: 1, verbose: 2,
           tensorboard_images: 0, log_every_steps: 1, checkpoint_every_steps: 2}
distribute: {mixed_precision: "off"}
phases:
  - {name: only, trainable: all, learning_rate: 1.0e-3, epochs: 1}
"""


def tiny_config(path: pathlib.Path, shards_dir: pathlib.Path, steps: int) -> pathlib.Path:
    """Write TINY_CONFIG for `steps` steps at the shards' image size (the trainer checks it)."""
    manifest = json.loads((shards_dir / MANIFEST_FILE).read_text())
    text = TINY_CONFIG.replace("IMAGE_SIZE", str(manifest["image_size"]))
    path.write_text(text.replace("STEPS", str(steps)))
    return path


def trainer_command(shards_dir: pathlib.Path, job_dir: pathlib.Path, config: pathlib.Path) -> list:
    """What every pod of k8s/overlays/multi-node-gpu runs, with local paths."""
    return [
        sys.executable,
        "-m",
        "trainer",
        "--data_dir",
        str(shards_dir),
        "--job_dir",
        str(job_dir),
        "--config",
        str(config),
        "--strategy",
        "multi_worker",
        "--tf_config_from_k8s",
    ]


def start_pod(index: int, command: list, ports: list[int], log: pathlib.Path) -> subprocess.Popen:
    """Start "pod" `index` of a 2-pod Indexed Job, in its own process group (killed by PID)."""
    with log.open("w") as out:
        return subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=pod_env(index, 2, ports),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill(process: subprocess.Popen) -> None:
    """SIGKILL a process group we started, by its PID."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def stop_group(process: subprocess.Popen, timeout_s: float = 15) -> None:
    """SIGTERM a process group we started (by its PID), SIGKILL it if it does not exit."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout_s)


def pod_env(index: int, num_workers: int, ports: list[int]) -> dict[str, str]:
    """This machine's env plus what Kubernetes and the multi-node manifest set in pod `index`."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    env.update(
        {
            "JOB_COMPLETION_INDEX": str(index),
            "HOSTNAME": f"bonify-train-{index}",
            "BONIFY_NUM_WORKERS": str(num_workers),
            "BONIFY_JOB_NAME": "bonify-train",
            "BONIFY_SERVICE": "bonify-workers",
            "BONIFY_NAMESPACE": "default",
            "BONIFY_WORKER_PORT": ",".join(map(str, ports)),
            "BONIFY_WORKER_ADDRESS_TEMPLATE": "127.0.0.1:{port}",
            "PYTHONPATH": str(REPO_ROOT),
            # INFO logs of the C++ runtime show the workers joining one cluster.
            "TF_CPP_MIN_LOG_LEVEL": "0",
            "CUDA_VISIBLE_DEVICES": "",
        }
    )
    return env


@dataclasses.dataclass(frozen=True)
class MultiWorkerRun:
    """What the two trainer processes left behind."""

    exit_codes: list[int]
    logs: list[str]  # stdout+stderr of worker 0 (the chief) and worker 1
    job_dir: pathlib.Path
    ports: list[int]


@pytest.fixture(scope="session")
def multiworker_run(sample_shards_dir, tmp_path_factory) -> MultiWorkerRun:
    """Two `python -m trainer --tf_config_from_k8s` processes as pods 0 and 1 of an Indexed Job."""
    tmp_path = tmp_path_factory.mktemp("multiworker")
    config = tiny_config(tmp_path / "tiny.yaml", sample_shards_dir, steps=2)
    job_dir = tmp_path / "job"
    ports = free_ports(2)
    command = trainer_command(sample_shards_dir, job_dir, config)
    logs = [tmp_path / f"worker{index}.log" for index in range(2)]
    workers = []
    codes = []
    try:
        for index in range(2):
            workers.append(start_pod(index, command, ports, logs[index]))
        deadline = time.monotonic() + RUN_TIMEOUT_S
        codes = [worker.wait(timeout=max(1.0, deadline - time.monotonic())) for worker in workers]
    finally:
        for worker in workers:
            kill(worker)
    return MultiWorkerRun(codes, [log.read_text() for log in logs], job_dir, ports)


@pytest.fixture(scope="session")
def pods() -> types.SimpleNamespace:
    """The helpers above, for tests that start "pods" themselves (rootdir-less imports)."""
    return types.SimpleNamespace(
        free_ports=free_ports,
        tiny_config=tiny_config,
        trainer_command=trainer_command,
        start_pod=start_pod,
        kill=kill,
        stop_group=stop_group,
    )
