"""manifest.json and rejected.jsonl: pure functions from counts to JSON.

The pipeline turns every written shard and every rejection into a small "event" dict;
`StatsAccumulator` (used by a Beam CombineFn in pipeline.py) merges them into one summary;
`build_manifest` adds the job's settings. Keys the trainer and evaluator read are stable:
`splits.<split>.images`, `splits.<split>.class_counts`, `splits.<split>.region_counts`,
`image_size`, `encoding`, `schema_version` (see docs/PREPROCESS.md for every key).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping

import bonify
from beam_preprocess.index import KIND_IMAGE, Rejection
from bonify.vocabulary import CLASS_NAMES, REGIONS, REJECTED_FILE, SCHEMA_VERSION, SPLITS

#: Original image heights and widths are counted in bins of this many pixels
#: ("512" counts 512..527 px), aspect ratios (width / height) in bins of ASPECT_RATIO_BIN.
ORIGINAL_SIZE_BIN_PX = 16
ASPECT_RATIO_BIN = 0.05

EVENT_INPUT = "input"
EVENT_SHARD = "shard"
EVENT_REJECTION = "rejection"


def input_event(input_images: int, study_rows: int) -> dict:
    """Event: the CSVs had this many image rows and label rows."""
    return {"type": EVENT_INPUT, "input_images": input_images, "study_rows": study_rows}


def rejection_event(rejection: Rejection) -> dict:
    """Event: one rejection (only its kind and reason are counted)."""
    return {"type": EVENT_REJECTION, "kind": rejection.kind, "reason": rejection.reason}


def size_bins(height: int, width: int) -> tuple[str, str, str]:
    """The (height, width, aspect ratio) bins of an original image size, as JSON keys."""
    return (
        str(height // ORIGINAL_SIZE_BIN_PX * ORIGINAL_SIZE_BIN_PX),
        str(width // ORIGINAL_SIZE_BIN_PX * ORIGINAL_SIZE_BIN_PX),
        f"{int(width / height / ASPECT_RATIO_BIN + 1e-9) * ASPECT_RATIO_BIN:.2f}",
    )


def _sorted_numeric(counts: Mapping[str, int]) -> dict[str, int]:
    return {key: counts[key] for key in sorted(counts, key=float)}


def shard_event(
    split: str,
    shard_index: int,
    written: int,
    num_bytes: int,
    class_counts: Mapping[str, int],
    region_counts: Mapping[str, int],
    patients: Iterable[str],
    studies: Iterable[str] | Mapping[str, int],
    original_sizes: Iterable[tuple[int, int]] = (),
) -> dict:
    """Event: one shard file was written with `written` records (`num_bytes` bytes).

    studies: the study id of each record (or study id -> records); original_sizes: the
    (height, width) in pixels of each record's source image.
    """
    heights: Counter = Counter()
    widths: Counter = Counter()
    aspect_ratios: Counter = Counter()
    for height, width in original_sizes:
        height_bin, width_bin, aspect_bin = size_bins(height, width)
        heights[height_bin] += 1
        widths[width_bin] += 1
        aspect_ratios[aspect_bin] += 1
    return {
        "type": EVENT_SHARD,
        "split": split,
        "shard_index": shard_index,
        "written": written,
        "num_bytes": num_bytes,
        "class_counts": dict(class_counts),
        "region_counts": dict(region_counts),
        "patients": sorted(set(patients)),
        "studies": dict(sorted(Counter(studies).items())),
        "original_heights": dict(heights),
        "original_widths": dict(widths),
        "aspect_ratios": dict(aspect_ratios),
    }


class StatsAccumulator:
    """Mergeable totals of events. Patients are kept as sets to count them distinctly and
    to check that no patient is in two splits; studies as study id -> images (a study's
    images are spread over several shards)."""

    def __init__(self) -> None:
        self.input_images = 0
        self.study_rows = 0
        self.rejected_by_reason: Counter = Counter()
        self.rejected_study_rows_by_reason: Counter = Counter()
        self.class_counts = {split: Counter() for split in SPLITS}
        self.region_counts = {split: Counter() for split in SPLITS}
        self.patients = {split: set() for split in SPLITS}
        self.studies = {split: Counter() for split in SPLITS}
        self.original_heights = {split: Counter() for split in SPLITS}
        self.original_widths = {split: Counter() for split in SPLITS}
        self.aspect_ratios = {split: Counter() for split in SPLITS}
        self.shard_lengths: dict[str, dict[int, int]] = {split: {} for split in SPLITS}
        self.num_bytes: Counter = Counter()

    def add(self, event: Mapping) -> StatsAccumulator:
        kind = event["type"]
        if kind == EVENT_INPUT:
            self.input_images += event["input_images"]
            self.study_rows += event["study_rows"]
        elif kind == EVENT_REJECTION:
            target = (
                self.rejected_by_reason
                if event["kind"] == KIND_IMAGE
                else self.rejected_study_rows_by_reason
            )
            target[event["reason"]] += 1
        elif kind == EVENT_SHARD:
            split = event["split"]
            self.class_counts[split].update(event["class_counts"])
            self.region_counts[split].update(event["region_counts"])
            self.patients[split].update(event["patients"])
            self.studies[split].update(event["studies"])
            self.original_heights[split].update(event.get("original_heights", {}))
            self.original_widths[split].update(event.get("original_widths", {}))
            self.aspect_ratios[split].update(event.get("aspect_ratios", {}))
            self.shard_lengths[split][event["shard_index"]] = event["written"]
            self.num_bytes[split] += event["num_bytes"]
        else:
            raise ValueError(f"unknown stats event type {kind!r}")
        return self

    def merge(self, other: StatsAccumulator) -> StatsAccumulator:
        self.input_images += other.input_images
        self.study_rows += other.study_rows
        self.rejected_by_reason.update(other.rejected_by_reason)
        self.rejected_study_rows_by_reason.update(other.rejected_study_rows_by_reason)
        for split in SPLITS:
            self.class_counts[split].update(other.class_counts[split])
            self.region_counts[split].update(other.region_counts[split])
            self.patients[split] |= other.patients[split]
            self.studies[split].update(other.studies[split])
            self.original_heights[split].update(other.original_heights[split])
            self.original_widths[split].update(other.original_widths[split])
            self.aspect_ratios[split].update(other.aspect_ratios[split])
            self.shard_lengths[split].update(other.shard_lengths[split])
        self.num_bytes.update(other.num_bytes)
        return self

    def summary(self) -> dict:
        """JSON-able totals (the counting part of manifest.json)."""
        seen: Counter = Counter()
        for split in SPLITS:
            seen.update(self.patients[split])
        splits = {}
        for split in SPLITS:
            lengths = self.shard_lengths[split]
            splits[split] = {
                "images": sum(self.class_counts[split].values()),
                "studies": len(self.studies[split]),
                "patients": len(self.patients[split]),
                "class_counts": {name: self.class_counts[split][name] for name in CLASS_NAMES},
                "region_counts": {name: self.region_counts[split][name] for name in REGIONS},
                "num_shards": len(lengths),
                "shard_lengths": [lengths[index] for index in sorted(lengths)],
                "num_bytes": self.num_bytes[split],
                # The data's shape, for data_report.html: studies by their number of
                # images ("views"), original sizes in ORIGINAL_SIZE_BIN_PX bins, and
                # aspect ratios (width / height) in ASPECT_RATIO_BIN bins.
                "views_per_study": _sorted_numeric(Counter(map(str, self.studies[split].values()))),
                "original_height_counts": _sorted_numeric(self.original_heights[split]),
                "original_width_counts": _sorted_numeric(self.original_widths[split]),
                "aspect_ratio_counts": _sorted_numeric(self.aspect_ratios[split]),
            }
        written = sum(split["images"] for split in splits.values())
        return {
            "input_images": self.input_images,
            "written": written,
            "rejected": sum(self.rejected_by_reason.values()),
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
            "study_rows": self.study_rows,
            "rejected_study_rows": sum(self.rejected_study_rows_by_reason.values()),
            "rejected_study_rows_by_reason": dict(
                sorted(self.rejected_study_rows_by_reason.items())
            ),
            "patients_in_multiple_splits": sum(1 for count in seen.values() if count > 1),
            "splits": splits,
        }


def summarize_events(events: Iterable[Mapping]) -> dict:
    """Summary of events without Beam (tests, and a check of the combiner)."""
    accumulator = StatsAccumulator()
    for event in events:
        accumulator.add(event)
    return accumulator.summary()


def build_manifest(
    summary: Mapping, settings: Mapping, shard_files: Mapping[str, list[str]]
) -> dict:
    """manifest.json content: the settings, versions, the summary and each split's files.

    Args:
      summary: StatsAccumulator.summary().
      settings: input_dir, output_dir, image_size, resize, encoding, split_seed,
        val_fraction, runner, wall_time_seconds, unlisted_files, ... (copied as they are).
      shard_files: split -> shard file names in shard order.
    """
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "bonify_version": bonify.__version__,
        **settings,
        **{key: value for key, value in summary.items() if key != "splits"},
        "class_names": list(CLASS_NAMES),
        "regions": list(REGIONS),
        "splits": {},
    }
    for split in SPLITS:
        manifest["splits"][split] = {
            **summary["splits"][split],
            "files": list(shard_files.get(split, [])),
        }
    return manifest


def rejection_line(rejection: Rejection) -> str:
    """One rejected.jsonl line (no newline): path, reason, detail, kind, source."""
    return json.dumps(rejection.to_json_dict(), sort_keys=False)


def format_summary(manifest: Mapping) -> str:
    """The human-readable end-of-job summary."""
    lines = [f"{'split':<11}{'images':>8}{'studies':>9}{'patients':>10}{'shards':>8}"]
    for split in SPLITS:
        entry = manifest["splits"][split]
        lines.append(
            f"{split:<11}{entry['images']:>8}{entry['studies']:>9}{entry['patients']:>10}{entry['num_shards']:>8}"
        )
    lines.append(
        f"input_images = written + rejected: {manifest['input_images']} = "
        f"{manifest['written']} + {manifest['rejected']}"
    )
    for reason, count in manifest["rejected_by_reason"].items():
        lines.append(f"  rejected {reason}: {count}")
    if manifest["rejected_study_rows"]:
        lines.append(f"rejected label rows: {manifest['rejected_study_rows']}")
        for reason, count in manifest["rejected_study_rows_by_reason"].items():
            lines.append(f"  rejected label rows {reason}: {count}")
    if manifest.get("unlisted_files"):
        lines.append(
            f"files on disk not listed in the CSVs (not indexed): {manifest['unlisted_files']}"
        )
    lines.append(f"patients in more than one split: {manifest['patients_in_multiple_splits']}")
    if manifest["rejected"] or manifest["rejected_study_rows"]:
        output_dir = str(manifest.get("output_dir", "")).rstrip("/")
        rejected_path = f"{output_dir}/{REJECTED_FILE}" if output_dir else REJECTED_FILE
        lines.append(f"every rejection (path, reason, detail) is listed in {rejected_path}")
    return "\n".join(lines)
