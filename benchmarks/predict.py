"""Benchmark of `bonify-predict` against a bare loop on the same PNG files (not a test).

Measures, in one run, over the same folder of source PNGs and the same saved model:

* predict: `serve.predict.main` as a user runs it (`bonify-predict --model M --output CSV
  FOLDER`: model load, listing, decoding in a thread pool through `bonify.images` overlapped
  with the model, CSV writing);
* bare (the baseline of the ratio): model load, then a plain loop (PIL open -> gray ->
  resize to S x S) over every file, then one `model.predict` over the decoded array.

Goal (issue 9): predict images/s >= 1.0 x bare images/s (decoding overlaps the model).

    .venv/bin/python benchmarks/predict.py [--patients 120] [--image_size 128] [--repeats 3]
    .venv/bin/python benchmarks/predict.py --image_dir FOLDER_OF_PNGS --image_size 320

Without --image_dir a sample tree is generated into a temp folder (its PNGs, long side 512,
are the inputs). The model is a small conv net in the trainer's contract (uint8 [B, S, S, 1]
in, softmax [B, 14] out), untrained: throughput does not depend on the weights. Run from the
repository root.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pathlib
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]


def time_predict(model_file, image_dir, image_size, batch_size, output) -> tuple[int, float]:
    from serve.predict import main as predict_main

    argv = ["--model", str(model_file), "--output", str(output), "--image_size",
            str(image_size), "--resize", "stretch", "--batch_size", str(batch_size),
            str(image_dir)]  # fmt: skip
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if predict_main(argv) != 0:
            raise SystemExit("bonify-predict failed")
    seconds = time.perf_counter() - start
    with open(output) as handle:
        return sum(1 for _ in handle) - 1, seconds


def time_bare(model_file, files, image_size, batch_size) -> tuple[int, float]:
    import keras
    import numpy as np
    from PIL import Image

    start = time.perf_counter()
    model = keras.saving.load_model(model_file)
    images = np.stack(
        [
            np.asarray(Image.open(file).convert("L").resize((image_size, image_size)))
            for file in files
        ]
    )[..., np.newaxis]
    probs = model.predict(images, batch_size=batch_size, verbose=0)
    return len(probs), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_dir", help="a folder of PNGs (else a sample tree is made)")
    parser.add_argument("--patients", type=int, default=120, help="sample size without --image_dir")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--width", type=int, default=16, help="filters of the first conv layer")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (best kept)")
    args = parser.parse_args()
    from bonify.cli import quiet_tensorflow_startup

    quiet_tensorflow_startup()  # BONIFY_TF_LOGS=1 shows TensorFlow's start-up lines

    with tempfile.TemporaryDirectory() as temp:
        work = pathlib.Path(temp)
        if args.image_dir:
            image_dir = pathlib.Path(args.image_dir)
        else:
            from bonify.sample import generate_sample

            generate_sample(work / "raw", patients=args.patients, seed=0)
            image_dir = work / "raw"
        files = sorted(str(path) for path in image_dir.rglob("*.png"))
        model_file = work / "model.keras"
        from sample_data import small_classifier

        small_classifier(args.image_size, args.width).save(model_file)
        methods = {
            "bonify-predict": lambda: time_predict(
                model_file, image_dir, args.image_size, args.batch_size, work / "preds.csv"
            ),
            "bare PIL loop + predict": lambda: time_bare(
                model_file, files, args.image_size, args.batch_size
            ),
        }
        for run in methods.values():  # warm-up: TF start, first traces, file cache
            run()
        from sample_data import best_of_alternating, print_ratio

        results = best_of_alternating(methods, args.repeats)
    print(f"\ncommand: {' '.join([sys.executable, *sys.argv])}")
    print(f"PNG files: {len(files)}, image_size {args.image_size}, batch {args.batch_size}, "
          f"best of {args.repeats}, {os.cpu_count()} CPUs")  # fmt: skip
    print_ratio(results, "bonify-predict", "bare PIL loop + predict", 1.0, "predict")


if __name__ == "__main__":
    main()
