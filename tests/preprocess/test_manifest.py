"""Totals from stats events, and the manifest keys the trainer reads."""

from __future__ import annotations

from beam_preprocess.index import KIND_IMAGE, KIND_STUDY_ROW, Rejection
from beam_preprocess.manifest import (
    StatsAccumulator,
    build_manifest,
    format_summary,
    input_event,
    rejection_event,
    shard_event,
    summarize_events,
)
from bonify.vocabulary import CLASS_NAMES, REGIONS, SCHEMA_VERSION


def events():
    return [
        input_event(input_images=7, study_rows=4),
        shard_event(
            "train", 0, 2, 100, {"HAND_Normal": 2}, {"HAND": 2}, ["1"], ["HAND/patient1/study1"]
        ),
        shard_event(
            "train", 1, 1, 50, {"WRIST_Abnormal": 1}, {"WRIST": 1}, ["2"], ["WRIST/patient2/study1"]
        ),
        shard_event(
            "test", 0, 2, 80, {"ELBOW_Normal": 2}, {"ELBOW": 2}, ["9"], ["ELBOW/patient9/study1"]
        ),
        rejection_event(Rejection("a", "missing_file", "", KIND_IMAGE)),
        rejection_event(Rejection("b", "missing_file", "", KIND_IMAGE)),
        rejection_event(Rejection("c", "label_mismatch", "", KIND_STUDY_ROW)),
    ]


def test_summary_counts_add_up():
    summary = summarize_events(events())
    assert summary["input_images"] == 7
    assert summary["written"] == 5 and summary["rejected"] == 2
    assert summary["rejected_by_reason"] == {"missing_file": 2}
    assert summary["rejected_study_rows_by_reason"] == {"label_mismatch": 1}
    train = summary["splits"]["train"]
    assert (train["images"], train["studies"], train["patients"]) == (3, 2, 2)
    assert train["shard_lengths"] == [2, 1] and train["num_bytes"] == 150
    assert list(train["class_counts"]) == list(CLASS_NAMES)  # all 14, zeros included
    assert list(train["region_counts"]) == list(REGIONS)
    assert summary["splits"]["validation"]["images"] == 0
    assert summary["patients_in_multiple_splits"] == 0


def test_merged_accumulators_equal_one_pass():
    first, second = StatsAccumulator(), StatsAccumulator()
    for number, event in enumerate(events()):
        (first if number % 2 else second).add(event)
    assert first.merge(second).summary() == summarize_events(events())


def test_patient_in_two_splits_is_counted():
    summary = summarize_events(
        [
            shard_event("train", 0, 1, 1, {}, {}, ["5"], []),
            shard_event("test", 0, 1, 1, {}, {}, ["5"], []),
        ]
    )
    assert summary["patients_in_multiple_splits"] == 1


def test_manifest_has_the_keys_the_trainer_reads():
    manifest = build_manifest(
        summarize_events(events()),
        {"image_size": 64, "encoding": "png", "resize": "pad"},
        {"train": ["mura-train.tfrecord-00000-of-00002", "mura-train.tfrecord-00001-of-00002"]},
    )
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["image_size"] == 64 and manifest["encoding"] == "png"
    assert manifest["splits"]["train"]["images"] == 3
    assert manifest["splits"]["train"]["class_counts"]["HAND_Normal"] == 2
    assert manifest["splits"]["train"]["files"][1].endswith("00001-of-00002")
    text = format_summary(manifest)
    assert "input_images = written + rejected: 7 = 5 + 2" in text
    assert "rejected missing_file: 2" in text


def test_views_per_study_count_a_studys_images_across_shards():
    summary = summarize_events(
        [
            shard_event("train", 0, 2, 1, {}, {}, ["1"], ["A", "B"]),
            shard_event("train", 1, 2, 1, {}, {}, ["1"], ["A", "A"]),
        ]
    )
    assert summary["splits"]["train"]["views_per_study"] == {"1": 1, "3": 1}


def test_original_sizes_are_counted_in_bins():
    event = shard_event("test", 0, 3, 1, {}, {}, [], [], [(512, 384), (515, 380), (300, 512)])
    split = summarize_events([event])["splits"]["test"]
    assert split["original_height_counts"] == {"288": 1, "512": 2}
    assert split["original_width_counts"] == {"368": 1, "384": 1, "512": 1}
    assert split["aspect_ratio_counts"] == {"0.70": 1, "0.75": 1, "1.70": 1}


def test_summary_points_to_rejected_jsonl_only_when_something_was_rejected():
    manifest = build_manifest(summarize_events(events()), {"output_dir": "/data/out"}, {})
    assert "listed in /data/out/rejected.jsonl" in format_summary(manifest)
    clean = build_manifest(summarize_events([input_event(0, 0)]), {"output_dir": "/d"}, {})
    assert "rejected.jsonl" not in format_summary(clean)
