"""Benchmark: training-input images/s, bonify's shard pipeline vs the reference notebook's.

Same images, same machine, same run:
  bonify:    shards -> parse -> decode 1-channel uint8 -> seeded uint8 augmentation -> batch
             (trainer.data.train_dataset_fn, exactly what training uses)
  reference: per-image PNG path -> read -> decode 3 channels -> resize -> float32 [0, 1] ->
             flips, brightness, contrast, saturation, pad + random crop -> batch
The two are measured alternately, --repeats times each, and the best of each is kept, so a
burst of load from another process does not decide the ratio.

Usage (without --data_dir it generates the sample and runs the Beam job at --image_size):
  python benchmarks/input_pipeline.py [--image_size 320] [--patients 120] [--batches 40]
      [--encoding png|jpeg|raw]
  python benchmarks/input_pipeline.py --data_dir OUT --raw_dir DIR_WITH_MURA-v1.1
Prints images/s of both and the ratio (goal >= 3x).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]


def reference_dataset(paths: list[str], image_size: int, batch_size: int):
    """The reference notebook's input pipeline, as tf.data: per-image PNG read, 3-channel
    decode, float resize, the notebook's random augmentations."""
    import tensorflow as tf

    pad = int(round(image_size * 340 / 320))

    def load(path):
        image = tf.io.decode_png(tf.io.read_file(path), channels=3)
        image = tf.image.resize(image, [image_size, image_size]) / 255.0
        image = tf.image.random_flip_left_right(image)
        image = tf.image.random_flip_up_down(image)
        image = tf.image.random_brightness(image, 0.15)
        image = tf.image.random_contrast(image, 0.85, 1.15)
        image = tf.image.random_saturation(image, 0.85, 1.15)
        image = tf.image.resize_with_crop_or_pad(image, pad, pad)
        image = tf.image.random_crop(image, [image_size, image_size, 3])
        return tf.clip_by_value(image, 0.0, 1.0)

    dataset = tf.data.Dataset.from_tensor_slices(paths).shuffle(len(paths)).repeat()
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def images_per_second(iterator, batches: int, batch_size: int) -> float:
    """Images/s over `batches` batches, after a 3-batch warm-up (autotuning, file handles)."""
    for _ in range(3):
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", help="the Beam job's output (default: generate one)")
    parser.add_argument("--raw_dir", help="the folder containing MURA-v1.1/ of --data_dir")
    parser.add_argument("--image_size", type=int, default=320, help="when generating")
    parser.add_argument("--patients", type=int, default=120, help="when generating")
    parser.add_argument(
        "--encoding", default="png", choices=["png", "jpeg", "raw"], help="when generating"
    )
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from bonify.cli import quiet_tensorflow_startup

    quiet_tensorflow_startup()  # BONIFY_TF_LOGS=1 shows TensorFlow's start-up lines
    if bool(args.data_dir) != bool(args.raw_dir):
        parser.error("--data_dir and --raw_dir go together")

    import tensorflow as tf

    from bonify.dataset import read_manifest, split_files
    from trainer.config import load_config
    from trainer.data import train_dataset_fn

    with tempfile.TemporaryDirectory(prefix="bonify-bench-input-") as work:
        raw_dir, data_dir = args.raw_dir, args.data_dir
        if not data_dir:
            from sample_data import sample_and_shards

            raw_dir, data_dir = sample_and_shards(
                pathlib.Path(work), args.patients, args.image_size, args.encoding
            )
        manifest = read_manifest(data_dir)
        size = manifest.image_size
        config = load_config(
            None, [f"data.image_size={size}", f"training.global_batch_size={args.batch_size}"]
        )
        steps = args.batches + 3
        dataset_fn = train_dataset_fn(
            split_files(data_dir, "train"), manifest.encoding, config, 0, 0, 0, steps
        )
        paths = sorted(tf.io.gfile.glob(f"{raw_dir}/MURA-v1.1/train/XR_*/*/*/*.png"))
        pipelines = {
            "bonify": lambda: dataset_fn(tf.distribute.InputContext()).repeat(),
            "reference": lambda: reference_dataset(paths, size, args.batch_size),
        }

        print(
            f"devices: {[d.name for d in tf.config.list_logical_devices()]}; {size} px, "
            f"shards encoded as {manifest.encoding}"
        )
        print(f"train images: shards {manifest.splits['train'].images}, PNGs {len(paths)}")
        rates = {"bonify": [], "reference": []}
        for repeat in range(args.repeats):
            for name, make_dataset in pipelines.items():
                # A fresh iterator per measurement, dropped right after: a live iterator's
                # prefetch threads would keep working while the other pipeline is timed.
                iterator = iter(make_dataset())
                rates[name].append(images_per_second(iterator, args.batches, args.batch_size))
                del iterator
            print(
                f"  repeat {repeat + 1}: bonify {rates['bonify'][-1]:8.1f} images/s, "
                f"reference {rates['reference'][-1]:8.1f} images/s"
            )
        best_ours, best_reference = max(rates["bonify"]), max(rates["reference"])
        print(f"bonify shards (uint8 1-channel, augmented): {best_ours:8.1f} images/s (best)")
        print(f"reference per-PNG float32 3-channel:        {best_reference:8.1f} images/s (best)")
        print(f"ratio: {best_ours / best_reference:.2f}x (goal >= 3x)")


if __name__ == "__main__":
    main()
