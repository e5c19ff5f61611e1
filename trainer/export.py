"""Model files: JOB/model/*.keras and the serving SavedModel under JOB/export/."""

from __future__ import annotations

import os
import tempfile

import keras
import tensorflow as tf

from trainer.checkpoint import copy_atomically


def save_keras(model: keras.Model, path: str) -> None:
    """Save a .keras file (written locally, then copied: works for gs:// too)."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tempfile.TemporaryDirectory() as temp:
        local = os.path.join(temp, os.path.basename(path))
        model.save(local)
        copy_atomically(local, path)


def export_saved_model(keras_path: str, export_dir: str, image_size: int) -> None:
    """A SavedModel whose `serving_default` takes encoded PNG/JPEG bytes.

    Signature: images: tf.string [batch] (PNG or JPEG, any size; decoded to 1 channel and
    resized to image_size) -> probabilities: float32 [batch, 14] in CLASS_NAMES order.
    """
    with tempfile.TemporaryDirectory() as temp:
        local = os.path.join(temp, "model.keras")
        tf.io.gfile.copy(keras_path, local, overwrite=True)
        model = keras.saving.load_model(local)

    def decode(encoded):
        image = tf.io.decode_image(encoded, channels=1, expand_animations=False)
        image = tf.image.resize(image, [image_size, image_size], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    def serve(images):
        batch = tf.map_fn(
            decode, images, fn_output_signature=tf.TensorSpec([image_size, image_size, 1], tf.uint8)
        )
        return {"probabilities": model(batch, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=serve,
        input_signature=[tf.TensorSpec([None], tf.string, name="images")],
    )
    archive.write_out(export_dir, verbose=False)
