"""Benchmark of `bonify-serve` under load against a bare `model.predict` (not a test).

Measures, in one run, with the same model and the same image:

* serve: a real `bonify-serve` on 127.0.0.1 at a free port (its output to a file), loaded by
  `python -m serve.loadtest` in a process of its own: 16 concurrent clients, each on a
  keep-alive connection, POSTing the image's bytes to /predict for 30 s: images/s, p50/p95
  latency, errors (must be 0). Each request is decoded, micro-batched with the concurrent ones
  into the model and answered as JSON. The CPU time the server and the client processes
  spent per answered image is printed too: on a 2-core machine they share the cores;
* bare (the baseline of the ratio): the same image decoded once through `bonify.images`,
  then `model.predict` over as many copies as the server answered, batch size 16;
* information only: the same, decoding every copy from its bytes first (one thread), since
  the server decodes every upload and the bare loop above does not.

Goal (issue 10): serve images/s >= 0.7 x bare images/s.

    .venv/bin/python benchmarks/serve.py [--model demo_output/job] [--image FILE]
        [--clients 16] [--seconds 30]

Without --image the first PNG under demo_output/raw is used. `--backbone densenet121
--image_size 224` serves instead an untrained full bonify model of that backbone (the
trainer's build_model, no weights, no card: served with --image_size/--resize pad), where
the model rather than the image decoding costs most of an answer. The server is stopped by its
PID at the end, whatever happens. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used (Linux /proc)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_process(url: str, image: pathlib.Path, clients: int, seconds: float) -> dict:
    """serve.loadtest in a process of its own; its result plus the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    finished = subprocess.run(
        [sys.executable, "-m", "serve.loadtest", "--url", url, "--image", str(image),
         "--clients", str(clients), "--seconds", str(seconds)],
        capture_output=True, text=True, cwd=REPO_ROOT, check=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    result["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def untrained_model(backbone: str, image_size: int, folder: pathlib.Path) -> str:
    """A .keras file of the trainer's full model with `backbone` (random weights, no card)."""
    from trainer.config import load_config
    from trainer.model import build_model

    config = load_config(
        None, [f"model.backbone={backbone}", "model.weights=none", f"data.image_size={image_size}"]
    )
    path = folder / f"{backbone}_{image_size}.keras"
    build_model(config).save(path)
    return str(path)


def bare_methods(
    model_file: str, data: bytes, name: str, count: int, spec_flags: tuple = ()
) -> dict:
    """name -> () -> (images, seconds): model.predict over `count` copies of the image decoded
    once (batch 16), and the same decoding every copy from its bytes first (one thread)."""
    import keras

    from bonify.images import to_model_input
    from bonify.model_card import input_spec_for

    spec = input_spec_for(model_file, *spec_flags)
    model = keras.saving.load_model(model_file)
    image = to_model_input(data, spec.image_size, spec.resize, filename=name)
    images = np.repeat(image[np.newaxis, ..., np.newaxis], max(count, 16), axis=0)
    model.predict(images[:16], batch_size=16, verbose=0)  # trace once, outside the clock

    def bare():
        started = time.perf_counter()
        model.predict(images, batch_size=16, verbose=0)
        return len(images), time.perf_counter() - started

    def decode_and_predict():
        started = time.perf_counter()
        decoded = np.stack(
            [to_model_input(data, spec.image_size, spec.resize, filename=name) for _ in images]
        )[..., np.newaxis]
        model.predict(decoded, batch_size=16, verbose=0)
        return len(images), time.perf_counter() - started

    return {"bare model.predict": bare, "decode + model.predict (info)": decode_and_predict}


def main() -> None:
    from sample_data import best_of_alternating, print_ratio

    from serve.loadtest import running_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo_output/job")
    parser.add_argument("--image", help="default: the first PNG under demo_output/raw")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max_wait_ms", type=float, default=5.0, help="bonify-serve's flag")
    parser.add_argument("--log", default=None, help="server output file (default: temp)")
    parser.add_argument("--backbone", help="serve an untrained model of this backbone instead")
    parser.add_argument("--image_size", type=int, default=224, help="with --backbone")
    arguments = parser.parse_args()

    from bonify.model_card import resolve_model

    spec_flags: tuple = ()
    if arguments.backbone:
        spec_flags = (arguments.image_size, "pad")
        model_file = untrained_model(
            arguments.backbone, arguments.image_size, pathlib.Path(tempfile.mkdtemp())
        )
    else:
        model_file = resolve_model(arguments.model)
    image = pathlib.Path(
        arguments.image or next(iter(sorted((REPO_ROOT / "demo_output" / "raw").rglob("*.png"))))
    )
    data = image.read_bytes()
    log = pathlib.Path(arguments.log or f"/tmp/bonify_serve_bench_{os.getpid()}.log")
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    server_flags = ["--model", model_file, "--max_wait_ms", str(arguments.max_wait_ms)]
    if spec_flags:
        server_flags += ["--image_size", str(spec_flags[0]), "--resize", spec_flags[1]]
    with running_server(server_flags, log) as server:
        client_process(server.url, image, arguments.clients, 2.0)  # every batch shape traced
        cpu_before = process_cpu_seconds(server.process.pid)
        served = client_process(server.url, image, arguments.clients, arguments.seconds)
        server_cpu_s = process_cpu_seconds(server.process.pid) - cpu_before
    count = max(served["requests"], 64)
    results = {f"serve ({arguments.clients} clients)": (served["requests"], served["seconds"])}
    methods = bare_methods(model_file, data, image.name, count, spec_flags)
    results.update(best_of_alternating(methods, 3))
    print(f"model {model_file}; image {image} ({len(data)} bytes); server log {log}")
    print(f"server ready (model loaded) after {server.ready_s:.1f} s")
    print(
        f"serve: {arguments.clients} clients x {served['seconds']:.1f} s: "
        f"{served['requests']} requests, {served['errors']} errors, "
        f"{served['images_per_s']:.1f} images/s, p50 {served['p50_ms']:.0f} ms, "
        f"p95 {served['p95_ms']:.0f} ms"
    )
    if served["errors"]:
        print(f"  first errors: {served['first_errors']}")
    answered = max(served["requests"], 1)
    print(
        f"CPU per answered image: server {1000 * server_cpu_s / answered:.2f} ms, "
        f"client {1000 * served['cpu_s'] / answered:.2f} ms "
        f"(of {1000 * os.cpu_count() / max(served['images_per_s'], 1e-9):.2f} core-ms "
        "available per image at this rate)"
    )
    print_ratio(results, next(iter(results)), "bare model.predict", 0.7, "serve")


if __name__ == "__main__":
    main()
