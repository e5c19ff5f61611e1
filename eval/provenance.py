"""What an evaluation ran on, recorded in metrics.json's `source` and report.html's header:
when, with which bonify, the model (or predictions) file and the data's manifest, each with
its sha256 so a reader can tell two runs on the same files from runs on different ones."""

from __future__ import annotations

import datetime
import hashlib

import bonify
from bonify.dataset import read_manifest

#: Bytes read per chunk when hashing (models are hundreds of MB; memory stays flat).
_HASH_CHUNK_BYTES = 4 << 20


def file_sha256(path: str) -> str:
    """Hex sha256 of a local or gs:// file's bytes."""
    import tensorflow as tf

    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_provenance(data_dir: str) -> dict:
    """Path, sha256, image settings and split sizes of `data_dir`'s manifest.json (the one
    reader, bonify.dataset, hashes the same bytes it parses)."""
    manifest = read_manifest(data_dir)
    return {
        "path": manifest.path,
        "sha256": manifest.sha256,
        "image_size": manifest.image_size,
        "resize": manifest.resize,
        "encoding": manifest.encoding,
        "split_images": {split: info.images for split, info in manifest.splits.items()},
    }


def describe_source(
    predictions: str | None, model: str | None, data_dir: str | None, split: str, inference: str
) -> dict:
    """metrics.json's `source`: what was evaluated, when, by which bonify, with file hashes.

    predictions: the --predictions file (then model, data_dir, split and inference are not
    used); model/data_dir/split: what ran; inference: "in-process" or "beam".
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    from_model = predictions is None
    return {
        "predictions": predictions,
        "predictions_sha256": None if from_model else file_sha256(predictions),
        "model": model,
        "model_sha256": file_sha256(model) if from_model else None,
        "data_dir": data_dir if from_model else None,
        "manifest": manifest_provenance(data_dir) if from_model else None,
        "split": split if from_model else None,
        "inference": inference if from_model else None,
        "created_utc": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "bonify_version": bonify.__version__,
    }
