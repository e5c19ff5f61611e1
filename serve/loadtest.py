"""A bounded load test of `bonify-serve`, shared by benchmarks/serve.py and the API tests.

`load_test` runs `clients` threads, each POSTing one image's bytes to /predict over its own
keep-alive connection (as an integrator's client would) until `seconds` are over, and counts
answers, errors and latencies. `running_server` starts a real `bonify-serve` on 127.0.0.1 at a
free port (its output to a file), waits for /healthz and stops it by PID at the end.

Run it as its own process, so that the client is not one more thread of the measuring
process (loopback only; it stops by itself):

    python -m serve.loadtest --url http://127.0.0.1:8000 --image a.png [--clients 16]
        [--seconds 30] [--token_file FILE]

prints one JSON line: requests, errors, first_errors, seconds, images_per_s, p50_ms, p95_ms.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class RunningServer:
    url: str
    process: subprocess.Popen
    log: pathlib.Path
    ready_s: float  # seconds from start until /healthz said 200 (model loaded)


@contextlib.contextmanager
def running_server(
    arguments: list[str],
    log: pathlib.Path,
    environment: dict[str, str] | None = None,
    ready_seconds: float = 300,
):
    """`python -m serve.api ARGUMENTS --port P` on 127.0.0.1 until the block ends; output
    (stdout and stderr) to `log`; `environment`: the server's (default: this process's).
    Yields a RunningServer once /healthz is 200. Stopped by its PID (SIGTERM, then SIGKILL
    after 30 s) whatever happens."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    env = {**(os.environ if environment is None else environment), "PYTHONPATH": str(REPO_ROOT)}
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "serve.api", *arguments, "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=env,
        )
    try:
        while not _healthy(url):
            if process.poll() is not None:
                raise RuntimeError(
                    f"bonify-serve exited ({process.returncode}):\n{log.read_text()}"
                )
            if time.monotonic() - started > ready_seconds:
                raise RuntimeError(f"no healthy server after {ready_seconds} s:\n{log.read_text()}")
            time.sleep(0.2)
        yield RunningServer(url, process, log, time.monotonic() - started)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def load_test(
    url: str, data: bytes, name: str, clients: int, seconds: float, token: str | None = None
) -> dict:
    """`clients` threads POSTing `data` (as the raw body, named `name`) to /predict until
    `seconds` are over, each on its own keep-alive connection. Every non-200 answer and
    every exception counts as an error."""
    parsed = urllib.parse.urlsplit(url)
    target = f"/predict?filename={urllib.parse.quote(name)}"
    headers = {"Content-Type": "application/octet-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                connection.request("POST", target, body=data, headers=headers)
                response = connection.getresponse()
                body = response.read()
                ok = response.status == 200 and len(json.loads(body)["images"]) == 1
                problem = None if ok else f"HTTP {response.status}: {body[:200]!r}"
            except Exception as error:  # every failure counts, whatever it is
                problem = repr(error)
                connection.close()
                connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
            with lock:
                if problem is None:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors.append(problem)
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": elapsed,
        "images_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)) if latencies else None,
        "p95_ms": 1000 * float(np.percentile(latencies, 95)) if latencies else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--image", required=True, help="the image every request sends")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--token_file", help="send the token of this file as a bearer token")
    arguments = parser.parse_args(argv)
    image = pathlib.Path(arguments.image)
    token = None
    if arguments.token_file:
        token = pathlib.Path(arguments.token_file).read_text().strip()
    result = load_test(
        arguments.url, image.read_bytes(), image.name, arguments.clients, arguments.seconds, token
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
