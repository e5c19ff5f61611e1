"""The training input: augmentation semantics and determinism, exact-resume data position."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bonify.dataset import read_manifest, split_files
from trainer.config import DEFAULTS, load_config
from trainer.data import augment, train_dataset_fn

SIZE = 64
AUGMENT = DEFAULTS["data"]["augment"]


def reference_chain(image, seed, config, image_size):
    """The augmentations written step by step with tf.image on [0, 1] floats (the oracle),
    with the random draws `augment` documents: one uniform [4] draw, then a crop seed."""
    draw_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    draws = tf.random.stateless_uniform([4], draw_seed).numpy()
    x = tf.cast(image, tf.float32) / 255.0
    if draws[0] < 0.5:
        x = tf.image.flip_left_right(x)
    if draws[1] < 0.5:
        x = tf.image.flip_up_down(x)
    x = tf.image.adjust_brightness(x, config["brightness"] * (2 * draws[2] - 1))
    low, high = config["contrast"]
    x = tf.image.adjust_contrast(x, low + (high - low) * draws[3])
    padding = int(round(image_size * config["crop_padding"]))
    x = tf.image.resize_with_crop_or_pad(x, image_size + padding, image_size + padding)
    x = tf.image.stateless_random_crop(x, [image_size, image_size, 1], crop_seed)
    return tf.cast(tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0), tf.uint8)


def gradient_image() -> tf.Tensor:
    """An asymmetric uint8 image, so every flip and shift changes it."""
    rows = np.arange(SIZE)[:, None] * 3
    columns = np.arange(SIZE)[None, :]
    return tf.constant(((rows + columns) % 256).astype(np.uint8)[..., None])


@pytest.mark.parametrize("index", range(12))
def test_fused_augmentation_equals_the_tf_image_chain(index):
    image, seed = gradient_image(), tf.constant([11, index], tf.int32)
    fused = augment(image, seed, AUGMENT, SIZE).numpy().astype(int)
    expected = reference_chain(image, seed, AUGMENT, SIZE).numpy().astype(int)
    assert fused.dtype == int and fused.shape == (SIZE, SIZE, 1)
    # Identical up to float rounding of one gray level (the fused map rounds once).
    assert np.abs(fused - expected).max() <= 1


def test_augmentation_is_deterministic_per_seed_and_varies_across_seeds():
    image = gradient_image()
    outputs = [augment(image, tf.constant([5, i]), AUGMENT, SIZE).numpy() for i in range(6)]
    again = augment(image, tf.constant([5, 0]), AUGMENT, SIZE).numpy()
    np.testing.assert_array_equal(outputs[0], again)
    assert len({output.tobytes() for output in outputs}) == 6
    assert all(output.dtype == np.uint8 for output in outputs)


def test_augmentation_switched_off_returns_the_image():
    off = dict(AUGMENT, flip_left_right=False, flip_up_down=False, brightness=0.0,
               contrast=[1.0, 1.0], crop_padding=0.0)  # fmt: skip
    image = gradient_image()
    np.testing.assert_array_equal(augment(image, tf.constant([1, 2]), off, SIZE), image)


def _labels(dataset) -> list[int]:
    return [int(label) for batch in dataset for label in batch["label"].numpy()]


def test_resumed_epoch_yields_exactly_the_rest_of_the_uninterrupted_epoch(sample_shards_dir):
    manifest = read_manifest(str(sample_shards_dir))
    files = split_files(str(sample_shards_dir), "train")
    config = load_config(None, [f"data.image_size={SIZE}", "training.global_batch_size=4"])

    def epoch(start_step):
        dataset_fn = train_dataset_fn(files, manifest.encoding, config, 1, 2, start_step, 6)
        return list(dataset_fn(tf.distribute.InputContext()))

    full, resumed = epoch(0), epoch(4)
    assert len(full) == 6 and len(resumed) == 2
    for left, right in zip(full[4:], resumed, strict=True):
        np.testing.assert_array_equal(left["image"], right["image"])  # same pixels, augmented
        np.testing.assert_array_equal(left["label"], right["label"])
    other_epoch = train_dataset_fn(files, manifest.encoding, config, 1, 3, 0, 6)
    assert _labels(other_epoch(tf.distribute.InputContext())) != _labels(full)


def test_each_input_pipeline_yields_per_replica_batches_of_its_own_shards(sample_shards_dir):
    from trainer.errors import TrainerError

    manifest = read_manifest(str(sample_shards_dir))
    files = split_files(str(sample_shards_dir), "train")
    config = load_config(None, [f"data.image_size={SIZE}", "training.global_batch_size=4"])
    dataset_fn = train_dataset_fn(files, manifest.encoding, config, 0, 0, 0, 3)
    pipelines = [list(dataset_fn(tf.distribute.InputContext(2, i, 2))) for i in range(2)]
    assert [len(batches) for batches in pipelines] == [3, 3]
    assert all(b["image"].shape == (2, SIZE, SIZE, 1) for b in pipelines[0] + pipelines[1])
    assert pipelines[0][0]["image"].numpy().tobytes() != pipelines[1][0]["image"].numpy().tobytes()
    with pytest.raises(TrainerError, match="input pipelines"):
        dataset_fn(tf.distribute.InputContext(len(files) + 1, 0, 1))
