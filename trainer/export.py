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


# Pillow's ITU-R 601 luma in fixed point (convert("L")): L = (R*19595 + G*38470 + B*7471
# + 2**15) >> 16. Using the same integers makes the served gray bit-identical to the job's.
_LUMA_WEIGHTS = (19595, 38470, 7471)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


def _gray_uint8(encoded: tf.Tensor) -> tf.Tensor:
    """PNG/JPEG bytes -> uint8 [H, W, 1] gray, as bonify.images.decode_to_gray does it:
    colour -> Pillow's luma, alpha dropped, a 16-bit gray PNG scaled by its own min..max."""

    def eight_bit():
        # channels=3: gray is repeated, palette expanded, alpha dropped (not composited).
        # JPEG: the accurate integer IDCT, libjpeg's default that Pillow uses (TF's own
        # default, the fast IDCT, is off by up to 2 levels).
        rgb = tf.cond(
            tf.equal(tf.strings.substr(encoded, 0, 3), _JPEG_SIGNATURE),
            lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
        )
        rgb = tf.cast(rgb, tf.int32)
        luma = tf.tensordot(rgb, tf.constant(_LUMA_WEIGHTS, tf.int32), axes=[[2], [0]])
        return tf.cast(tf.bitwise.right_shift(luma + 2**15, 16), tf.uint8)[..., tf.newaxis]

    def sixteen_bit_gray():
        pixels = tf.cast(tf.io.decode_png(encoded, channels=1, dtype=tf.uint16), tf.float64)
        low, high = tf.reduce_min(pixels), tf.reduce_max(pixels)
        scaled = tf.round((pixels - low) * (255.0 / tf.maximum(high - low, 1e-12)))
        scaled = tf.where(high > low, scaled, tf.zeros_like(scaled))
        return tf.cast(tf.clip_by_value(scaled, 0, 255), tf.uint8)

    # IHDR: bit depth at byte 24, colour type (0 = gray) at byte 25.
    is_png = tf.equal(tf.strings.substr(encoded, 0, 8), _PNG_SIGNATURE)
    is_sixteen_bit_gray = tf.logical_and(
        is_png, tf.equal(tf.strings.substr(encoded, 24, 2), b"\x10\x00")
    )
    return tf.cond(is_sixteen_bit_gray, sixteen_bit_gray, eight_bit)


def serving_model_input(encoded: tf.Tensor, image_size: int, resize: str = "pad") -> tf.Tensor:
    """One PNG/JPEG (tf.string scalar) -> uint8 [image_size, image_size, 1]: the TF twin of
    bonify.images.to_model_input (same gray conversion; the same geometry as resize_square:
    long side -> image_size with Python's round-half-even, centred on black for "pad").
    Bilinear with antialiasing like Pillow's; the two differ by at most 1 gray level."""
    if resize not in ("pad", "stretch"):
        raise ValueError(f"resize must be 'pad' or 'stretch', got {resize!r}")
    gray = tf.cast(_gray_uint8(encoded), tf.float32)

    def resized(height, width):
        image = tf.image.resize(gray, [height, width], method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    if resize == "stretch":
        return tf.ensure_shape(resized(image_size, image_size), [image_size, image_size, 1])
    shape = tf.cast(tf.shape(gray)[:2], tf.float64)
    scale = image_size / tf.reduce_max(shape)
    # tf.round rounds half to even, like Python's round() in resize_square.
    new_size = tf.clip_by_value(tf.cast(tf.round(shape * scale), tf.int32), 1, image_size)
    new_height, new_width = new_size[0], new_size[1]
    padded = tf.image.pad_to_bounding_box(
        resized(new_height, new_width),
        (image_size - new_height) // 2,
        (image_size - new_width) // 2,
        image_size,
        image_size,
    )
    return tf.ensure_shape(padded, [image_size, image_size, 1])


def export_saved_model(
    keras_path: str, export_dir: str, image_size: int | None = None, resize: str | None = None
) -> None:
    """A SavedModel whose `serving_default` takes encoded PNG/JPEG bytes.

    Signature: images: tf.string [batch] (PNG or JPEG, any size) -> probabilities: float32
    [batch, 14] in CLASS_NAMES order. Each image goes through `serving_model_input` with the
    model card's image_size and resize mode (bonify.model_card.input_spec_for: explicit
    values must agree with the card, and are required when there is none), so the served
    model sees the pixels the Beam job trained it on.
    """
    from bonify.model_card import input_spec_for

    spec = input_spec_for(keras_path, image_size=image_size, resize=resize)
    image_size, resize = spec.image_size, spec.resize
    with tempfile.TemporaryDirectory() as temp:
        local = os.path.join(temp, "model.keras")
        tf.io.gfile.copy(keras_path, local, overwrite=True)
        model = keras.saving.load_model(local)

    def serve(images):
        batch = tf.map_fn(
            lambda encoded: serving_model_input(encoded, image_size, resize),
            images,
            fn_output_signature=tf.TensorSpec([image_size, image_size, 1], tf.uint8),
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
