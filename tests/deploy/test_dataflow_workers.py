"""Dataflow workers can import the package from the sdist that `setup.py` builds.

`--setup_file ./setup.py` makes Dataflow build this project's sdist and pip-install it on
every worker. The closest offline stand-in: run the Beam job with
`--runner=PortableRunner --environment_type=EXTERNAL` against a local Beam worker pool
whose Python sees the dependencies (Beam, TF, ...) but gets bonify/beam_preprocess only from
that sdist. The dry-run build of the Dataflow job is tested in tests/preprocess/test_runners.py;
the other way to give the workers bonify, the prebuilt worker image, in
tests/deploy/test_dataflow_image.py.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import sysconfig
import time

import pytest

from bonify.vocabulary import MANIFEST_FILE, SPLITS, shard_pattern

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER_POOL_START_TIMEOUT_S = 60
JOB_TIMEOUT_S = 300

# Starts Beam's worker pool bound to loopback only (worker_pool_main binds [::]).
LOOPBACK_WORKER_POOL = """
import sys

import grpc
from apache_beam.runners.worker import worker_pool_main

_make_server = grpc.server


def _loopback_server(*args, **kwargs):
    server = _make_server(*args, **kwargs)
    add_port = server.add_insecure_port
    server.add_insecure_port = lambda address: add_port(address.replace("[::]", "127.0.0.1"))
    return server


worker_pool_main.grpc.server = _loopback_server
worker_pool_main.main(sys.argv)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, "worker pool exited early"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"worker pool did not listen on 127.0.0.1:{port} in {timeout_s} s")


@pytest.fixture(scope="module")
def worker_venv(tmp_path_factory) -> pathlib.Path:
    """A venv that sees this venv's dependencies but not the project.

    A .pth line adds this venv's site-packages as a plain path: its own .pth files (the
    editable install's finder among them) are not processed, so bonify is not importable.
    """
    root = tmp_path_factory.mktemp("worker_venv")
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root / "venv")],
        check=True,
        timeout=120,
    )
    python = root / "venv" / "bin" / "python"
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    pathlib.Path(site_packages, "bonify_deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    return root / "venv"


def worker_env(venv: pathlib.Path) -> dict[str, str]:
    """Env of the worker pool: its venv first on PATH (the pool starts SDK workers as
    `python`), no PYTHONPATH, and a cwd outside the repo (set by the caller)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def imports_project(venv: pathlib.Path, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import beam_preprocess, bonify; print(beam_preprocess.__file__)",
        ],
        cwd=cwd,
        env=worker_env(venv),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_job_on_worker_pool(
    venv: pathlib.Path,
    input_dir: pathlib.Path,
    output_dir: pathlib.Path,
    cwd: pathlib.Path,
    stop_group,
) -> subprocess.CompletedProcess:
    """The Beam job, submitted from the repo, its DoFns run by a worker pool in `venv`
    (stopped afterwards with `stop_group`, the conftest helper)."""
    port = free_port()
    launcher = cwd / "loopback_worker_pool.py"
    launcher.write_text(LOOPBACK_WORKER_POOL)
    pool = subprocess.Popen(
        ["python", str(launcher), f"--service_port={port}"],
        cwd=cwd,
        env=worker_env(venv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, pool, WORKER_POOL_START_TIMEOUT_S)
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "beam_preprocess",
                "--input_dir",
                str(input_dir),
                "--output_dir",
                str(output_dir),
                "--image_size",
                "32",
                "--runner=PortableRunner",
                "--job_endpoint=embed",
                "--environment_type=EXTERNAL",
                f"--environment_config=127.0.0.1:{port}",
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
            check=False,
        )
    finally:
        stop_group(pool, timeout_s=10)


@pytest.mark.slow
def test_workers_import_the_package_only_from_the_sdist(
    worker_venv, sample_dataset_dir, tmp_path, pods
):
    # Negative control: without the sdist the workers cannot import the job's code.
    assert imports_project(worker_venv, tmp_path).returncode != 0
    failed = run_job_on_worker_pool(
        worker_venv, sample_dataset_dir, tmp_path / "no_sdist", tmp_path, pods.stop_group
    )
    assert failed.returncode != 0
    assert "ModuleNotFoundError" in failed.stdout + failed.stderr

    # Build the sdist exactly as Dataflow's --setup_file does, install it into the workers.
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(dist)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (sdist,) = dist.glob("bonify-*.tar.gz")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(worker_venv / "bin" / "python"),
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            str(sdist),
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    found = imports_project(worker_venv, tmp_path)
    assert found.returncode == 0, found.stderr
    assert pathlib.Path(found.stdout.strip()).is_relative_to(worker_venv)

    output_dir = tmp_path / "shards"
    result = run_job_on_worker_pool(
        worker_venv, sample_dataset_dir, output_dir, tmp_path, pods.stop_group
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((output_dir / MANIFEST_FILE).read_text())
    for split in SPLITS:
        assert list(output_dir.glob(shard_pattern(split))), split
