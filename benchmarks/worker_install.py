"""Benchmark: what a Dataflow worker pays at start for bonify (issue 12; not a test).

With `--setup_file ./setup.py` the launcher builds this project's sdist and every worker
pip-installs it with its whole pinned stack (TensorFlow included) before it processes an
image. With the worker image (the Dockerfile's `dataflow-worker` stage, passed as
`--sdk_container_image`) all of it is in the image: nothing is installed at start.

Measured here, in one run:

* the sdist build (`python setup.py sdist`, once per submission, on the launcher);
* what a worker does: `pip install SDIST` into a fresh virtualenv with an empty pip cache
  (resolve, fetch, install), in seconds; the MB of the distributions fetched and of what it
  adds to site-packages;
* the same split in two: fetching alone (`pip download`), then installing alone from the
  fetched files into another fresh virtualenv (what a warm cache would leave to do);
* the baseline for a ratio: the job's per-image work as a bare one-process loop on a small
  generated tree (benchmarks/preprocess.bare_loop), run before and after the installs (their
  mean), so the start-up can be set against a worker's share of MURA (about 40,000 images
  over `--workers` one-core workers).

    .venv/bin/python benchmarks/worker_install.py

`--preinstall 'apache-beam[gcp]==2.77.0'` installs that into each virtualenv first (not
timed, own cache) to stand for what the Beam SDK image already holds. pip uses this
machine's configured indexes; run from the repository root on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

#: MURA v1.1's image count (train + valid), rounded.
MURA_IMAGES = 40_000
DEFAULT_WORKERS = 20
MB = 1e6


def folder_bytes(path: pathlib.Path) -> int:
    """Bytes of the files under `path` (links not followed)."""
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def build_sdist(dist: pathlib.Path) -> tuple[pathlib.Path, float]:
    """The sdist Dataflow's --setup_file builds (same command), and its build seconds."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(dist)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - started
    (sdist,) = dist.glob("bonify-*.tar.gz")
    return sdist, seconds


def fresh_venv(root: pathlib.Path, preinstall: list[str], cache: pathlib.Path) -> pathlib.Path:
    """A new virtualenv (with pip) of this interpreter's Python, `preinstall` in it."""
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(root)], check=True)
    python = root / "bin" / "python"
    if preinstall:
        pip(python, ["install", "--cache-dir", str(cache), *preinstall])
    return python


def pip(python: pathlib.Path, args: list[str]) -> None:
    completed = subprocess.run(
        [str(python), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        raise SystemExit(f"pip {' '.join(args)} failed:\n{completed.stderr[-3000:]}")


def site_packages(python: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )


def timed_install(
    work: pathlib.Path, name: str, args: list[str], cache: pathlib.Path, preinstall: list[str]
) -> dict:
    """`pip install ARGS` into a fresh virtualenv with pip cache `cache`: seconds, and MB
    added to site-packages."""
    python = fresh_venv(work / name, preinstall, work / "preinstall-cache")
    packages = site_packages(python)
    before = folder_bytes(packages)
    started = time.perf_counter()
    pip(python, ["install", "--cache-dir", str(cache), *args])
    return {
        "seconds": time.perf_counter() - started,
        "installed_mb": (folder_bytes(packages) - before) / MB,
    }


def timed_download(work: pathlib.Path, sdist: pathlib.Path) -> dict:
    """`pip download` of the sdist's requirements with an empty cache: seconds, MB fetched."""
    wheels = work / "wheels"
    started = time.perf_counter()
    pip(
        pathlib.Path(sys.executable),
        [
            "download",
            "--cache-dir",
            str(work / "download-cache"),
            "--dest",
            str(wheels),
            str(sdist),
        ],
    )
    seconds = time.perf_counter() - started
    fetched = sum(path.stat().st_size for path in wheels.iterdir() if path.name != sdist.name)
    return {"seconds": seconds, "fetched_mb": fetched / MB, "folder": wheels}


def per_core_images_per_s(raw: pathlib.Path, output: pathlib.Path, image_size: int) -> float:
    """The job's per-image work (read, decode, resize, encode, write) in one process."""
    from benchmarks.preprocess import bare_loop

    images, seconds = bare_loop(raw, output, image_size)
    return images / seconds


def print_results(results: dict, workers: int) -> None:
    rate = results["per_core_images_per_s"]
    share = MURA_IMAGES / workers
    work_s = share / rate
    print(f"sdist build (launcher, once per job): {results['sdist_s']:.1f} s")
    print(
        f"{'what a worker does at start':<44} {'seconds':>8} {'fetched MB':>11} {'installed MB':>13}"
    )
    cold, download, local = results["cold"], results["download"], results["local"]
    rows = [
        ("--setup_file: pip install SDIST, empty cache", cold["seconds"], download["fetched_mb"], cold["installed_mb"]),
        ("  of which fetching (pip download alone)", download["seconds"], download["fetched_mb"], 0.0),
        ("  of which installing (from local wheels)", local["seconds"], 0.0, local["installed_mb"]),
        ("--sdk_container_image (the worker image)", 0.0, 0.0, 0.0),
    ]  # fmt: skip
    for name, seconds, fetched, installed in rows:
        print(f"{name:<44} {seconds:>8.1f} {fetched:>11.0f} {installed:>13.0f}")
    print(
        f"a worker's share of MURA: {share:,.0f} images ({MURA_IMAGES:,} / {workers} workers) "
        f"at {rate:.1f} images/s per core (bare loop, mean of before and after) = {work_s:.0f} s of work"
    )
    ratio = cold["seconds"] / work_s
    print(f"ratio --setup_file start-up / that work: {ratio:.2f} (worker image: 0.00)")
    print(json.dumps({**results, "workers": workers, "share_work_s": work_s, "ratio": ratio}))


def main() -> None:
    from bonify.sample import generate_sample

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--preinstall", action="append", default=[])
    parser.add_argument("--loop_patients", type=int, default=30, help="bare loop tree size")
    parser.add_argument("--image_size", type=int, default=320)
    args = parser.parse_args()

    print(f"python {sysconfig.get_python_version()}, load average {os.getloadavg()}")
    work = pathlib.Path(tempfile.mkdtemp(prefix="bonify-worker-install-"))
    try:
        results = {}
        generate_sample(work / "raw", patients=args.loop_patients, seed=0)
        # The loop runs before and after the installs and its mean is the baseline, so that
        # a neighbour's load on a shared machine weighs on both sides of the ratio alike.
        loop_rates = [per_core_images_per_s(work / "raw", work / "loop-before", args.image_size)]
        sdist, results["sdist_s"] = build_sdist(work / "dist")
        # What a worker does: resolve, fetch and install, nothing cached.
        results["cold"] = timed_install(work, "cold", [str(sdist)], work / "cache", args.preinstall)
        # The same split in two: fetching alone, then installing from the fetched files.
        download = timed_download(work, sdist)
        wheels = download.pop("folder")
        results["download"] = download
        local = ["--no-index", "--find-links", str(wheels), str(sdist)]
        results["local"] = timed_install(work, "local", local, work / "cache", args.preinstall)
        loop_rates.append(per_core_images_per_s(work / "raw", work / "loop-after", args.image_size))
        results["loop_images_per_s_before_after"] = loop_rates
        results["per_core_images_per_s"] = sum(loop_rates) / len(loop_rates)
        print(f"load average after {os.getloadavg()}")
        print_results(results, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
