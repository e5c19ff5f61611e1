"""How many shards each split gets, and which shard each image goes to. Pure functions."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable

from beam_preprocess.index import ImageEntry
from bonify.vocabulary import SPLITS, shard_prefix

#: Never fewer shards per split than this (unless the split has fewer images): tf.data
#: auto-sharding gives each worker × input pipeline whole files, and reading in parallel
#: wants several files per reader (at least workers × 8-16 files in all).
MIN_SHARDS_PER_SPLIT = 16

#: Default target size of one shard when neither --num_shards nor --target_shard_mb is given.
DEFAULT_TARGET_SHARD_MB = 100.0

#: Encoded bytes per pixel of a 1-channel image, measured on X-ray-like 320x320 images
#: (PNG ~53 KiB, JPEG q95 ~29 KiB, raw 100 KiB per image), plus the record's other
#: features (~300 bytes). Only used to pick a shard count.
BYTES_PER_PIXEL = {"png": 0.53, "jpeg": 0.29, "raw": 1.0}
RECORD_OVERHEAD_BYTES = 300


def estimated_record_bytes(image_size: int, encoding: str) -> float:
    """Estimated size in bytes of one serialized record."""
    return image_size * image_size * BYTES_PER_PIXEL[encoding] + RECORD_OVERHEAD_BYTES


def num_shards_for(
    num_images: int,
    image_size: int,
    encoding: str,
    num_shards: int | None = None,
    target_shard_mb: float | None = None,
) -> int:
    """Shards for a split of `num_images` images.

    `num_shards` wins when given; otherwise enough shards for about `target_shard_mb` MB
    each (default DEFAULT_TARGET_SHARD_MB). At least MIN_SHARDS_PER_SPLIT, but never more
    shards than images (a split with fewer images gets one image per shard; an empty
    split gets no shards).
    """
    if num_images <= 0:
        return 0
    if num_shards is None:
        target_bytes = (target_shard_mb or DEFAULT_TARGET_SHARD_MB) * 1e6
        wanted = math.ceil(num_images * estimated_record_bytes(image_size, encoding) / target_bytes)
        num_shards = max(MIN_SHARDS_PER_SPLIT, wanted)
    return min(num_shards, num_images)


def shard_counts(
    entries: Iterable[ImageEntry],
    image_size: int,
    encoding: str,
    num_shards: int | None = None,
    target_shard_mb: float | None = None,
) -> dict[str, int]:
    """Split name -> number of shards, for entries with `split` set (all SPLITS present)."""
    images = Counter(entry.split for entry in entries)
    return {
        split: num_shards_for(images[split], image_size, encoding, num_shards, target_shard_mb)
        for split in SPLITS
    }


def _shuffle_key(path: str) -> bytes:
    return hashlib.sha256(path.encode()).digest()


def assign_shards(
    entries: Iterable[ImageEntry], shards_per_split: dict[str, int]
) -> list[ImageEntry]:
    """Entries with `shard_index` set, ordered by a hash of their path within each split.

    Image i of a split in hash order goes to shard i % N: shards differ by at most one
    image, the studies and patients are mixed across shards, and the assignment (and the
    order inside a shard) is the same on every run and runner.
    """
    by_split: dict[str, list[ImageEntry]] = {}
    for entry in entries:
        by_split.setdefault(entry.split, []).append(entry)
    assigned: list[ImageEntry] = []
    for split, split_entries in by_split.items():
        split_entries.sort(key=lambda entry: _shuffle_key(entry.path))
        count = shards_per_split[split]
        assigned.extend(
            entry._replace(shard_index=position % count)
            for position, entry in enumerate(split_entries)
        )
    return assigned


def order_in_shard(entries: Iterable[ImageEntry]) -> list[ImageEntry]:
    """The fixed order of records inside one shard (whatever order they arrive in)."""
    return sorted(entries, key=lambda entry: _shuffle_key(entry.path))


def shard_file_name(split: str, shard_index: int, num_shards: int) -> str:
    """TFDS shard name, e.g. "mura-train.tfrecord-00003-of-00016"."""
    return f"{shard_prefix(split)}-{shard_index:05d}-of-{num_shards:05d}"
