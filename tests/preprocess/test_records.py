"""The record bytes: TensorFlow-free Example encoding and TFRecord framing agree with
TensorFlow, and the TFDS features agree with the vocabulary's feature spec."""

from __future__ import annotations

import pytest

from beam_preprocess.records import serialize_record, shard_writer_factory, tfds_features
from bonify.vocabulary import RECORD_FEATURE_TYPES, tf_feature_spec


def sample_values(seed: int) -> dict:
    values = {}
    for number, (key, kind) in enumerate(sorted(RECORD_FEATURE_TYPES.items())):
        if kind == "int64":
            values[key] = (seed * 7919 + number * 104729) % (2**40) if number % 3 else 0
        else:
            values[key] = bytes((seed + i) % 256 for i in range(number * 37 + seed % 5))
    values["image"] = bytes(range(256)) * (50 + seed)  # long: multi-byte length varints
    return values


def tensorflow_serialization(values: dict) -> bytes:
    import tensorflow as tf

    feature = {}
    for key, kind in RECORD_FEATURE_TYPES.items():
        if kind == "int64":
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[values[key]]))
        else:
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[values[key]]))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_record_bytes_equal_tensorflow_serialization(seed):
    values = sample_values(seed)
    assert serialize_record(values) == tensorflow_serialization(values)


def test_record_parses_with_the_vocabulary_spec():
    import tensorflow as tf

    values = sample_values(3)
    parsed = tf.io.parse_single_example(serialize_record(values), tf_feature_spec())
    for key in RECORD_FEATURE_TYPES:
        assert parsed[key].numpy() == values[key], key


def test_both_shard_writers_write_identical_tfrecord_files(tmp_path):
    import tensorflow as tf

    pytest.importorskip(
        "google_crc32c", reason="the fast writer needs google-crc32c (apache-beam[gcp])"
    )
    records = [serialize_record(sample_values(seed)) for seed in range(4)]
    paths = {}
    for name, prefer_tensorflow in (("fast", False), ("tensorflow", True)):
        paths[name] = str(tmp_path / f"{name}.tfrecord")
        with shard_writer_factory(prefer_tensorflow)(paths[name]) as writer:
            for record in records:
                writer.write(record)
    assert (tmp_path / "fast.tfrecord").read_bytes() == (
        tmp_path / "tensorflow.tfrecord"
    ).read_bytes()
    assert [r.numpy() for r in tf.data.TFRecordDataset(paths["fast"])] == records


@pytest.mark.parametrize("encoding", ["png", "jpeg", "raw"])
def test_tfds_features_serialize_like_the_vocabulary(encoding):
    import tensorflow as tf

    features = tfds_features(32, encoding)
    info = features.get_serialized_info()
    assert set(info) == set(RECORD_FEATURE_TYPES)
    kinds = {"int64": tf.int64, "bytes": tf.string}
    for key, kind in RECORD_FEATURE_TYPES.items():
        assert info[key].dtype == kinds[kind] and tuple(info[key].shape) == (), key
