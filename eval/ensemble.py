"""Ensembles: several models' predictions of the same images, averaged and evaluated as one
model, with each member's headline metrics beside the ensemble's.

Members come from several `--model`s (one inference pass, `eval.predict` or
`eval.beam_inference`) or several `--predictions` files; they must be predictions of the
same images with the same labels (model members must also take the same input, checked in
`eval.options`). The ensemble's probabilities are the plain mean of the members' (the same
rule as serving's ensembles, `serve.core`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eval.errors import EvalError
from eval.predictions import Predictions, make_predictions

#: The headline metrics reported per member: (metrics.json key of the member, getter).
MEMBER_METRICS = (
    ("top1_accuracy", lambda m: m["top1_accuracy"]),
    ("cohen_kappa", lambda m: m["cohen_kappa"]),
    ("study_kappa", lambda m: m["study_level"]["kappa"]),
    ("study_auroc", lambda m: m["study_level"]["auroc"]),
)


def members_mismatch(first: Predictions, other: Predictions) -> str | None:
    """None when both hold the same images (paths, in the same order) with the same labels;
    else what differs, in a few words naming the first differing image."""
    if len(first) != len(other):
        return f"{len(other)} images instead of {len(first)}"
    differing = np.flatnonzero(first.image_paths != other.image_paths)
    if len(differing):
        index = differing[0]
        return (
            f"image {index + 1} (in path order) is {other.image_paths[index]} instead of "
            f"{first.image_paths[index]}"
        )
    differing = np.flatnonzero(first.true_labels != other.true_labels)
    if len(differing):
        index = differing[0]
        return (
            f"{other.image_paths[index]} has true_label {other.true_labels[index]} instead of "
            f"{first.true_labels[index]}"
        )
    return None


def check_members(members: Sequence[Predictions], names: Sequence[str], flag: str) -> None:
    """EvalError (one line naming both files and what differs) unless every member holds the
    first one's images and labels. members: sorted by path; names: their files."""
    for member, name in zip(members[1:], names[1:], strict=True):
        mismatch = members_mismatch(members[0], member)
        if mismatch is not None:
            raise EvalError(
                f"{flag} {name} and {flag} {names[0]} are not predictions of the same images: "
                f"{mismatch}; an ensemble averages predictions of the same images"
            )


def average_members(members: Sequence[Predictions], source: str) -> Predictions:
    """One Predictions whose probabilities are the mean of the members' (same rows)."""
    first = members[0]
    if len(members) == 1:
        return first
    probs = np.mean([member.probs for member in members], axis=0)
    return make_predictions(
        list(first.image_paths),
        first.true_labels,
        probs,
        patient_ids=list(first.patient_ids),
        study_ids=list(first.study_ids),
        regions=list(first.regions),
        source=source,
    )


def member_rows(
    members: Sequence[Predictions], names: Sequence[str], kind: str, seed: int = 0
) -> list[dict]:
    """metrics.json's `members`: per member its file (`kind`: "model" or "predictions"), its
    sha256 and the headline metrics (no bootstrap)."""
    from eval.metrics import compute_metrics
    from eval.provenance import file_sha256

    rows = []
    for member, name in zip(members, names, strict=True):
        metrics, _ = compute_metrics(member, 0, seed)
        rows.append(
            {
                kind: name,
                "sha256": file_sha256(name),
                **{key: get(metrics) for key, get in MEMBER_METRICS},
            }
        )
    return rows
