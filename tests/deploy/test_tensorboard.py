"""TensorBoard serves a trainer run's logs: `tensorboard --logdir JOB/tensorboard --host 127.0.0.1`
(what `make tensorboard JOB=...` runs), checked over HTTP against the event files themselves."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def scalar_tags_in_event_files(log_dir: Path) -> dict[str, set[str]]:
    """run -> scalar tags, read from the event files (TF2 summaries are tensors). The run
    in log_dir itself is named "." (as TensorBoard names it)."""
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

    tags = {}
    run_dirs = [log_dir, *sorted(path for path in log_dir.iterdir() if path.is_dir())]
    for run_dir in run_dirs:
        if not any(run_dir.glob("events.out.tfevents.*")):
            continue
        accumulator = EventAccumulator(str(run_dir), size_guidance={TENSORS: 0})
        accumulator.Reload()
        scalars = {
            tag
            for tag in accumulator.Tags()["tensors"]
            if accumulator.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
        }
        if scalars:
            tags["." if run_dir == log_dir else run_dir.name] = scalars
    return tags


@pytest.fixture
def tensorboard_url(multiworker_run, pods, tmp_path):
    """A TensorBoard on a free loopback port over the trainer run's logs; stopped by PID."""
    assert multiworker_run.exit_codes[0] == 0  # the chief writes the logs
    port = free_port()
    tensorboard = Path(sys.executable).parent / "tensorboard"
    log_dir = multiworker_run.job_dir / "tensorboard"
    server = subprocess.Popen(
        [str(tensorboard), "--logdir", str(log_dir), "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert server.poll() is None, "tensorboard exited"
            try:
                get_json(f"{url}/data/plugins_listing")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, (
                    f"tensorboard did not answer in {START_TIMEOUT_S} s"
                )
                time.sleep(0.5)
        yield url
    finally:
        pods.stop_group(server)


@pytest.mark.slow
def test_tensorboard_serves_the_runs_scalar_tags(tensorboard_url, multiworker_run):
    plugins = get_json(f"{tensorboard_url}/data/plugins_listing")
    assert plugins["scalars"]["enabled"] is True

    expected = scalar_tags_in_event_files(multiworker_run.job_dir / "tensorboard")
    assert {"train/loss", "validation/accuracy", "phase/learning_rate"} <= expected.get(".", set())
    served = get_json(f"{tensorboard_url}/data/plugin/scalars/tags")
    assert {run: set(tags) for run, tags in served.items()} == expected

    # The values themselves are served too: one point per logged step.
    points = get_json(f"{tensorboard_url}/data/plugin/scalars/scalars?run=.&tag=train%2Floss")
    assert points and all(len(point) == 3 for point in points)  # [wall_time, step, value]
