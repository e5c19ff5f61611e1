"""The Beam job end to end on the generated sample (conftest's `sample_shards_dir`, 64 px):
what lands in the shards, manifest.json and the TFDS metadata."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from beam_preprocess.transform import process_image
from bonify.vocabulary import (
    CLASS_NAMES,
    MANIFEST_FILE,
    REGIONS,
    REJECTED_FILE,
    SCHEMA_VERSION,
    SPLITS,
    parse_study_path,
)

from .conftest import csv_image_rows, read_records

IMAGE_SIZE = 64  # tests/conftest.py TEST_IMAGE_SIZE


@pytest.fixture(scope="module")
def records(sample_shards_dir):
    return read_records(sample_shards_dir)


@pytest.fixture(scope="module")
def manifest(sample_shards_dir):
    return json.loads((sample_shards_dir / MANIFEST_FILE).read_text())


def test_every_csv_image_is_written_once(records, manifest, sample_dataset_dir, sample_shards_dir):
    rows = csv_image_rows(sample_dataset_dir / "MURA-v1.1")
    assert sorted(record["path"] for record in records) == sorted(rows)
    assert manifest["input_images"] == len(rows) == manifest["written"] + manifest["rejected"]
    assert manifest["rejected"] == 0 and manifest["rejected_by_reason"] == {}
    assert (sample_shards_dir / REJECTED_FILE).read_text() == ""


def test_records_carry_the_right_labels_and_ids(records):
    for record in records:
        key = parse_study_path(record["path"])
        region = REGIONS.index(key.region)
        assert record["region"] == region
        assert record["abnormal"] == key.abnormal_from_folder
        assert record["label"] == 2 * region + key.abnormal_from_folder
        assert record["patient_id"] == key.patient_id
        assert record["study_id"] == key.study_id
        assert (record["height"], record["width"], record["channels"]) == (
            IMAGE_SIZE,
            IMAGE_SIZE,
            1,
        )
        assert record["format"] == "png"
        expected_split = "test" if "/valid/" in record["path"] else ("train", "validation")
        assert record["split"] in expected_split


def test_records_hold_their_source_image(records, sample_dataset_dir):
    for record in records[::7]:
        source = (sample_dataset_dir / record["path"]).read_bytes()
        with Image.open(io.BytesIO(source)) as original:
            assert (record["original_width"], record["original_height"]) == original.size
        assert record["sha256"] == hashlib.sha256(source).hexdigest()
        expected = process_image(source, IMAGE_SIZE, "pad", "png")
        stored = np.asarray(Image.open(io.BytesIO(record["image"])))
        assert stored.shape == (IMAGE_SIZE, IMAGE_SIZE)
        assert np.array_equal(stored, np.asarray(Image.open(io.BytesIO(expected.encoded))))


def test_patient_never_in_two_splits(records, manifest):
    patients = {
        split: {r["patient_id"] for r in records if r["split"] == split} for split in SPLITS
    }
    assert all(patients[split] for split in SPLITS), "every split should have patients"
    assert not patients["train"] & patients["validation"]
    assert not (patients["train"] | patients["validation"]) & patients["test"]
    assert manifest["patients_in_multiple_splits"] == 0


def test_manifest_counts_match_the_records(records, manifest):
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["image_size"] == IMAGE_SIZE and manifest["encoding"] == "png"
    for split in SPLITS:
        split_records = [r for r in records if r["split"] == split]
        entry = manifest["splits"][split]
        assert entry["images"] == len(split_records)
        assert entry["patients"] == len({r["patient_id"] for r in split_records})
        assert entry["studies"] == len({r["study_id"] for r in split_records})
        classes = Counter(CLASS_NAMES[r["label"]] for r in split_records)
        assert entry["class_counts"] == {name: classes[name] for name in CLASS_NAMES}
        regions = Counter(REGIONS[r["region"]] for r in split_records)
        assert entry["region_counts"] == {name: regions[name] for name in REGIONS}


def test_shards_follow_tfds_naming_and_the_shard_count_rule(records, manifest, sample_shards_dir):
    for split in SPLITS:
        entry = manifest["splits"][split]
        assert entry["num_shards"] == min(16, entry["images"])
        assert entry["files"] == [
            f"mura-{split}.tfrecord-{index:05d}-of-{entry['num_shards']:05d}"
            for index in range(entry["num_shards"])
        ]
        per_file = Counter(r["shard"] for r in records if r["split"] == split)
        assert [per_file[name] for name in entry["files"]] == entry["shard_lengths"]
        assert all((sample_shards_dir / name).exists() for name in entry["files"])


def test_tfds_reads_the_output(sample_shards_dir, manifest):
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(str(sample_shards_dir))
    assert builder.info.features["label"].names == list(CLASS_NAMES)
    assert builder.info.splits["test"].num_examples == manifest["splits"]["test"]["images"]
    count = 0
    for example in builder.as_dataset(split="test"):
        assert example["image"].shape == (IMAGE_SIZE, IMAGE_SIZE, 1)
        assert (
            example["label"].numpy() == 2 * example["region"].numpy() + example["abnormal"].numpy()
        )
        count += 1
    assert count == manifest["splits"]["test"]["images"]
