"""bonify.dataset, the one reader of the Beam job's output: the typed manifest, the shard
list, and the record decode every stage shares."""

from __future__ import annotations

import io
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from bonify.cli import BonifyError
from bonify.dataset import (
    Manifest,
    decode_example,
    iterate_records,
    read_manifest,
    split_files,
)
from bonify.vocabulary import (
    CLASS_NAMES,
    MANIFEST_FILE,
    RECORD_FEATURE_TYPES,
    REGIONS,
    SPLITS,
    RecordKeys,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Small shards for the encodings other than the session's PNG shards.
OTHER_ENCODINGS_IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def shards_by_encoding(tmp_path_factory, sample_dataset_dir, sample_shards_dir) -> dict:
    """encoding -> the Beam job's output folder for the session's sample tree."""
    from beam_preprocess.__main__ import main as preprocess_main

    folders = {"png": sample_shards_dir}
    for encoding in ("jpeg", "raw"):
        out = tmp_path_factory.mktemp(f"shards-{encoding}")
        argv = ["--input_dir", str(sample_dataset_dir), "--output_dir", str(out),
                "--image_size", str(OTHER_ENCODINGS_IMAGE_SIZE), "--encoding", encoding,
                "--num_shards", "2", "--overwrite", "--runner=FnApiRunner"]  # fmt: skip
        assert preprocess_main(argv) == 0
        folders[encoding] = out
    return folders


def _copy_with_manifest(sample_shards_dir: pathlib.Path, target: pathlib.Path, text: str) -> str:
    shutil.copytree(sample_shards_dir, target)
    (target / MANIFEST_FILE).write_text(text)
    return str(target)


def _serialized_records(files: list[str]) -> list[bytes]:
    import tensorflow as tf

    return [bytes(record.numpy()) for record in tf.data.TFRecordDataset(files)]


def _image_bytes(serialized: bytes) -> bytes:
    """The stored image bytes, read with protobuf alone (not with the code under test)."""
    import tensorflow as tf

    example = tf.train.Example.FromString(serialized)
    return example.features.feature[RecordKeys.IMAGE].bytes_list.value[0]


# --- manifest.json ------------------------------------------------------------------------


def test_manifest_fields_equal_its_json(sample_shards_dir):
    manifest = read_manifest(str(sample_shards_dir))
    raw = json.loads((sample_shards_dir / MANIFEST_FILE).read_text())
    assert isinstance(manifest, Manifest)
    assert manifest.path == f"{sample_shards_dir}/{MANIFEST_FILE}"
    assert manifest.raw == raw
    assert (manifest.image_size, manifest.encoding, manifest.resize, manifest.schema_version) == (
        raw["image_size"], raw["encoding"], raw["resize"], raw["schema_version"]
    )  # fmt: skip
    assert set(manifest.splits) == set(SPLITS)
    for split, info in manifest.splits.items():
        entry = raw["splits"][split]
        assert (info.images, info.studies, info.patients, info.num_shards) == (
            entry["images"], entry["studies"], entry["patients"], entry["num_shards"]
        )  # fmt: skip
        assert info.class_counts == entry["class_counts"] and set(info.class_counts) == set(
            CLASS_NAMES
        )
        assert info.region_counts == entry["region_counts"] and set(info.region_counts) == set(
            REGIONS
        )


def test_missing_folder_is_one_line_naming_it(tmp_path):
    with pytest.raises(BonifyError, match="no such directory") as error:
        read_manifest(str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(error.value) and "\n" not in str(error.value)


def test_folder_without_manifest_is_one_line_naming_it(tmp_path):
    with pytest.raises(BonifyError, match=f"no {MANIFEST_FILE}") as error:
        read_manifest(str(tmp_path))
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)


def test_manifest_that_is_not_json_names_the_file(sample_shards_dir, tmp_path):
    data_dir = _copy_with_manifest(sample_shards_dir, tmp_path / "d", '{"image_size": 64,')
    with pytest.raises(BonifyError, match="not JSON") as error:
        read_manifest(data_dir)
    assert f"{data_dir}/{MANIFEST_FILE}: not a valid manifest" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "key", ["image_size", "encoding", "resize", "schema_version", "splits.test",
            "splits.train.class_counts", "splits.validation.images"],
)  # fmt: skip
def test_manifest_missing_a_key_names_the_file_and_the_key(sample_shards_dir, tmp_path, key):
    raw = json.loads((sample_shards_dir / MANIFEST_FILE).read_text())
    *parents, last = key.split(".")
    entry = raw
    for parent in parents:
        entry = entry[parent]
    del entry[last]
    data_dir = _copy_with_manifest(sample_shards_dir, tmp_path / "d", json.dumps(raw))
    with pytest.raises(BonifyError) as error:
        read_manifest(data_dir)
    message = str(error.value)
    assert message == f"{data_dir}/{MANIFEST_FILE}: not a valid manifest: key '{key}' is missing"


@pytest.mark.parametrize(
    "key, value, problem",
    [("image_size", "big", "non-negative integer"), ("encoding", "webp", "one of png, jpeg, raw"),
     ("schema_version", 999, "rerun beam_preprocess")],
)  # fmt: skip
def test_manifest_with_a_wrong_value_names_the_key(sample_shards_dir, tmp_path, key, value,
                                                   problem):  # fmt: skip
    raw = dict(json.loads((sample_shards_dir / MANIFEST_FILE).read_text()), **{key: value})
    data_dir = _copy_with_manifest(sample_shards_dir, tmp_path / "d", json.dumps(raw))
    with pytest.raises(BonifyError, match=problem) as error:
        read_manifest(data_dir)
    assert f"{MANIFEST_FILE}: not a valid manifest: key '{key}'" in str(error.value)


# --- shard lists --------------------------------------------------------------------------


def test_split_files_are_the_sorted_shards_of_the_split(sample_shards_dir):
    raw = json.loads((sample_shards_dir / MANIFEST_FILE).read_text())
    for split in SPLITS:
        files = split_files(str(sample_shards_dir), split)
        assert files == [
            f"{sample_shards_dir}/{name}" for name in sorted(raw["splits"][split]["files"])
        ]


def test_split_without_shards_is_one_line(tmp_path):
    with pytest.raises(BonifyError, match="split 'validation' has no shards"):
        split_files(str(tmp_path), "validation")


def test_local_folders_are_read_without_importing_tensorflow(sample_shards_dir, tmp_path):
    script = f"""
import sys
from bonify.cli import BonifyError
from bonify.dataset import read_manifest, split_files
manifest = read_manifest({str(sample_shards_dir)!r})
files = split_files({str(sample_shards_dir)!r}, "train")
try:
    read_manifest({str(tmp_path / "nowhere")!r})
except BonifyError:
    pass
print(manifest.image_size, len(files), "tensorflow" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    image_size, shard_count, tensorflow_imported = result.stdout.split()
    assert int(image_size) == 64 and int(shard_count) > 1
    assert tensorflow_imported == "False"


# --- records ------------------------------------------------------------------------------


def _reference_pixels(image_bytes: bytes, encoding: str, image_size: int) -> np.ndarray:
    """What Pillow (or numpy, for raw bytes) reads from a record's image bytes."""
    if encoding == "raw":
        return np.frombuffer(image_bytes, np.uint8).reshape(image_size, image_size)
    return np.asarray(Image.open(io.BytesIO(image_bytes)).convert("L"))


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_lossless_images_decode_to_pillows_pixels(shards_by_encoding, encoding):
    data_dir = str(shards_by_encoding[encoding])
    manifest = read_manifest(data_dir)
    assert manifest.encoding == encoding
    files = split_files(data_dir, "test")
    serialized = _serialized_records(files)
    decoded = [record[RecordKeys.IMAGE] for record in iterate_records(files)]
    assert len(decoded) == len(serialized) == manifest.splits["test"].images
    for record, image in zip(serialized, decoded, strict=True):
        expected = _reference_pixels(_image_bytes(record), encoding, manifest.image_size)
        assert image.dtype == np.uint8 and image.shape == (*expected.shape, 1)
        np.testing.assert_array_equal(image[..., 0], expected)


def test_jpeg_images_decode_close_to_pillows_pixels(shards_by_encoding):
    """JPEG shards decode with TensorFlow's default (fast integer) inverse DCT, as the
    trainer always has: on average within 2 gray levels of Pillow's accurate one, not equal
    (a wrong channel, orientation or size would be off by tens). Changing it would change
    what existing jobs train on."""
    data_dir = str(shards_by_encoding["jpeg"])
    manifest = read_manifest(data_dir)
    files = split_files(data_dir, "test")
    differences = []
    for record, decoded in zip(_serialized_records(files), iterate_records(files), strict=True):
        expected = _reference_pixels(_image_bytes(record), "jpeg", manifest.image_size)
        image = decoded[RecordKeys.IMAGE]
        assert image.dtype == np.uint8 and image.shape == (*expected.shape, 1)
        differences.append(np.abs(image[..., 0].astype(int) - expected.astype(int)))
    differences = np.stack(differences)
    assert differences.mean() < 2.0 and differences.max() <= 32


def test_iterate_records_yields_every_record_with_the_schema_keys(sample_shards_dir):
    files = split_files(str(sample_shards_dir), "validation")
    records = list(iterate_records(files))
    assert len(records) == read_manifest(str(sample_shards_dir)).splits["validation"].images
    for record in records:
        assert set(RECORD_FEATURE_TYPES) <= set(record)
        for key, kind in RECORD_FEATURE_TYPES.items():
            if key != RecordKeys.IMAGE:
                assert isinstance(record[key], str if kind == "bytes" else int), key
        assert (
            record[RecordKeys.LABEL] == 2 * record[RecordKeys.REGION] + record[RecordKeys.ABNORMAL]
        )
        assert record[RecordKeys.IMAGE].shape == (64, 64, 1)
        assert record["image_num_bytes"] > 0
    assert [r[RecordKeys.PATH] for r in iterate_records(files, limit=3)] == [
        r[RecordKeys.PATH] for r in records[:3]
    ]


def test_decode_example_with_the_manifests_settings_equals_the_records_own(sample_shards_dir):
    files = split_files(str(sample_shards_dir), "test")
    serialized = _serialized_records(files)[0]
    own, told = decode_example(serialized), decode_example(serialized, "png", 64)
    np.testing.assert_array_equal(own.pop(RecordKeys.IMAGE), told.pop(RecordKeys.IMAGE))
    assert own == told


def test_trainer_evaluator_and_record_iteration_see_identical_pixels(sample_shards_dir):
    import tensorflow as tf

    from eval.predict import make_dataset
    from trainer.config import load_config
    from trainer.data import eval_dataset_fn

    data_dir = str(sample_shards_dir)
    manifest = read_manifest(data_dir)
    files = split_files(data_dir, "validation")
    images = manifest.splits["validation"].images
    config = load_config(None, ["data.image_size=64", "training.global_batch_size=8"])
    steps = -(-images // 8)
    trainer_batches = list(
        eval_dataset_fn(files, manifest.encoding, config, images, steps)(
            tf.distribute.InputContext()
        )
    )
    weights = np.concatenate([batch["weight"].numpy() for batch in trainer_batches])
    trainer_pixels = np.concatenate([batch["image"].numpy() for batch in trainer_batches])
    trainer_pixels = trainer_pixels[weights > 0]  # without the weight-0 padding
    evaluator_pixels = np.concatenate(
        [images.numpy() for images, _ in make_dataset(files, manifest.encoding, 64, 8)]
    )
    iterated = np.stack([record[RecordKeys.IMAGE] for record in iterate_records(files)])
    assert trainer_pixels.shape == (images, 64, 64, 1)
    np.testing.assert_array_equal(trainer_pixels, evaluator_pixels)
    np.testing.assert_array_equal(trainer_pixels, iterated)
