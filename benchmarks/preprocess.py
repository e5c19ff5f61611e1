"""Benchmark of the Beam preprocessing job (not a test).

Measures, in one run and on the same generated images:

* a bare single-process Python loop doing the job's per-image work (read, decode, resize,
  encode, serialize, TFRecordWriter) - the baseline;
* the Beam job (`python -m beam_preprocess`, a subprocess) on the default FnApiRunner
  (1 process) and on FnApiRunner multi-processing with 2 workers, in images/s per core;
* the job's peak RSS (sum over its process tree, sampled with psutil) at N and 10xN images.

Goals (issue 2): Beam images/s per core >= 0.9 x the loop; peak RSS(10N) <= 1.2 x RSS(N).

    .venv/bin/python benchmarks/preprocess.py [--patients 80] [--multiplier 10] [--image_size 320]

The 10xN tree is the N tree's images hard-linked under 10 sets of new patient ids, so both
trees hold the same kind of images. Run from the repository root.
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
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
    import tensorflow as tf

    from beam_preprocess.index import index_mura
    from beam_preprocess.pipeline import read_bytes, read_csv_texts
    from beam_preprocess.records import record_values, serialize_record
    from beam_preprocess.transform import process_image

    started = time.perf_counter()
    mura = str(root / "MURA-v1.1")
    entries = index_mura(read_csv_texts(mura)).entries
    written = 0
    with tf.io.TFRecordWriter(str(output)) as writer:
        for entry in entries:
            image = process_image(
                read_bytes(f"{mura}/{entry.relative_file}"), image_size, "pad", "png"
            )
            writer.write(serialize_record(record_values(entry, image, "png")))
            written += 1
    return written, time.perf_counter() - started


def run_job(
    root: pathlib.Path, out: pathlib.Path, image_size: int, runner_flags: list[str]
) -> dict:
    """Run the Beam job as a subprocess; returns wall time, peak RSS of its process tree,
    and the manifest."""
    import psutil

    command = [
        sys.executable, "-m", "beam_preprocess", "--input_dir", str(root), "--output_dir", str(out),
        "--image_size", str(image_size), "--overwrite", *runner_flags,
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
    return {
        "wall": wall,
        "job_time": manifest["wall_time_seconds"],
        "peak_rss": peak,
        "manifest": manifest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=80, help="patients of the base (N) sample")
    parser.add_argument(
        "--multiplier", type=int, default=10, help="the big tree has this many times N"
    )
    parser.add_argument("--image_size", type=int, default=320)
    parser.add_argument(
        "--work_dir", default=None, help="default: a temporary folder, removed at the end"
    )
    args = parser.parse_args()

    from beam_preprocess.sample import generate_sample

    work = pathlib.Path(args.work_dir or tempfile.mkdtemp(prefix="bonify_bench_"))
    small, big = work / "small", work / "big"
    print(f"generating {args.patients} patients in {small} ...", flush=True)
    generate_sample(small, patients=args.patients, seed=0)
    replicate_tree(small, big, args.multiplier)
    multi = [
        "--runner=FnApiRunner",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    ]

    print("bare loop ...", flush=True)
    loop_images, loop_seconds = bare_loop(big, work / "loop.tfrecord", args.image_size)
    print("Beam job, FnApiRunner (1 process), N and kN ...", flush=True)
    single_small = run_job(small, work / "out_single_small", args.image_size, [])
    single_big = run_job(big, work / "out_single_big", args.image_size, [])
    print("Beam job, FnApiRunner multi_processing (2 workers), N and kN ...", flush=True)
    multi_small = run_job(small, work / "out_multi_small", args.image_size, multi)
    multi_big = run_job(big, work / "out_multi_big", args.image_size, multi)

    n_small = single_small["manifest"]["written"]
    n_big = single_big["manifest"]["written"]
    assert n_big == loop_images == multi_big["manifest"]["written"], (
        "runs wrote different image counts"
    )
    loop_rate = loop_images / loop_seconds

    def row(name, result, cores):
        images = result["manifest"]["written"]
        per_core_job = images / result["job_time"] / cores
        per_core_wall = images / result["wall"] / cores
        return (
            f"{name:<34}{images:>7}{result['wall']:>9.1f}{result['job_time']:>9.1f}"
            f"{per_core_job:>10.1f}{per_core_job / loop_rate:>8.2f}{per_core_wall / loop_rate:>9.2f}"
            f"{result['peak_rss'] / 2**20:>10.0f}"
        )

    print()
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(
        f"images: N = {n_small}, {args.multiplier}N = {n_big}; image_size {args.image_size}, png, pad; cores: {os.cpu_count()}"
    )
    print(f"load average before/after: see `uptime`; now {os.getloadavg()}")
    print()
    header = f"{'run':<34}{'images':>7}{'wall s':>9}{'job s':>9}{'img/s/c':>10}{'ratio':>8}{'ratio_w':>9}{'peak MiB':>10}"
    print(header)
    print("-" * len(header))
    print(
        f"{'bare loop (1 process)':<34}{loop_images:>7}{loop_seconds:>9.1f}{loop_seconds:>9.1f}{loop_rate:>10.1f}{1:>8.2f}{1:>9.2f}{'':>10}"
    )
    print(row("beam FnApiRunner 1 proc, N", single_small, 1))
    big = f"{args.multiplier}N"
    print(row(f"beam FnApiRunner 1 proc, {big}", single_big, 1))
    print(row("beam FnApiRunner 2 workers, N", multi_small, 2))
    print(row(f"beam FnApiRunner 2 workers, {big}", multi_big, 2))
    print()
    print("img/s/c: images / job time / cores; job time = the job's own wall time (manifest")
    print("wall_time_seconds: indexing, pipeline, metadata; excludes interpreter + imports).")
    print("ratio = img/s/c / bare loop img/s; ratio_w uses the subprocess wall time instead.")
    print()
    print("steady state (start-up cost cancelled): (images kN - N) / (job time kN - N) / cores")
    for name, small_run, big_run, cores in (
        ("1 proc", single_small, single_big, 1),
        ("2 workers", multi_small, multi_big, 2),
    ):
        seconds = big_run["job_time"] - small_run["job_time"]
        marginal = (n_big - n_small) / seconds / cores
        fixed = small_run["job_time"] - n_small / (marginal * cores)
        print(
            f"  {name:<10} {marginal:6.1f} img/s/core = {marginal / loop_rate:.2f} x loop; "
            f"fixed start-up cost about {fixed:.1f} s per job"
        )
    print()
    for name, small_run, big_run in (
        ("1 proc", single_small, single_big),
        ("2 workers", multi_small, multi_big),
    ):
        growth = big_run["peak_rss"] / small_run["peak_rss"]
        print(
            f"peak RSS growth {name}: {growth:.2f}x for {n_big / n_small:.0f}x the images (goal <= 1.2x)"
        )
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
