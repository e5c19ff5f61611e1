"""A real 2-worker MultiWorkerMirroredStrategy run whose TF_CONFIG comes from the Kubernetes
code path (`bonify-train --tf_config_from_k8s`, trainer/k8s_cluster.py).

Each process gets the env an Indexed Job pod gets (JOB_COMPLETION_INDEX, HOSTNAME
`<job-name>-<index>`, the BONIFY_* variables of k8s/overlays/multi-node-gpu), with the
worker addresses pointed at loopback through BONIFY_WORKER_ADDRESS_TEMPLATE and one port
per index, since both "pods" share this machine (the run is the `multiworker_run` fixture
in conftest.py).
"""

from __future__ import annotations

import json
import pathlib
import re
import signal
import subprocess
import time

import pytest
import yaml

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_workers_train_together_from_k8s_env(multiworker_run):
    run = multiworker_run
    assert run.exit_codes == [0, 0], "\n".join(log[-3000:] for log in run.logs)
    state = json.loads((run.job_dir / "training_state.json").read_text())
    assert state["completed"] is True
    # The chief's coordination service saw both tasks of the TF_CONFIG cluster join.
    assert "/job:worker/replica:0/task:1 has connected to coordination service" in run.logs[0]
    for index in range(2):
        assert f"Started server with target: grpc://127.0.0.1:{run.ports[index]}" in run.logs[index]
    # Both workers took part in every step: they end with bit-identical weights.
    fingerprints = [re.findall(r"worker \d+ weights sha256: (\w+)", log) for log in run.logs]
    assert all(len(found) == 1 for found in fingerprints), fingerprints
    assert fingerprints[0] == fingerprints[1]


#: The multi-node Job's failure handling, read from the manifest this test stands in for.
TRAIN_JOB = REPO_ROOT / "k8s" / "overlays" / "multi-node-gpu" / "train-job.yaml"
RESTART_RUN_TIMEOUT_S = 420
#: A dead MultiWorkerMirroredStrategy worker is noticed by the others after about 9 s.
PEER_LOSS_DETECTION_S = 90


@pytest.mark.slow
def test_killed_worker_takes_the_group_down_and_restarts_in_place_resume(
    pods, sample_shards_dir, tmp_path
):
    """What `restartPolicy: OnFailure` + `backoffLimit` in the multi-node Job rely on.

    Worker 1 is SIGKILLed after the first checkpoint (an OOM kill or a crashed container).
    Acting as the kubelet, this test restarts any "pod" that exits non-zero, in place (same
    index, hostname and port), and never one that exited 0. The surviving chief must fail
    on its own (not hang), and the re-formed group must resume from the shared checkpoint
    and finish within the Job's backoffLimit.
    """
    job_spec = yaml.safe_load(TRAIN_JOB.read_text())["spec"]
    assert job_spec["template"]["spec"]["restartPolicy"] == "OnFailure"
    backoff_limit = job_spec["backoffLimit"]

    config = pods.tiny_config(tmp_path / "tiny.yaml", sample_shards_dir, steps=60)
    job_dir = tmp_path / "job"
    command = pods.trainer_command(sample_shards_dir, job_dir, config)
    ports = pods.free_ports(2)
    logs: list[list[pathlib.Path]] = [[], []]
    exits: list[list[int]] = [[], []]

    def start(index: int) -> subprocess.Popen:
        logs[index].append(tmp_path / f"worker{index}-run{len(logs[index])}.log")
        return pods.start_pod(index, command, ports, logs[index][-1])

    workers = [start(0), start(1)]
    killed_at = chief_failed_at = None
    try:
        deadline = time.monotonic() + RESTART_RUN_TIMEOUT_S
        while not all(exits[i] and exits[i][-1] == 0 for i in range(2)):
            assert time.monotonic() < deadline, f"group did not finish: exits {exits}"
            if killed_at is None and (job_dir / "checkpoints" / "checkpoint").exists():
                assert all(worker.poll() is None for worker in workers), "finished before kill"
                pods.kill(workers[1])
                killed_at = time.monotonic()
            for index, worker in enumerate(workers):
                if worker.poll() is not None and len(exits[index]) < len(logs[index]):
                    exits[index].append(worker.returncode)
                    if index == 0 and len(exits[0]) == 1:
                        chief_failed_at = time.monotonic()
                    if worker.returncode != 0:
                        restarts = sum(code != 0 for codes in exits for code in codes)
                        assert restarts <= backoff_limit, f"backoffLimit exceeded: {exits}"
                        workers[index] = start(index)
            time.sleep(0.1)
    finally:
        for worker in workers:
            pods.kill(worker)

    assert killed_at is not None
    # The chief noticed the lost peer and exited non-zero by itself (it did not hang), so
    # OnFailure restarts it too and the group re-forms.
    assert exits[0][0] != 0 and chief_failed_at is not None, exits
    assert chief_failed_at - killed_at < PEER_LOSS_DETECTION_S
    assert len(exits[1]) >= 2 and exits[1][0] == -signal.SIGKILL, exits
    state = json.loads((job_dir / "training_state.json").read_text())
    assert state["completed"] is True and state["global_step"] == 60
    chief_log = logs[0][-1].read_text()
    assert "Resuming from" in chief_log, chief_log[-3000:]
    assert "2 replicas in sync" in chief_log
