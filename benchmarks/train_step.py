"""Benchmark: images/s of the trainer's train step (not a test). Runs unchanged on a GPU node.

For each precision x XLA combination it measures, with the trainer's own model, optimizer
and `make_train_step` under the chosen strategy:

* compute: steps fed from batches already in memory (no input pipeline);
* end to end: steps fed by the trainer's input pipeline from the shards;
* input wait share = 1 - compute time / end-to-end time (how much of a step waits for data).

On a GPU node (the issue's case):
    python benchmarks/train_step.py --backbone densenet169 --image_size 320 \
        --precision off,float16 --xla off,on --strategy auto
On this repository's 2-core CPU machines (DenseNet169 at 320 px would take many minutes):
    .venv/bin/python benchmarks/train_step.py --backbone densenet121 --image_size 96 \
        --precision off,bfloat16 --xla off --batch_size 16 --steps 10

It prints the devices it ran on; a number is only ever the device's it says.
Without --data_dir it generates the sample and runs the Beam job at --image_size first.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "benchmarks")]


def build(config, strategy, precision: str, xla: bool):
    import keras
    import tensorflow as tf

    from trainer.distribute import set_precision
    from trainer.loop import make_optimizer, make_train_step
    from trainer.model import build_model, set_trainable, trainable_variables

    keras.backend.clear_session()
    set_precision(precision)
    with strategy.scope():
        model = build_model(config)
    set_trainable(model, "all")
    with strategy.scope():
        optimizer = make_optimizer("adam", 1e-4, precision)
        optimizer.build(trainable_variables(model))
    class_weights = tf.ones([14], tf.float32)
    step = make_train_step(
        strategy,
        model,
        optimizer,
        class_weights,
        config["loss"],
        config["training"]["global_batch_size"],
        xla=xla,
    )
    return step


def time_steps(step, iterator, steps: int, warmup: int = 2) -> float:
    """Seconds per step after `warmup` steps (the first traces and compiles)."""
    import tensorflow as tf

    stop = tf.constant(0.0)
    for _ in range(warmup):
        step(iterator, stop)["loss_sum"].numpy()
    started = time.perf_counter()
    for _ in range(steps):
        result = step(iterator, stop)
    result["loss_sum"].numpy()  # wait for the device
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", help="the Beam job's output at --image_size")
    parser.add_argument("--backbone", default="densenet169")
    parser.add_argument("--image_size", type=int, default=320)
    parser.add_argument("--batch_size", type=int, default=32, help="global batch")
    parser.add_argument(
        "--precision", default="off,float16", help="comma list: off,float16,bfloat16"
    )
    parser.add_argument("--xla", default="off,on", help="comma list: off,on")
    parser.add_argument("--strategy", default="auto", help="auto | default | mirrored")
    parser.add_argument("--cpu_logical_devices", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds, best kept")
    parser.add_argument("--patients", type=int, default=120)
    args = parser.parse_args()
    from bonify.cli import quiet_tensorflow_startup

    quiet_tensorflow_startup()  # BONIFY_TF_LOGS=1 shows TensorFlow's start-up lines

    import tensorflow as tf

    from bonify.dataset import read_manifest, split_files
    from trainer.config import load_config
    from trainer.data import train_dataset_fn
    from trainer.distribute import make_strategy, resolve_precision, split_cpu

    split_cpu(args.cpu_logical_devices)
    strategy = make_strategy(args.strategy)
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]

    with tempfile.TemporaryDirectory(prefix="bonify-bench-step-") as work:
        data_dir = args.data_dir
        if not data_dir:
            from sample_data import sample_and_shards

            _, data_dir = sample_and_shards(pathlib.Path(work), args.patients, args.image_size)
        manifest = read_manifest(data_dir)
        config = load_config(
            None,
            [
                f"model.backbone={args.backbone}",
                "model.weights=none",
                f"data.image_size={args.image_size}",
                f"training.global_batch_size={args.batch_size}",
            ],
        )
        files = split_files(data_dir, "train")
        dataset_fn = train_dataset_fn(files, manifest.encoding, config, 0, 0, 0, 10**6)

        print(
            f"train step: {args.backbone} {args.image_size}px, global batch {args.batch_size}, "
            f"strategy {type(strategy).__name__} with {strategy.num_replicas_in_sync} replicas, "
            f"devices {devices}"
        )
        print(
            f"{'precision':>10} {'xla':>4} {'compute img/s':>14} {'end-to-end img/s':>17} {'input wait':>11}"
        )
        for precision_flag in args.precision.split(","):
            precision = resolve_precision(precision_flag)
            for xla_flag in args.xla.split(","):
                xla = xla_flag == "on"
                step = build(config, strategy, precision, xla)
                # Compute only: the same few real batches, cached in memory and repeated.
                cached = dataset_fn(tf.distribute.InputContext()).take(4).cache().repeat()
                in_memory = iter(strategy.experimental_distribute_dataset(cached))
                streamed = iter(strategy.distribute_datasets_from_function(dataset_fn))
                # Taking turns, best of each: the first runs still warm up (oneDNN kernels,
                # allocator), and load from elsewhere hits both the same way.
                compute, end_to_end = float("inf"), float("inf")
                for _ in range(args.rounds):
                    compute = min(compute, time_steps(step, in_memory, args.steps))
                    end_to_end = min(end_to_end, time_steps(step, streamed, args.steps))
                wait = max(0.0, 1.0 - compute / end_to_end)
                print(
                    f"{precision:>10} {xla_flag:>4} {args.batch_size / compute:14.1f} "
                    f"{args.batch_size / end_to_end:17.1f} {wait:10.0%}"
                )


if __name__ == "__main__":
    main()
