"""Patient-level splits and shard assignment (pure functions)."""

from __future__ import annotations

from collections import Counter

from beam_preprocess.index import ImageEntry
from beam_preprocess.shards import (
    MIN_SHARDS_PER_SPLIT,
    assign_shards,
    num_shards_for,
    order_in_shard,
    shard_counts,
    shard_file_name,
)
from beam_preprocess.split import assign_splits, patients_in_multiple_splits, split_of


def make_entries(
    patients: int, images_per_patient: int = 3, folder: str = "train", first_id: int = 0
) -> list[ImageEntry]:
    entries = []
    for patient in range(patients):
        for image in range(images_per_patient):
            pid = f"{first_id + patient:05d}"
            entries.append(
                ImageEntry(
                    path=f"MURA-v1.1/{folder}/XR_HAND/patient{pid}/study{image % 2 + 1}_negative/image{image}.png",
                    folder=folder,
                    region="HAND",
                    patient_id=pid,
                    study_id=f"HAND/patient{pid}/study{image % 2 + 1}",
                    abnormal=0,
                    source="x:1",
                )
            )
    return entries


def test_valid_folder_is_test_split():
    assert {split_of("valid", f"{p}", 42, 0.5) for p in range(100)} == {"test"}


def test_split_is_deterministic_and_depends_on_seed():
    patients = [f"{p:05d}" for p in range(500)]
    first = [split_of("train", p, 42, 0.15) for p in patients]
    assert first == [split_of("train", p, 42, 0.15) for p in patients]
    assert first != [split_of("train", p, 7, 0.15) for p in patients]


def test_split_takes_about_val_fraction_of_patients():
    patients = [f"{p:05d}" for p in range(4000)]
    for fraction in (0.0, 0.15, 0.5):
        share = sum(split_of("train", p, 42, fraction) == "validation" for p in patients) / len(
            patients
        )
        assert abs(share - fraction) < 0.03, (fraction, share)


def test_patient_never_in_two_splits():
    entries = assign_splits(
        make_entries(300, 4) + make_entries(50, 2, "valid", first_id=11185), 42, 0.3
    )
    assert patients_in_multiple_splits(entries) == set()
    assert set(Counter(e.split for e in entries)) == {"train", "validation", "test"}
    # The checker itself notices a patient on two sides.
    broken = entries[:1] + [entries[0]._replace(split="test")]
    assert patients_in_multiple_splits(broken) == {entries[0].patient_id}


def test_shard_count_rules():
    assert num_shards_for(0, 320, "png") == 0
    assert num_shards_for(5, 320, "png") == 5  # fewer images than the minimum: one per shard
    assert num_shards_for(1000, 64, "png") == MIN_SHARDS_PER_SPLIT
    assert num_shards_for(1000, 64, "png", num_shards=4) == 4
    assert num_shards_for(3, 64, "png", num_shards=4) == 3
    # MURA train at 320 px PNG: 36,808 x ~54.6 kB = 2.01 GB in 100 MB shards -> 21 shards.
    assert num_shards_for(36_808, 320, "png", target_shard_mb=100) == 21
    assert num_shards_for(36_808, 320, "raw", target_shard_mb=100) > num_shards_for(
        36_808, 320, "jpeg", target_shard_mb=100
    )


def test_shards_are_balanced_deterministic_and_mix_patients():
    entries = assign_splits(make_entries(200, 3), 42, 0.2)
    counts = shard_counts(entries, 64, "png")
    first = assign_shards(entries, counts)
    again = assign_shards(list(reversed(entries)), counts)
    assert sorted(first) == sorted(again)
    for split in ("train", "validation"):
        sizes = Counter(e.shard_index for e in first if e.split == split)
        assert len(sizes) == counts[split] == MIN_SHARDS_PER_SPLIT
        assert max(sizes.values()) - min(sizes.values()) <= 1
    in_shard = [e for e in first if e.split == "train" and e.shard_index == 0]
    assert len({e.patient_id for e in in_shard}) > len(in_shard) // 2
    assert order_in_shard(in_shard) == order_in_shard(list(reversed(in_shard)))


def test_shard_file_name_is_tfds_naming():
    assert shard_file_name("validation", 3, 16) == "mura-validation.tfrecord-00003-of-00016"
