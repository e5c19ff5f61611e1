"""Benchmark inputs: the synthetic MURA sample and its shards, made with the real tools."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable


def sample_and_shards(
    work: pathlib.Path, patients: int, image_size: int, encoding: str = "png"
) -> tuple[str, str]:
    """Generate the sample under `work/raw` and run the Beam job into `work/shards`.

    Returns (folder containing MURA-v1.1/, shards folder).
    """
    from beam_preprocess.__main__ import main as preprocess
    from bonify.sample import generate_sample

    raw, shards = work / "raw", work / "shards"
    generate_sample(raw, patients=patients, seed=0)
    argv = ["--input_dir", str(raw), "--output_dir", str(shards), "--image_size", str(image_size)]
    if preprocess([*argv, "--encoding", encoding, "--overwrite"]) != 0:
        raise SystemExit("preprocessing the benchmark sample failed")
    return str(raw), str(shards)


def best_of_alternating(
    methods: dict[str, Callable[[], tuple[int, float]]], repeats: int
) -> dict[str, tuple[int, float]]:
    """Run each method (returning (images, seconds)) `repeats` times, alternating within each
    repeat so that a busy neighbour on a shared machine slows all of them alike; returns
    name -> (images, best seconds)."""
    timings = {name: [] for name in methods}
    for _ in range(repeats):
        for name, run in methods.items():
            timings[name].append(run())
    return {
        name: (runs[0][0], min(seconds for _, seconds in runs)) for name, runs in timings.items()
    }


def small_classifier(image_size: int, width: int):
    """A 3-block conv net taking uint8 [S, S, 1] images to 14 softmax probabilities: enough
    model for benchmarks whose subject is the data path around it."""
    import keras

    inputs = keras.Input((image_size, image_size, 1), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    for filters in (width, width * 2, width * 4):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(14, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def print_ratio(
    results: dict[str, tuple[int, float]], subject: str, baseline: str, goal: float, key: str
) -> None:
    """Print the methods' images/s, then subject / baseline against `goal`, then one JSON line
    ({key}_images_per_s, bare_images_per_s, ratio) for scripts that collect results."""
    width = max(len(name) for name in results) + 2
    print(f"{'method':<{width}} {'images':>7} {'seconds':>8} {'images/s':>9}")
    for name, (count, seconds) in results.items():
        print(f"{name:<{width}} {count:>7} {seconds:>8.2f} {count / seconds:>9.1f}")
    rate = {name: count / seconds for name, (count, seconds) in results.items()}
    ratio = rate[subject] / rate[baseline]
    verdict = "met" if ratio >= goal else "NOT met"
    print(f"ratio {key} / bare: {ratio:.3f} (goal >= {goal}: {verdict})")
    print(json.dumps({f"{key}_images_per_s": rate[subject], "bare_images_per_s": rate[baseline],
                      "ratio": ratio}))  # fmt: skip
