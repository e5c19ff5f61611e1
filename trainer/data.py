"""Input pipelines from the Beam job's shards: sharded, seeded, resumable, uint8 batches.

Exact resume: a tf.distribute distributed iterator cannot be checkpointed, so
each epoch's dataset is rebuilt from the seed of (phase, epoch) and the records of the
steps already trained are skipped before decoding. Augmentation is stateless, seeded by
(seed, phase, epoch, record index), so a resumed epoch sees exactly the same pixels.

Elements: {"image": uint8 [per_replica_batch, S, S, 1], "label": int32 [b],
"weight": float32 [b]} (weight 0 marks validation padding); validation elements also carry
"study": int64 [b], a hash of the record's study id (see `study_key`).
"""

from __future__ import annotations

import math

import tensorflow as tf

from bonify.dataset import parse_and_decode
from bonify.vocabulary import RecordKeys
from trainer.errors import TrainerError

#: The record keys training reads besides the image.
_KEYS = (RecordKeys.LABEL,)


def find_corrupt_shard(files: list[str], encoding: str, image_size: int) -> tuple[str, str] | None:
    """(shard, what is wrong) for the first shard with a record that cannot be read or whose
    image does not decode to [image_size, image_size, 1]; None when every shard is sound.
    Reads every record of every file: only for the error path."""
    for path in files:
        good = 0
        try:
            for serialized in tf.data.TFRecordDataset(path):
                parse_and_decode(serialized, encoding, image_size, _KEYS)
                good += 1
        except tf.errors.DataLossError:
            return path, f"record {good + 1} cannot be read (truncated or bad checksum)"
        except tf.errors.InvalidArgumentError as error:
            reason = error.message.splitlines()[0][:160]
            return path, f"record {good + 1} does not decode to a {image_size} px image ({reason})"
    return None


def _decoder(encoding: str, image_size: int):
    """serialized record -> (uint8 [S, S, 1] image, int32 label), for tf.data maps."""

    def decode(serialized):
        image, features = parse_and_decode(serialized, encoding, image_size, _KEYS)
        return image, tf.cast(features[RecordKeys.LABEL], tf.int32)

    return decode


#: Study keys are hashed into [0, STUDY_KEY_BUCKETS): two of MURA's ~14,000 studies share
#: one with probability ~1e-11.
STUDY_KEY_BUCKETS = 2**62


def study_key(study_id):
    """int64 hash of a study id (tf.string): numbers, unlike strings, can be gathered from
    every replica and worker (tf.distribute collectives), so validation can group images by
    study (trainer.loop.make_eval_step)."""
    return tf.strings.to_hash_bucket_fast(study_id, STUDY_KEY_BUCKETS)


def augment(image, seed, augment_config: dict, image_size: int):
    """The reference augmentations on one uint8 [S, S, 1] image, stateless (seed: int32 [2]).

    The result of the tf.image chain flip -> flip -> brightness -> contrast -> pad + random
    crop -> clip on [0, 1] floats (tests/trainer/test_data.py compares), fused to save passes
    over the pixels, which the host CPU pays for: one draw of all random numbers, one
    reverse for both flips and the crop on uint8 pixels, and brightness and contrast as one
    affine map, since contrast(x + d) = c * x + (1 - c) * mean(x) + d.
    """
    draw_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    # [flip left-right, flip up-down, brightness delta, contrast factor], each in [0, 1).
    draws = tf.random.stateless_uniform([4], draw_seed)
    flips = tf.stack(
        [
            augment_config["flip_up_down"] and draws[1] < 0.5,
            augment_config["flip_left_right"] and draws[0] < 0.5,
        ]
    )
    image = tf.reverse(image, tf.boolean_mask(tf.constant([0, 1]), flips))
    max_delta = augment_config["brightness"]
    low, high = augment_config["contrast"]
    if max_delta > 0 or high > low:
        delta = max_delta * (2.0 * draws[2] - 1.0)
        factor = low + (high - low) * draws[3]
        x = tf.cast(image, tf.float32) / 255.0
        offset = (1.0 - factor) * tf.reduce_mean(x) + delta
        x = tf.clip_by_value(x * factor + offset, 0.0, 1.0)
        image = tf.cast(tf.round(x * 255.0), tf.uint8)
    padding = int(round(image_size * augment_config["crop_padding"]))
    if padding > 0:
        padded = tf.image.resize_with_crop_or_pad(image, image_size + padding, image_size + padding)
        image = tf.image.stateless_random_crop(padded, [image_size, image_size, 1], crop_seed)
    return image


def train_dataset_fn(
    files: list[str],
    encoding: str,
    config: dict,
    phase_index: int,
    epoch: int,
    start_step: int,
    steps_per_epoch: int,
):
    """A `dataset_fn(input_context)` for `distribute_datasets_from_function` (train split).

    Files are sharded by input pipeline (sorted list, never shuffled before sharding), the
    per-pipeline file order and the record shuffle are seeded by (seed, phase, epoch), and
    the records of `start_step` steps are skipped. Exactly `steps_per_epoch - start_step`
    steps are produced on every pipeline.
    """
    data, training = config["data"], config["training"]
    image_size = data["image_size"]
    epoch_seed = training["seed"] * 1_000_003 + phase_index * 10_007 + epoch
    decode = _decoder(encoding, image_size)
    augment_config = data["augment"]

    def dataset_fn(input_context: tf.distribute.InputContext):
        pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(files) < pipelines:
            raise TrainerError(
                f"train split has {len(files)} shards but {pipelines} input pipelines: "
                "rerun beam_preprocess with more shards"
            )
        per_replica = input_context.get_per_replica_batch_size(training["global_batch_size"])
        records_per_step = training["global_batch_size"] // pipelines
        mine = files[pipeline_id::pipelines]
        names = tf.data.Dataset.from_tensor_slices(mine)
        names = names.shuffle(len(mine), seed=epoch_seed).repeat()
        records = names.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(len(mine), data["cycle_length"]),
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        records = records.shuffle(data["shuffle_buffer"], seed=epoch_seed + 1)
        records = records.enumerate().skip(start_step * records_per_step)
        records = records.take((steps_per_epoch - start_step) * records_per_step)

        def parse(index, serialized):
            image, label = decode(serialized)
            if augment_config["enabled"]:
                seed = tf.stack(
                    [tf.cast(epoch_seed % (2**31 - 1), tf.int64), index * pipelines + pipeline_id]
                )
                image = augment(image, tf.cast(seed, tf.int32), augment_config, image_size)
            return {"image": image, "label": label, "weight": tf.constant(1.0)}

        batches = records.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return batches.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def eval_dataset_fn(files: list[str], encoding: str, config: dict, images: int, steps: int):
    """A `dataset_fn` for a split read once in order, padded with weight-0 examples.

    Records are sharded by index across pipelines (every pipeline reads the files; fine for
    the validation split) and padded so each pipeline yields exactly `steps` steps. Each
    element carries its study's `study_key` (-1 for padding).
    """
    image_size = config["data"]["image_size"]
    global_batch = config["training"]["global_batch_size"]
    keys = (RecordKeys.LABEL, RecordKeys.STUDY_ID)

    def dataset_fn(input_context: tf.distribute.InputContext):
        pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        per_replica = input_context.get_per_replica_batch_size(global_batch)
        records = tf.data.TFRecordDataset(files).shard(pipelines, pipeline_id)

        def parse(serialized):
            image, features = parse_and_decode(serialized, encoding, image_size, keys)
            return {
                "image": image,
                "label": tf.cast(features[RecordKeys.LABEL], tf.int32),
                "weight": tf.constant(1.0),
                "study": study_key(features[RecordKeys.STUDY_ID]),
            }

        real = records.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        padding = tf.data.Dataset.from_tensors(
            {
                "image": tf.zeros([image_size, image_size, 1], tf.uint8),
                "label": tf.constant(0, tf.int32),
                "weight": tf.constant(0.0),
                "study": tf.constant(-1, tf.int64),
            }
        ).repeat()
        total = steps * global_batch // pipelines
        padded = real.concatenate(padding).take(total)
        return padded.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    return dataset_fn


def default_steps(images: int, global_batch: int, *, training: bool) -> int:
    """Train: whole batches per epoch (>= 1); eval: batches covering every image."""
    if training:
        return max(1, images // global_batch)
    return max(1, math.ceil(images / global_batch))
