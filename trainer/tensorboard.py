"""TensorBoard summaries in JOB/tensorboard, written by the chief only.

Tags, grouped by prefix (the x axis is the global step, continuing across phases):
  train/loss, train/accuracy, train/top3_accuracy, train/images_per_second   every
      `training.log_every_steps` steps (the step's batch)
  epoch/loss, epoch/accuracy, epoch/top3_accuracy   the epoch's training means
  validation/loss, validation/accuracy, validation/top3_accuracy   after every epoch
  validation/study_kappa, validation/study_auroc   after every epoch where defined (MURA's
      study-level abnormality call at 0.5, see trainer.run.study_metrics)
  phase/learning_rate, phase/index (1-based)   after every epoch
  best/validation_<metric> and best/phase<N>_validation_<metric> for accuracy, loss and
      study_kappa   at each phase end: the HParams plugin's metrics
  input_images/<class name>   a few (augmented) input images at each phase start
and the run's hparams (the whole recipe, see `recipe_hparams`).
"""

from __future__ import annotations

import re
from typing import Any

import tensorflow as tf

from trainer.checkpoint import join

#: The validation metrics whose best values are compared across runs, and whether larger
#: is better.
BEST_METRICS = {"accuracy": True, "loss": False, "study_kappa": True}


def best_metric_tags(phase_count: int) -> list[str]:
    """The tags the HParams plugin compares runs by (written by `Summaries.best_metrics`)."""
    tags = [f"best/validation_{metric}" for metric in BEST_METRICS]
    for number in range(1, phase_count + 1):
        tags += [f"best/phase{number}_validation_{metric}" for metric in BEST_METRICS]
    return tags


def recipe_hparams(config: dict, run: dict[str, Any]) -> dict[str, Any]:
    """The hparams of a run: the config's recipe plus `run` (what only the running trainer
    knows: the manifest's resize mode and encoding, resolved precision, strategy, replicas).
    Values are str, bool, int or float, as the HParams plugin requires."""
    values: dict[str, Any] = {
        "backbone": config["model"]["backbone"],
        "weights": config["model"]["weights"],
        "head_units": str(config["model"]["head_units"]),
        "image_size": config["data"]["image_size"],
        "augment": config["data"]["augment"]["enabled"],
        "global_batch_size": config["training"]["global_batch_size"],
        "seed": config["training"]["seed"],
        "focal_gamma": config["loss"]["focal_gamma"],
        "focal_alpha": config["loss"]["focal_alpha"],
        "phases": len(config["phases"]),
        "xla": config["distribute"]["xla"],
    }
    for number, phase in enumerate(config["phases"], start=1):
        values.update(
            {
                f"phase{number}_name": phase["name"],
                f"phase{number}_trainable": str(phase["trainable"]),
                f"phase{number}_optimizer": phase["optimizer"],
                f"phase{number}_learning_rate": float(phase["learning_rate"]),
                f"phase{number}_epochs": phase["epochs"],
                f"phase{number}_class_weights": phase["class_weights"],
            }
        )
    values.update(run)
    return values


class Summaries:
    """One writer for the chief; every method is a no-op on other workers."""

    def __init__(self, job_dir: str, chief: bool):
        self.enabled = chief
        if chief:
            self.writer = tf.summary.create_file_writer(join(job_dir, "tensorboard"))

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Write scalars; each name is a full tag ("train/loss")."""
        if not self.enabled:
            return
        with self.writer.as_default(step=step):
            for tag, value in values.items():
                tf.summary.scalar(tag, value)
        self.writer.flush()

    def images(self, images, labels, class_names: list[str], step: int, max_outputs: int) -> None:
        """Up to `max_outputs` uint8 [n, S, S, 1] input images (after augmentation), one image
        summary per class so each picture is captioned with its class."""
        if not self.enabled or max_outputs <= 0:
            return
        images, labels = images[:max_outputs], [int(label) for label in labels[:max_outputs]]
        with self.writer.as_default(step=step):
            for label in sorted(set(labels)):
                chosen = tf.gather(images, [i for i, got in enumerate(labels) if got == label])
                name = class_names[label]
                tf.summary.image(
                    f"input_images/{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}",
                    chosen,
                    max_outputs=max_outputs,
                    description=f"Training input images (augmented) of class {name}",
                )
        self.writer.flush()

    def hparams(self, values: dict[str, Any], phase_count: int) -> None:
        """Record the run's recipe (TensorBoard HParams plugin), compared by the best
        validation metrics per phase and overall (`best_metrics`)."""
        if not self.enabled:
            return
        from tensorboard.plugins.hparams import api as hp

        metrics = [hp.Metric(tag) for tag in best_metric_tags(phase_count)]
        with self.writer.as_default():
            hp.hparams_config(hparams=[hp.HParam(name) for name in values], metrics=metrics)
            hp.hparams(values)
        self.writer.flush()

    def best_metrics(self, phase_rows: list[dict], step: int) -> None:
        """The best validation accuracy, loss and study kappa of each phase so far and over
        all of them (phase state dicts, see trainer.phases); None values (no epoch yet, or
        never defined) are skipped."""
        values = {}
        for metric, larger_is_better in BEST_METRICS.items():
            bests = []
            for number, row in enumerate(phase_rows, start=1):
                best = row.get(f"best_val_{metric}")
                if best is not None:
                    values[f"best/phase{number}_validation_{metric}"] = best
                    bests.append(best)
            if bests:
                values[f"best/validation_{metric}"] = (max if larger_is_better else min)(bests)
        self.scalars(values, step)
