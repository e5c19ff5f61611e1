"""Patient-level splits: MURA train/ -> train or validation by patient; valid/ -> test.

Pure functions. The side of a train/ patient depends only on (patient id, split seed), via
sha256 (Python's hash() is salted per process), so every worker and every rerun agrees,
and all images of a patient land on the same side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from beam_preprocess.index import ImageEntry


def patient_fraction(patient_id: str, split_seed: int) -> float:
    """A uniform number in [0, 1) fixed by (patient id, split seed)."""
    digest = hashlib.sha256(f"{split_seed}:{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(folder: str, patient_id: str, split_seed: int, val_fraction: float) -> str:
    """The bonify split of an image in MURA folder `folder` ("train" or "valid").

    About `val_fraction` of the train/ patients go to "validation"; valid/ is "test".
    """
    if folder == "valid":
        return "test"
    if folder != "train":
        raise ValueError(f"unknown MURA folder {folder!r}")
    return "validation" if patient_fraction(patient_id, split_seed) < val_fraction else "train"


def assign_splits(
    entries: Iterable[ImageEntry], split_seed: int, val_fraction: float
) -> list[ImageEntry]:
    """Entries with their `split` field set."""
    return [
        entry._replace(split=split_of(entry.folder, entry.patient_id, split_seed, val_fraction))
        for entry in entries
    ]


def patients_in_multiple_splits(entries: Iterable[ImageEntry]) -> set[str]:
    """Patient ids that appear in more than one split (must be empty)."""
    splits_of: dict[str, set[str]] = {}
    for entry in entries:
        splits_of.setdefault(entry.patient_id, set()).add(entry.split)
    return {patient for patient, splits in splits_of.items() if len(splits) > 1}
