"""From per-image probabilities to what a reader asks: region, normal/abnormal, per image and
per study. Plain functions over NumPy arrays (no TF, no files).

An image's P(abnormal) is the mass of the 7 abnormal classes; its region is the region with
the most mass (both of its classes). A study is called abnormal when the mean P(abnormal) of
its images reaches the model card's operating threshold (P >= threshold), as in the MURA
literature's study-level reading; its region is the majority of its images' regions.
"""

from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np

from bonify.study_metrics import abnormal_probability
from bonify.vocabulary import CLASS_NAMES, NUM_REGIONS, REGIONS, parse_study_path

#: Indexed by `abnormal` (0 or 1), like the study folder suffixes.
STATUSES = ("normal", "abnormal")

#: Columns of --study_output, in order.
STUDY_COLUMNS = (
    "study",
    "patient_id",
    "images",
    "region",
    "p_abnormal",
    "threshold",
    "verdict",
    "true_verdict",
)


def region_probabilities(probs: np.ndarray) -> np.ndarray:
    """float64 [N, 7]: each region's mass (its normal plus its abnormal class)."""
    probs = np.asarray(probs, dtype=np.float64)
    return probs.reshape(len(probs), NUM_REGIONS, 2).sum(axis=2)


def status_of(p_abnormal: float, threshold: float) -> str:
    """ "abnormal" when p_abnormal >= threshold, else "normal"."""
    return STATUSES[int(p_abnormal >= threshold)]


@dataclasses.dataclass(frozen=True)
class ImageVerdict:
    """One image's answer: region, status, the probability of that status, the top 3 classes."""

    path: str
    region: str
    p_abnormal: float
    status: str
    confidence: float
    top3: tuple[tuple[str, float], ...]


def image_verdicts(paths: list[str], probs: np.ndarray, threshold: float) -> list[ImageVerdict]:
    """One ImageVerdict per row of probs (float [N, 14], CLASS_NAMES order)."""
    probs = np.asarray(probs, dtype=np.float64)
    p_abnormal = abnormal_probability(probs)
    regions = region_probabilities(probs).argmax(axis=1)
    verdicts = []
    for path, row, p, region in zip(paths, probs, p_abnormal, regions, strict=True):
        status = status_of(p, threshold)
        top = np.argsort(-row, kind="stable")[:3]
        verdicts.append(
            ImageVerdict(
                path=path,
                region=REGIONS[region],
                p_abnormal=float(p),
                status=status,
                confidence=float(p if status == "abnormal" else 1.0 - p),
                top3=tuple((CLASS_NAMES[index], float(row[index])) for index in top),
            )
        )
    return verdicts


def study_of(path: str, dicom_ids: dict | None) -> tuple[str, str]:
    """(study, patient) of an image: from its MURA path, else from the DICOM's
    StudyInstanceUID/PatientID, else the folder that holds it (patient unknown, "")."""
    try:
        key = parse_study_path(path)
        return key.study_id, key.patient_id
    except ValueError:
        pass
    if dicom_ids and dicom_ids.get("study"):
        return str(dicom_ids["study"]), str(dicom_ids.get("patient") or "")
    return os.path.dirname(path) or ".", ""


def _true_verdict(paths: list[str]) -> str:
    try:
        return STATUSES[parse_study_path(paths[0]).abnormal_from_folder]
    except ValueError:
        return ""


def study_rows(
    paths: list[str], studies: list[tuple[str, str]], probs: np.ndarray, threshold: float
) -> list[dict]:
    """One STUDY_COLUMNS dict per study, in order of first appearance.

    studies: (study, patient) per image, as `study_of` gives. true_verdict is the study
    folder's suffix for MURA paths, else "".
    """
    probs = np.asarray(probs, dtype=np.float64)
    p_abnormal = abnormal_probability(probs)
    region_mass = region_probabilities(probs)
    members: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    for index, study in enumerate(studies):
        members[study].append(index)
    rows = []
    for (study, patient), indices in members.items():
        votes = np.bincount(region_mass[indices].argmax(axis=1), minlength=NUM_REGIONS)
        # A tie between regions goes to the one with more total mass over the study's images.
        tied = np.nonzero(votes == votes.max())[0]
        region = tied[region_mass[indices][:, tied].sum(axis=0).argmax()]
        mean_p = float(p_abnormal[indices].mean())
        rows.append(
            {
                "study": study,
                "patient_id": patient,
                "images": len(indices),
                "region": REGIONS[region],
                "p_abnormal": mean_p,
                "threshold": threshold,
                "verdict": status_of(mean_p, threshold),
                "true_verdict": _true_verdict([paths[index] for index in indices]),
            }
        )
    return rows
