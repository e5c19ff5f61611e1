"""Reading the Beam job's output folder, the contract between the stages: its manifest.json
and the shard files of a split. Every stage that reads shards uses these two functions.

Errors are BonifyError (each stage's CLI turns them into one line and exit code 2) and name
the folder or file.
"""

from __future__ import annotations

import json

from bonify.cli import BonifyError
from bonify.vocabulary import MANIFEST_FILE, shard_pattern


def read_manifest(data_dir: str) -> dict:
    """manifest.json of `data_dir` (local or gs://), checked to hold an integer image_size
    and a mapping of splits."""
    import tensorflow as tf

    if not tf.io.gfile.isdir(data_dir):
        raise BonifyError(
            f"--data_dir {data_dir}: no such directory, so no {MANIFEST_FILE} "
            "(run beam_preprocess first)"
        )
    path = f"{data_dir.rstrip('/')}/{MANIFEST_FILE}"
    if not tf.io.gfile.exists(path):
        raise BonifyError(f"--data_dir {data_dir}: no {MANIFEST_FILE} (run beam_preprocess first)")
    try:
        with tf.io.gfile.GFile(path) as handle:
            manifest = json.load(handle)
        int(manifest["image_size"])
        if not isinstance(manifest["splits"], dict):
            raise TypeError("splits is not a mapping")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise BonifyError(
            f"{path}: not a valid manifest ({type(error).__name__}: {error})"
        ) from None
    return manifest


def split_files(data_dir: str, split: str) -> list[str]:
    """The sorted shard files of `split` in `data_dir` (at least one)."""
    import tensorflow as tf

    pattern = f"{data_dir.rstrip('/')}/{shard_pattern(split)}"
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise BonifyError(f"--data_dir {data_dir}: split {split!r} has no shards ({pattern})")
    return files
