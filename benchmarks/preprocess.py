"""Benchmark of the Beam preprocessing job's local default run (not a test).

Measures, in one run and on the same images:

* the baseline: a bare single-process Python loop doing the job's per-image work (read,
  decode, resize, encode, serialize, write a TFRecord), in images/s;
* the Beam job as a user runs it, `bonify-preprocess --input_dir ... --output_dir ...` with
  NO runner flags (a subprocess, timed end to end: interpreter start, imports, indexing,
  pipeline, metadata), which runs one worker process per core;
* the job's peak RSS (sum over its process tree, sampled with psutil), on the big tree and
  on the 1/multiplier-sized tree it was replicated from: memory must not grow with the data.

Goal (issue 8): job images/s >= 0.9 x (cores x the loop's images/s), on a MURA-sized tree
(about 40,000 PNGs with a 512 px long side, written at 320 px); peak RSS flat.

    # MURA size (the defaults: 240 patients x 51 = about 39,800 images):
    .venv/bin/python benchmarks/preprocess.py
    # a quick check of the script itself:
    .venv/bin/python benchmarks/preprocess.py --patients 20 --multiplier 3

The big tree is the base tree's images hard-linked under `multiplier` sets of new patient
ids, so generating it is cheap and both trees hold the same kind of images. Run it on an
otherwise idle machine (other work on the cores lowers the job's figure, not the loop's).
Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

#: 240 patients of bonify-sample hold about 780 images; x51 is about MURA's 40,000.
DEFAULT_PATIENTS = 240
DEFAULT_MULTIPLIER = 51


def replicate_tree(source_root: pathlib.Path, target_root: pathlib.Path, copies: int) -> None:
    """target_root/MURA-v1.1 = `copies` copies of source's images (hard links), each under
    new patient ids (copy k prefixes the id with k), with matching CSVs."""
    source, target = source_root / "MURA-v1.1", target_root / "MURA-v1.1"
    target.mkdir(parents=True)
    for csv in sorted(source.glob("*.csv")):
        out_lines = []
        for copy in range(copies):
            for line in csv.read_text().splitlines():
                if not line.strip():
                    continue
                new = line.replace("/patient", f"/patient{copy}", 1)
                out_lines.append(new)
                if csv.name.endswith("_image_paths.csv"):
                    destination = target_root / new
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    os.link(source_root / line, destination)
        (target / csv.name).write_text("\n".join(out_lines) + "\n")


def bare_loop(root: pathlib.Path, output: pathlib.Path, image_size: int) -> tuple[int, float]:
    """The job's per-image work in a plain loop, one process. Returns (images, seconds)."""
    from beam_preprocess.index import index_mura
    from beam_preprocess.pipeline import read_bytes, read_csv_texts
    from beam_preprocess.records import record_values, serialize_record, shard_writer_factory
    from beam_preprocess.transform import process_image

    started = time.perf_counter()
    mura = str(root / "MURA-v1.1")
    entries = index_mura(read_csv_texts(mura)).entries
    written = 0
    with shard_writer_factory()(str(output)) as writer:
        for entry in entries:
            image = process_image(
                read_bytes(f"{mura}/{entry.relative_file}"), image_size, "pad", "png"
            )
            writer.write(serialize_record(record_values(entry, image, "png")))
            written += 1
    return written, time.perf_counter() - started


def run_job(root: pathlib.Path, out: pathlib.Path, image_size: int) -> dict:
    """Run the Beam job as a user does (no runner flags) in a subprocess; returns its wall
    time, the peak RSS of its process tree, its console output and the manifest."""
    import psutil

    command = [
        sys.executable, "-m", "beam_preprocess", "--input_dir", str(root), "--output_dir", str(out),
        "--image_size", str(image_size), "--overwrite",
    ]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    watched = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [watched, *watched.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - started
    output = process.stdout.read()
    if process.returncode != 0:
        raise SystemExit(f"job failed ({' '.join(command)}):\n{output[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"wall": wall, "peak_rss": peak, "output": output, "manifest": manifest}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--patients",
        type=int,
        default=DEFAULT_PATIENTS,
        help=f"patients of the base sample (default {DEFAULT_PATIENTS}, about 780 images)",
    )
    parser.add_argument(
        "--multiplier",
        type=int,
        default=DEFAULT_MULTIPLIER,
        help=f"the big tree has this many copies of the base (default {DEFAULT_MULTIPLIER})",
    )
    parser.add_argument("--image_size", type=int, default=320)
    parser.add_argument(
        "--work_dir", default=None, help="default: a temporary folder, removed at the end"
    )
    args = parser.parse_args()

    from bonify.sample import generate_sample

    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="bonify_bench_"))
    small, big = work / "small", work / "big"
    print(f"generating {args.patients} patients in {small} ...", flush=True)
    generate_sample(small, patients=args.patients, seed=0)
    replicate_tree(small, big, args.multiplier)

    print("bare loop (1 process) on the big tree ...", flush=True)
    loop_images, loop_seconds = bare_loop(big, work / "loop.tfrecord", args.image_size)
    print("Beam job, default local run (no runner flags), big tree ...", flush=True)
    big_run = run_job(big, work / "out_big", args.image_size)
    print("Beam job, default local run, base tree (for the memory comparison) ...", flush=True)
    small_run = run_job(small, work / "out_small", args.image_size)

    images = big_run["manifest"]["written"]
    if images != loop_images:
        raise SystemExit(f"the job wrote {images} images, the loop {loop_images}")
    loop_rate = loop_images / loop_seconds
    job_rate = images / big_run["wall"]
    ratio = job_rate / (cores * loop_rate)
    growth = big_run["peak_rss"] / small_run["peak_rss"]
    runner_line = next(
        (line for line in big_run["output"].splitlines() if "running the Beam pipeline" in line),
        "",
    )

    print()
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(
        f"images: {images} ({args.patients} patients x {args.multiplier}), long side 512 px -> "
        f"{args.image_size} px png, pad; cores (os.cpu_count): {cores}"
    )
    print(f"job: {runner_line.split('] ', 1)[-1]}")
    print(f"load average before: {load_before[0]:.2f}, after: {os.getloadavg()[0]:.2f}")
    print()
    print(
        f"bare loop, 1 process:      {loop_images:>7} images {loop_seconds:>8.1f} s {loop_rate:>8.1f} img/s"
    )
    print(f"cores x bare loop:         {'':>7}        {'':>8}   {cores * loop_rate:>8.1f} img/s")
    print(
        f"beam job, end to end:      {images:>7} images {big_run['wall']:>8.1f} s {job_rate:>8.1f} img/s"
        f"   (job's own time {big_run['manifest']['wall_time_seconds']:.1f} s)"
    )
    print()
    print(f"ratio job / (cores x loop): {ratio:.2f}   (goal >= 0.9)")
    print(
        f"peak RSS of the job's process tree: {big_run['peak_rss'] / 2**20:.0f} MiB for {images} images, "
        f"{small_run['peak_rss'] / 2**20:.0f} MiB for {small_run['manifest']['written']} "
        f"(growth {growth:.2f}x for {args.multiplier}x the images; goal <= 1.2x)"
    )
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
