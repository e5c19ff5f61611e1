"""TensorBoard summaries under JOB/tensorboard/{train,validation}, written by the chief only.

Tags: loss, accuracy, top3_accuracy (train and validation), learning_rate, phase,
images_per_second (train), input_images (train), and the hparams of the run.
Steps are the global step, continuing across phases.
"""

from __future__ import annotations

import tensorflow as tf

from trainer.checkpoint import join


class Summaries:
    """Writers for the chief; every method is a no-op on other workers."""

    def __init__(self, job_dir: str, chief: bool):
        self.enabled = chief
        if chief:
            root = join(job_dir, "tensorboard")
            self.train = tf.summary.create_file_writer(join(root, "train"))
            self.validation = tf.summary.create_file_writer(join(root, "validation"))

    def scalars(self, which: str, values: dict[str, float], step: int) -> None:
        """Write scalars to the train or validation writer."""
        if not self.enabled:
            return
        writer = self.train if which == "train" else self.validation
        with writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        writer.flush()

    def images(self, images, step: int, max_outputs: int) -> None:
        """A few uint8 [n, S, S, 1] input images (after augmentation)."""
        if not self.enabled or max_outputs <= 0:
            return
        with self.train.as_default(step=step):
            tf.summary.image("input_images", images, max_outputs=max_outputs)
        self.train.flush()

    def hparams(self, config: dict) -> None:
        """Record the run's main hyperparameters (TensorBoard HParams plugin)."""
        if not self.enabled:
            return
        from tensorboard.plugins.hparams import api as hp

        values = {
            "backbone": config["model"]["backbone"],
            "image_size": config["data"]["image_size"],
            "global_batch_size": config["training"]["global_batch_size"],
            "focal_gamma": config["loss"]["focal_gamma"],
            "focal_alpha": config["loss"]["focal_alpha"],
            "phases": len(config["phases"]),
            "mixed_precision": str(config["distribute"]["mixed_precision"]),
        }
        with self.train.as_default():
            hp.hparams(values)
        self.train.flush()
