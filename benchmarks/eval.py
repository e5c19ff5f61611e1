"""Benchmark of the evaluator's in-process inference path (not a test).

Measures, in one run, over the same shards (one split, default train) and the same model:

* evaluator: `eval.predict.iterate_predictions` (tf.data: parallel read, parse, decode to
  uint8, batch, prefetch; the model in a tf.function under the distribution strategy);
* bare: `model.predict` on the simplest input pipeline (TFRecordDataset -> parse + decode,
  no parallelism options -> batch) - the baseline of the ratio;
* ceiling (information only): `model.predict` on images already decoded into memory.

Goal (issue 4): evaluator images/s >= 0.9 x bare images/s.

    .venv/bin/python benchmarks/eval.py [--patients 600] [--image_size 128] [--repeats 3]
    .venv/bin/python benchmarks/eval.py --data_dir OUT --split test  # existing shards

Without --data_dir a sample tree is generated and preprocessed into a temp folder. The model
is a small conv net in the trainer's contract (uint8 [B, S, S, 1] in, softmax [B, 14] out),
untrained: throughput does not depend on the weights. Run from the repository root.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]


def make_shards(work: pathlib.Path, patients: int, image_size: int) -> pathlib.Path:
    from beam_preprocess.__main__ import main as preprocess_main
    from bonify.sample import generate_sample

    generate_sample(work / "raw", patients=patients, seed=0)
    out = work / "shards"
    argv = ["--input_dir", str(work / "raw"), "--output_dir", str(out),
            "--image_size", str(image_size), "--runner=FnApiRunner"]  # fmt: skip
    if preprocess_main(argv) != 0:
        raise SystemExit("preprocessing failed")
    return out


def time_evaluator(model, files, encoding, image_size, batch_size) -> tuple[int, float]:
    from eval.predict import iterate_predictions

    start, count = time.perf_counter(), 0
    for probs, _ in iterate_predictions(model, files, encoding, image_size, batch_size, verbose=0):
        count += len(probs)
    return count, time.perf_counter() - start


def simple_dataset(files, encoding, image_size, batch_size):
    import tensorflow as tf

    from bonify.dataset import parse_and_decode

    def decode(record):
        return parse_and_decode(record, encoding, image_size)[0]

    return tf.data.TFRecordDataset(files).map(decode).batch(batch_size)


def time_bare(model, files, encoding, image_size, batch_size) -> tuple[int, float]:
    start = time.perf_counter()
    probs = model.predict(simple_dataset(files, encoding, image_size, batch_size), verbose=0)
    return len(probs), time.perf_counter() - start


def time_ceiling(model, images, batch_size) -> tuple[int, float]:
    start = time.perf_counter()
    probs = model.predict(images, batch_size=batch_size, verbose=0)
    return len(probs), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", help="existing Beam job output (else a sample is made)")
    parser.add_argument("--patients", type=int, default=600)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--width", type=int, default=16, help="filters of the first conv layer")
    parser.add_argument(
        "--split", default="train", help="split to run over (default train: the largest)"
    )
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (best kept)")
    args = parser.parse_args()
    from bonify.cli import quiet_tensorflow_startup

    quiet_tensorflow_startup()  # BONIFY_TF_LOGS=1 shows TensorFlow's start-up lines

    import numpy as np

    from bonify.dataset import read_manifest
    from eval.predict import split_shards

    with tempfile.TemporaryDirectory() as temp:
        data_dir = pathlib.Path(args.data_dir or make_shards(pathlib.Path(temp), args.patients,
                                                             args.image_size))  # fmt: skip
        manifest = read_manifest(str(data_dir))
        files = split_shards(str(data_dir), args.split, manifest)
        image_size, encoding = manifest.image_size, manifest.encoding
        from sample_data import small_classifier

        model = small_classifier(image_size, args.width)
        decoded = simple_dataset(files, encoding, image_size, 256).as_numpy_iterator()
        images = np.concatenate(list(decoded))
        # Warm-up: trace functions and fill caches before any timing.
        time_evaluator(model, files, encoding, image_size, args.batch_size)
        time_bare(model, files, encoding, image_size, args.batch_size)
        methods = {
            "evaluator": lambda: time_evaluator(
                model, files, encoding, image_size, args.batch_size
            ),
            "bare model.predict": lambda: time_bare(
                model, files, encoding, image_size, args.batch_size
            ),
            "predict on decoded arrays": lambda: time_ceiling(model, images, args.batch_size),
        }
        from sample_data import best_of_alternating, print_ratio

        results = best_of_alternating(methods, args.repeats)
    print(f"\ncommand: {' '.join([sys.executable, *sys.argv])}")
    print(f"{args.split} images: {len(images)}, image_size {image_size}, batch {args.batch_size}, "
          f"best of {args.repeats}, {os.cpu_count()} CPUs")  # fmt: skip
    print_ratio(results, "evaluator", "bare model.predict", 0.9, "evaluator")


if __name__ == "__main__":
    main()
