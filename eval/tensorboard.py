"""Evaluation figures and headline scalars as TensorBoard summaries (EVAL/tensorboard/)."""

from __future__ import annotations

import os

#: Scalar tag -> path of the value in metrics.json (dot-separated).
SCALAR_TAGS: dict[str, str] = {
    "eval/top1_accuracy": "top1_accuracy",
    "eval/top3_accuracy": "top3_accuracy",
    "eval/cohen_kappa": "cohen_kappa",
    "eval/f1_macro": "f1_macro",
    "eval/f1_weighted": "f1_weighted",
    "eval/region_accuracy": "region_accuracy",
    "eval/ece": "calibration.ece",
    "eval/study_kappa": "study_level.kappa",
    "eval/study_auroc": "study_level.auroc",
}
TENSORBOARD_DIR = "tensorboard"


def _lookup(metrics: dict, path: str):
    value = metrics
    for key in path.split("."):
        value = value[key]
    return value


def write_tensorboard(output_dir: str, metrics: dict, figures: dict[str, bytes], step: int = 0):
    """Write scalars (tags of SCALAR_TAGS, plus eval/region_accuracy/<REGION>) and every figure
    (tag `figures/<name without .png>`) at `step` under `output_dir`/tensorboard/.
    Undefined (None) metrics are skipped. Returns the log directory."""
    import tensorflow as tf

    log_dir = os.path.join(output_dir, TENSORBOARD_DIR)
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        for tag, path in SCALAR_TAGS.items():
            value = _lookup(metrics, path)
            if value is not None:
                tf.summary.scalar(tag, value, step=step)
        for region, values in metrics["per_region"].items():
            if values["accuracy"] is not None:
                tf.summary.scalar(f"eval/region_accuracy/{region}", values["accuracy"], step=step)
        for name, png in figures.items():
            image = tf.io.decode_png(png, channels=4)[tf.newaxis]
            tf.summary.image(f"figures/{name.removesuffix('.png')}", image, step=step)
    writer.close()
    return log_dir
