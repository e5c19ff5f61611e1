"""The Beam graph of the job, and the launcher around it.

    Create([None]) -> Index (reads the 4 CSVs; one element -> every image entry)
      -> GroupByKey on (split, shard index)        # breaks fusion: shards fan out to workers
      -> DecodeResizeWrite (one call per shard: read, decode, resize, encode, write records)
    rejections (index + images)  -> rejected.jsonl
    shard stats + rejections     -> CombineGlobally -> stats file -> manifest.json (launcher)

Why shards are written by our own DoFn rather than `WriteToTFRecord(num_shards=N)`:
WriteToTFRecord groups the *encoded images* by a random shard key, and on the local
FnApiRunner a GroupByKey holds all of its input in memory, so peak memory would grow with
the dataset (about 2 GB of PNGs for MURA at 320 px). Here the GroupByKey carries only the
small index entries (a few hundred bytes each, which also makes it the Reshuffle that
breaks fusion after indexing), and each worker streams one image at a time into its
shard file. The assignment of images to shards, and their order inside a shard, is fixed
by a hash of the path, so every runner writes byte-identical shards and the exact shard
lengths TFDS needs come out of the pipeline without re-reading the files.

Reruns: a shard is written under its final name by one DoFn call; a retried bundle
rewrites the same file with the same records. manifest.json is written last of the data
files: its absence marks an incomplete run (data_report.html, drawn from the manifest and a
few records, follows it).

Progress: each shard call also leaves a small marker file; the launcher polls them and
prints one line per split (progress.py), on every runner.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_preprocess import manifest as manifest_lib
from beam_preprocess import outputs, progress, records, shards, split, transform
from beam_preprocess.errors import PreprocessError
from beam_preprocess.index import (
    KIND_IMAGE,
    ImageEntry,
    Rejection,
    csv_file_names,
    index_mura,
)
from beam_preprocess.options import (
    PreprocessConfig,
    beam_options,
    describe_runner,
    runner_name,
    validate_dataflow,
)
from beam_preprocess.report import DATA_REPORT_FILE, build_data_report
from bonify.dataflow import is_dataflow, is_dry_run
from bonify.vocabulary import (
    CLASS_NAMES,
    MANIFEST_FILE,
    MURA_FOLDERS,
    MURA_ROOT_NAME,
    REJECTED_FILE,
    SPLITS,
)

REJECTED_TAG = "rejected"
EVENTS_TAG = "events"

#: How many unlisted files manifest.json names as examples.
UNLISTED_EXAMPLES = 20


# --- file I/O at the edge (Beam FileSystems: local and gs://) ---------------------------


def read_bytes(path: str) -> bytes:
    """The whole file at `path` (never decompressed, whatever its extension)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        return handle.read()


def find_mura_dir(input_dir: str) -> str:
    """The MURA-v1.1 folder: input_dir/MURA-v1.1 if it has the CSVs, else input_dir itself."""
    input_dir = input_dir.rstrip("/") or "/"
    first_csv = csv_file_names()[0]
    for candidate in (outputs.join(input_dir, MURA_ROOT_NAME), input_dir):
        if FileSystems.exists(outputs.join(candidate, first_csv)):
            missing = [
                n for n in csv_file_names() if not FileSystems.exists(outputs.join(candidate, n))
            ]
            if missing:
                raise PreprocessError(
                    f"{candidate} has no {', '.join(missing)} (a MURA v1.1 folder has all 4 CSVs)"
                )
            return candidate
    # (gs:// has no folders to test for: a missing prefix just has no CSVs.)
    if not input_dir.startswith("gs://") and not FileSystems.exists(input_dir):
        raise PreprocessError(f"--input_dir {input_dir} does not exist")
    raise PreprocessError(
        f"--input_dir {input_dir} holds neither {MURA_ROOT_NAME}/{first_csv} nor {first_csv}: "
        f"give the folder that contains {MURA_ROOT_NAME}/ or that folder itself"
    )


def read_csv_texts(mura_dir: str) -> dict[str, str]:
    """CSV file name -> text, for the four MURA CSVs."""
    return {
        name: read_bytes(outputs.join(mura_dir, name)).decode("utf-8", errors="replace")
        for name in csv_file_names()
    }


def build_index(
    mura_dir: str,
    split_seed: int,
    val_fraction: float,
    shards_per_split: dict[str, int] | None,
    config=None,
) -> tuple[list[ImageEntry], list[Rejection], int, int, dict[str, int]]:
    """Index, split and (given shard counts, or computed from `config`) shard the dataset.

    Returns (entries, rejections, input_images, study_rows, shards_per_split).
    """
    index = index_mura(read_csv_texts(mura_dir))
    entries = split.assign_splits(index.entries, split_seed, val_fraction)
    if shards_per_split is None:
        shards_per_split = shards.shard_counts(
            entries, config.image_size, config.encoding, config.num_shards, config.target_shard_mb
        )
    entries = shards.assign_shards(entries, shards_per_split)
    return entries, index.rejections, index.input_images, index.study_rows, shards_per_split


def unlisted_files(mura_dir: str, listed: Iterable[str]) -> list[str]:
    """Files under MURA train/ and valid/ that no image row lists (relative MURA paths).

    They are not indexed: the CSVs are the source of truth (e.g. macOS ._image1.png
    copies). They are counted in manifest.json so that nothing is dropped silently.
    """
    listed_files = {path.split("/", 1)[1] for path in listed if "/" in path}
    prefix = mura_dir.rstrip("/") + "/"
    found: list[str] = []
    for folder in MURA_FOLDERS:
        pattern = outputs.join(mura_dir, f"{folder}/**")
        for meta in FileSystems.match([pattern])[0].metadata_list:
            relative = meta.path[len(prefix) :] if meta.path.startswith(prefix) else meta.path
            if relative not in listed_files and not relative.endswith("/"):
                found.append(relative)
    return sorted(found)


# --- the Beam graph ---------------------------------------------------------------------


class IndexFn(beam.DoFn):
    """One element in -> every image entry keyed by (split, shard index) out, plus the
    CSV-level rejections and the input counts (tagged outputs)."""

    def __init__(
        self, mura_dir: str, split_seed: int, val_fraction: float, shards_per_split: dict[str, int]
    ):
        self._mura_dir = mura_dir
        self._split_seed = split_seed
        self._val_fraction = val_fraction
        self._shards_per_split = dict(shards_per_split)

    def process(self, _):
        entries, rejections, input_images, study_rows, _ = build_index(
            self._mura_dir, self._split_seed, self._val_fraction, self._shards_per_split
        )
        yield beam.pvalue.TaggedOutput(
            EVENTS_TAG, manifest_lib.input_event(input_images, study_rows)
        )
        for rejection in rejections:
            yield beam.pvalue.TaggedOutput(REJECTED_TAG, rejection)
        for entry in entries:
            yield (entry.split, entry.shard_index), entry


class WriteShardFn(beam.DoFn):
    """(split, shard index), entries -> one shard file; emits its stats and rejections."""

    def __init__(
        self,
        mura_dir: str,
        output_dir: str,
        config: PreprocessConfig,
        shards_per_split: dict[str, int],
    ):
        self._mura_dir = mura_dir
        self._output_dir = output_dir
        self._image_size = config.image_size
        self._resize = config.resize
        self._encoding = config.encoding
        self._shards_per_split = dict(shards_per_split)
        self._progress_dir = outputs.join(output_dir, progress.PROGRESS_DIR)
        self._images = beam.metrics.Metrics.counter("bonify", "images_written")
        self._rejected = beam.metrics.Metrics.counter("bonify", "images_rejected")

    def setup(self):
        # Once per worker: pick the TFRecord writer (TensorFlow is imported only when no
        # C crc32c is installed; see records.shard_writer_factory).
        self._open_writer = records.shard_writer_factory()

    def _read(self, entry: ImageEntry) -> bytes:
        path = outputs.join(self._mura_dir, entry.relative_file)
        try:
            return read_bytes(path)
        except Exception as error:  # noqa: BLE001 - the file system decides the error type
            if not FileSystems.exists(path):
                raise transform.ImageRejected("missing_file", f"no file {path}") from None
            raise transform.ImageRejected(
                "unreadable_file", f"{type(error).__name__}: {error}"
            ) from None

    def process(self, keyed):
        (split_name, shard_index), entries = keyed
        file_name = shards.shard_file_name(
            split_name, shard_index, self._shards_per_split[split_name]
        )
        class_counts: Counter = Counter()
        region_counts: Counter = Counter()
        patients: set[str] = set()
        studies: Counter = Counter()
        original_sizes: list[tuple[int, int]] = []
        written = rejected_count = num_bytes = 0
        with self._open_writer(outputs.join(self._output_dir, file_name)) as writer:
            for entry in shards.order_in_shard(entries):
                try:
                    image = transform.process_image(
                        self._read(entry), self._image_size, self._resize, self._encoding
                    )
                except transform.ImageRejected as rejected:
                    self._rejected.inc()
                    rejected_count += 1
                    yield beam.pvalue.TaggedOutput(
                        REJECTED_TAG,
                        Rejection(
                            entry.path, rejected.reason, rejected.detail, KIND_IMAGE, entry.source
                        ),
                    )
                    continue
                record = records.serialize_record(
                    records.record_values(entry, image, self._encoding)
                )
                writer.write(record)
                written += 1
                num_bytes += len(record) + 16  # TFRecord framing: length, 2 CRCs
                class_counts[CLASS_NAMES[entry.label]] += 1
                region_counts[entry.region] += 1
                patients.add(entry.patient_id)
                studies[entry.study_id] += 1
                original_sizes.append((image.original_height, image.original_width))
                self._images.inc()
        # The launcher reports progress per split from these markers (see progress.py).
        marker = progress.shard_marker(split_name, written, rejected_count, time.time())
        marker_path = outputs.join(self._progress_dir, progress.marker_name(file_name))
        with FileSystems.create(marker_path) as handle:
            handle.write(json.dumps(marker).encode())
        yield manifest_lib.shard_event(
            split_name,
            shard_index,
            written,
            num_bytes,
            class_counts,
            region_counts,
            patients,
            studies,
            original_sizes,
        )


class StatsCombineFn(beam.CombineFn):
    """Merge stats events into one summary (see manifest.StatsAccumulator)."""

    def create_accumulator(self):
        return manifest_lib.StatsAccumulator()

    def add_input(self, accumulator, event):
        return accumulator.add(event)

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for other in accumulators:
            merged.merge(other)
        return merged

    def extract_output(self, accumulator):
        return accumulator.summary()


def build_pipeline(
    pipeline: beam.Pipeline,
    mura_dir: str,
    config: PreprocessConfig,
    shards_per_split: dict[str, int],
) -> None:
    """Add the job's transforms to `pipeline`."""
    indexed = (
        pipeline
        | "Start" >> beam.Create([None])
        | "Index"
        >> beam.ParDo(IndexFn(mura_dir, config.split_seed, config.val_fraction, shards_per_split))
        # The generator mixes tagged and keyed outputs; name the main output's type.
        .with_output_types(tuple[tuple[str, int], ImageEntry])
        .with_outputs(REJECTED_TAG, EVENTS_TAG, main="entries")
    )
    written = (
        indexed.entries
        | "GroupByShard" >> beam.GroupByKey()
        | "DecodeResizeWrite"
        >> beam.ParDo(
            WriteShardFn(mura_dir, config.output_dir, config, shards_per_split)
        ).with_outputs(REJECTED_TAG, main="shard_stats")
    )
    rejected = (indexed[REJECTED_TAG], written[REJECTED_TAG]) | "AllRejections" >> beam.Flatten()
    _ = (
        rejected
        | "RejectionToJson" >> beam.Map(manifest_lib.rejection_line)
        | "WriteRejected"
        >> beam.io.WriteToText(
            outputs.join(config.output_dir, REJECTED_FILE), shard_name_template="", num_shards=1
        )
    )
    _ = (
        (
            indexed[EVENTS_TAG],
            written.shard_stats,
            rejected | "RejectionEvent" >> beam.Map(manifest_lib.rejection_event),
        )
        | "AllEvents" >> beam.Flatten()
        | "Totals" >> beam.CombineGlobally(StatsCombineFn())
        | "TotalsToJson" >> beam.Map(json.dumps)
        | "WriteTotals"
        >> beam.io.WriteToText(
            outputs.join(config.output_dir, outputs.STATS_FILE),
            shard_name_template="",
            num_shards=1,
        )
    )


# --- the launcher -------------------------------------------------------------------------


_STARTED = time.monotonic()


def _progress(message: str) -> None:
    print(f"[bonify-preprocess {time.monotonic() - _STARTED:6.1f} s] {message}", flush=True)


def _marker_reader(progress_dir: str):
    """A function returning every progress marker written so far (name -> content)."""
    seen: dict[str, dict] = {}

    def read() -> dict[str, dict]:
        for meta in FileSystems.match([outputs.join(progress_dir, "*.json")])[0].metadata_list:
            name = meta.path.rsplit("/", 1)[-1]
            if name not in seen:
                # A marker still being written is read again at the next look.
                with contextlib.suppress(ValueError, OSError, BeamIOError):
                    seen[name] = json.loads(read_bytes(meta.path))
        return dict(seen)

    return read


def run_preprocess(config: PreprocessConfig, beam_args: list[str]) -> dict | None:
    """Run the whole job; returns the manifest (None for a Dataflow --dry_run).

    Raises PreprocessError for anything the user can fix, before any output is touched.
    """
    options = beam_options(beam_args)
    dataflow = is_dataflow(options)
    dry_run = is_dry_run(options)
    if dataflow:
        validate_dataflow(config, options)
    for flag, path in (("--input_dir", config.input_dir), ("--output_dir", config.output_dir)):
        try:
            FileSystems.get_filesystem(path)
        except ValueError as error:  # e.g. gs:// without apache-beam[gcp]
            raise PreprocessError(f"{flag} {path}: {error}") from None
    output_dir = config.output_dir.rstrip("/")
    try:
        mura_dir = find_mura_dir(config.input_dir)
        # Refuse (or plan to replace) a previous run's files before doing any work.
        replaced = [] if dry_run else outputs.check_output_dir(output_dir, config.overwrite)
    except BeamIOError as error:  # e.g. no access to the bucket, or no client for it
        raise PreprocessError(f"cannot access {error.exception_details}") from None
    started = time.time()

    _progress(f"indexing {mura_dir}")
    entries, rejections, input_images, study_rows, shards_per_split = build_index(
        mura_dir, config.split_seed, config.val_fraction, None, config
    )
    listed = [entry.path for entry in entries] + [
        r.path for r in rejections if r.kind == KIND_IMAGE
    ]
    unlisted = unlisted_files(mura_dir, listed)
    counts = Counter(entry.split for entry in entries)
    _progress(
        f"{input_images} image rows: {len(entries)} to process "
        f"({', '.join(f'{s} {counts[s]} in {shards_per_split[s]} shards' for s in SPLITS)}), "
        f"{sum(r.kind == KIND_IMAGE for r in rejections)} rejected by the index; "
        f"{len(unlisted)} files on disk not in the CSVs"
    )
    # Keep the job's own output readable: Beam logs every stage at INFO, and each local
    # SDK worker warns once about a missing semi_persistent_directory (harmless here).
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    logging.getLogger("apache_beam.runners.portability.local_job_service").addFilter(
        lambda record: "semi_persistent_directory" not in record.getMessage()
    )

    runner = runner_name(options)
    if dry_run:
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, mura_dir, config, shards_per_split)
        pipeline.run()
        _progress(f"dry run on {runner}: job built, nothing submitted or written")
        return None

    if replaced:
        _progress(
            f"--overwrite: removing {len(replaced)} files of the previous run in {output_dir}"
        )
        outputs.remove_owned_files(output_dir)
    if not FileSystems.exists(output_dir):
        FileSystems.mkdirs(output_dir)

    _progress(f"running the Beam pipeline on {describe_runner(options)}")
    split_progress = progress.SplitProgress(shards_per_split, counts, time.time())
    finish_progress = progress.watch_progress(
        _marker_reader(outputs.join(output_dir, progress.PROGRESS_DIR)), split_progress, _progress
    )
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, mura_dir, config, shards_per_split)
    try:
        result = pipeline.run()
        state = result.wait_until_finish()
    finally:
        finish_progress()
    outputs.remove_progress_markers(output_dir)
    if str(state).upper().rsplit(".", 1)[-1] not in ("DONE", "NONE"):
        raise PreprocessError(
            f"the Beam job ended in state {state}; rerun the same command with --overwrite"
        )

    stats_path = outputs.join(output_dir, outputs.STATS_FILE)
    summary = json.loads(read_bytes(stats_path).decode())
    if summary["input_images"] != summary["written"] + summary["rejected"]:
        raise RuntimeError(f"bug: counts do not add up: {summary}")

    shard_files = {
        split_name: [shards.shard_file_name(split_name, i, count) for i in range(count)]
        for split_name, count in shards_per_split.items()
    }
    shard_lengths = {s: summary["splits"][s]["shard_lengths"] for s in SPLITS}
    if any(shard_lengths.values()):
        records.write_tfds_metadata(
            output_dir,
            config.image_size,
            config.encoding,
            shard_lengths,
            {s: summary["splits"][s]["num_bytes"] for s in SPLITS},
        )
    else:
        _progress("no image was written: no shards and no TFDS metadata (see rejected.jsonl)")
    settings = {
        "input_dir": mura_dir,
        "output_dir": output_dir,
        "image_size": config.image_size,
        "resize": config.resize,
        "encoding": config.encoding,
        "channels": 1,
        "split_seed": config.split_seed,
        "val_fraction": config.val_fraction,
        "runner": runner,
        "wall_time_seconds": round(time.time() - started, 2),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "unlisted_files": len(unlisted),
        "unlisted_file_examples": unlisted[:UNLISTED_EXAMPLES],
    }
    manifest = manifest_lib.build_manifest(summary, settings, shard_files)
    # Written last: a manifest means every shard and file it names is complete.
    with FileSystems.create(outputs.join(output_dir, MANIFEST_FILE)) as handle:
        handle.write(json.dumps(manifest, indent=2).encode())
    FileSystems.delete([stats_path])
    _progress("done\n" + manifest_lib.format_summary(manifest) + f"\noutput: {output_dir}")
    _write_data_report(output_dir, manifest)
    return manifest


def _write_data_report(output_dir: str, manifest: dict) -> None:
    """data_report.html beside the shards. The data is complete once manifest.json is
    written, so a report that cannot be built (e.g. TensorFlow cannot read this gs://
    location) is one warning line with the command that rebuilds it, not a failed job."""
    import tensorflow as tf  # the report decodes its sample images with TensorFlow ops

    from bonify.cli import BonifyError
    from bonify.dataset import manifest_from_json

    path = outputs.join(output_dir, DATA_REPORT_FILE)
    try:
        page = build_data_report(
            output_dir, manifest_from_json(manifest, outputs.join(output_dir, MANIFEST_FILE))
        )
    except (BonifyError, OSError, tf.errors.OpError) as error:
        _progress(
            f"warning: data report not written ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}); "
            f"python -m beam_preprocess.inspect --output_dir {output_dir} --report writes it"
        )
        return
    with FileSystems.create(path) as handle:
        handle.write(page.encode("utf-8"))
    _progress(f"data report: {path}")
