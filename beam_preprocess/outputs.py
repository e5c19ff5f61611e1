"""The files the job owns in --output_dir: finding them, refusing to mix runs, removing them.

Only these names are ever deleted (by --overwrite): the shards of the three splits,
manifest.json, rejected.jsonl, data_report.html, the TFDS metadata files, the job's
temporary stats file and progress markers, and Beam's temporary folders for the two text
outputs. Anything else in OUT is left alone.
"""

from __future__ import annotations

from apache_beam.io.filesystems import FileSystems

from beam_preprocess.errors import PreprocessError
from beam_preprocess.progress import PROGRESS_DIR
from beam_preprocess.records import TFDS_METADATA_FILES
from beam_preprocess.report import DATA_REPORT_FILE
from bonify.vocabulary import MANIFEST_FILE, REJECTED_FILE, SPLITS, shard_pattern

#: Totals written by the pipeline, turned into manifest.json by the launcher, then deleted.
STATS_FILE = "_bonify_preprocess_stats.json"


def join(directory: str, name: str) -> str:
    """directory/name for local and gs:// paths."""
    return FileSystems.join(directory, name)


def _matches(pattern: str) -> list[str]:
    return [meta.path for meta in FileSystems.match([pattern])[0].metadata_list]


def existing_shards(output_dir: str) -> list[str]:
    """Shard files of any split already in output_dir."""
    found: list[str] = []
    for split in SPLITS:
        found.extend(_matches(join(output_dir, shard_pattern(split))))
    return sorted(found)


def owned_files(output_dir: str) -> list[str]:
    """Every file of a previous run of this job in output_dir (manifest.json first)."""
    named = [MANIFEST_FILE, DATA_REPORT_FILE, REJECTED_FILE, STATS_FILE, *TFDS_METADATA_FILES]
    found = [join(output_dir, name) for name in named if FileSystems.exists(join(output_dir, name))]
    found.extend(existing_shards(output_dir))
    for name in (REJECTED_FILE, STATS_FILE):
        # Beam's WriteToText stages into beam-temp-<name>-<uuid>/ and removes it at the end.
        found.extend(_matches(join(output_dir, f"beam-temp-{name}-*")))
    found.extend(progress_markers(output_dir))
    return found


def progress_markers(output_dir: str) -> list[str]:
    """The per-shard progress markers of a run (see progress.py)."""
    return _matches(join(join(output_dir, PROGRESS_DIR), "*"))


def remove_progress_markers(output_dir: str) -> None:
    """Delete the progress markers and, on a local disk, their folder."""
    markers = progress_markers(output_dir)
    if markers:
        FileSystems.delete(markers)
    folder = join(output_dir, PROGRESS_DIR)
    if FileSystems.exists(folder):  # a local folder (gs:// has none once its files are gone)
        FileSystems.delete([folder])


def check_output_dir(output_dir: str, overwrite: bool) -> list[str]:
    """The files a run would replace; PreprocessError if there are some and not `overwrite`."""
    found = owned_files(output_dir)
    if found and not overwrite:
        shards = len(existing_shards(output_dir))
        if FileSystems.exists(join(output_dir, MANIFEST_FILE)):
            raise PreprocessError(
                f"{output_dir} already holds a preprocessing run ({MANIFEST_FILE}, {shards} shards); "
                "rerun with --overwrite to replace it, or choose another --output_dir"
            )
        raise PreprocessError(
            f"{output_dir} holds files of an incomplete previous run ({shards} shards, no {MANIFEST_FILE}); "
            "rerun with --overwrite"
        )
    return found


def remove_owned_files(output_dir: str) -> int:
    """Delete every file of a previous run (manifest.json first, so that a kill during the
    cleanup leaves an "incomplete run", never a manifest describing missing shards)."""
    found = owned_files(output_dir)
    if found:
        FileSystems.delete(found)
    remove_progress_markers(output_dir)
    return len(found)
