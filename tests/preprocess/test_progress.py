"""Progress per split, from the per-shard markers the workers leave."""

from __future__ import annotations

from beam_preprocess.progress import SplitProgress, shard_marker, watch_progress

STARTED = 1000.0


def _progress() -> SplitProgress:
    return SplitProgress(
        {"train": 4, "validation": 1, "test": 2}, {"train": 40, "test": 20}, STARTED
    )


def test_a_split_in_progress_is_one_line_with_shards_and_images_done():
    markers = {"t0": shard_marker("train", 9, 1, STARTED + 5)}
    assert _progress().update(markers) == ["train: 1 of 4 shards written, 10 of 40 images (25%)"]


def test_a_finished_split_says_so_once_with_its_images_rejects_and_seconds():
    progress = _progress()
    markers = {
        "a": shard_marker("test", 9, 0, STARTED + 3),
        "b": shard_marker("test", 10, 1, STARTED + 7.5),
    }
    assert progress.update(markers) == ["test: all 2 shards written: 19 images, 1 rejected (7.5 s)"]
    assert progress.update(markers) == []  # nothing changed, nothing printed


def test_only_splits_whose_shard_count_changed_are_printed():
    progress = _progress()
    markers = {"t0": shard_marker("train", 10, 0, STARTED + 1)}
    progress.update(markers)
    markers["v0"] = shard_marker("validation", 3, 0, STARTED + 2)
    assert progress.update(markers) == ["validation: all 1 shards written: 3 images (2.0 s)"]


def test_finish_reports_the_final_state_after_the_pipeline():
    markers: dict = {}
    lines: list[str] = []
    finish = watch_progress(lambda: markers, _progress(), lines.append, poll_seconds=3600)
    markers["t0"] = shard_marker("test", 5, 0, STARTED + 1)
    markers["t1"] = shard_marker("test", 5, 0, STARTED + 2)
    finish()
    assert lines == ["test: all 2 shards written: 10 images (2.0 s)"]
