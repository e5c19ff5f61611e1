"""`--compare OTHER`: is this evaluation better than another one on the same images?

A paired bootstrap over patients: each resample draws patients with replacement and weighs
both runs' images and studies by the same draw, so the spread of the difference (this -
other) reflects only where the two models disagree, not which cases happened to be drawn.
`comparison` {metric: {delta, ci95, significant, this, other, undefined_resamples}} for
top-1, 14-class kappa, study kappa (mean, 0.5) and study AUROC; significant only when the
95 % interval excludes 0. `compared_with` says against what, with how many resamples.
"""

from __future__ import annotations

import numpy as np

from bonify import files
from eval.ensemble import members_mismatch
from eval.errors import EvalError
from eval.metrics import (
    CONFIDENCE_LEVEL,
    patient_resamples,
    percentile_interval,
    study_table,
    weighted_headline,
)
from eval.predictions import Predictions, read_predictions

#: The evaluation folder's predictions file, which a folder given to --compare must hold.
PREDICTIONS_FILE = "predictions.csv"
#: The compared metrics, in metrics.json order.
COMPARED_METRICS = ("top1_accuracy", "cohen_kappa", "study_kappa", "study_auroc")


def other_predictions_file(path: str) -> str:
    """The predictions CSV --compare means: the file itself, or a folder's predictions.csv;
    EvalError naming the path otherwise. TensorFlow-free for local paths."""
    if files.isdir(path):
        candidate = files.join(path, PREDICTIONS_FILE)
        if not files.isfile(candidate):
            raise EvalError(
                f"--compare {path}: a folder without {PREDICTIONS_FILE} (give a predictions CSV "
                "or a bonify-eval output folder)"
            )
        return candidate
    if not files.isfile(path):
        raise EvalError(f"--compare {path}: no such file or folder")
    return path


def read_other(path: str, this: Predictions) -> Predictions:
    """The other run's predictions, sorted by path; EvalError (one line) unless they are of
    the same images (count, paths, labels, studies) as `this` (sorted by path)."""
    other = read_predictions(other_predictions_file(path)).sorted_by_path()
    mismatch = members_mismatch(this, other)
    if mismatch is None and not (this.study_ids == other.study_ids).all():
        index = int(np.flatnonzero(this.study_ids != other.study_ids)[0])
        mismatch = (
            f"{other.image_paths[index]} is in study {other.study_ids[index]} instead of "
            f"{this.study_ids[index]}"
        )
    if mismatch is None and not (this.patient_ids == other.patient_ids).all():
        index = int(np.flatnonzero(this.patient_ids != other.patient_ids)[0])
        mismatch = (
            f"{other.image_paths[index]} is of patient {other.patient_ids[index]} instead of "
            f"{this.patient_ids[index]}"
        )
    if mismatch is not None:
        raise EvalError(
            f"--compare {path}: not predictions of the images evaluated here: {mismatch}; a "
            "paired comparison needs the same images"
        )
    return other


def paired_bootstrap(this: Predictions, other: Predictions, resamples: int, seed: int) -> dict:
    """`comparison` of this - other (same images, both sorted by path): per metric the
    point difference, its CONFIDENCE_LEVEL interval over `resamples` patient resamples
    (None without resamples or when undefined in every one), and whether it excludes 0."""
    this_studies, other_studies = study_table(this), study_table(other)
    everyone_once = np.ones(len(this), np.int64), np.ones(len(this_studies), np.int64)
    this_point = weighted_headline(this, this_studies, *everyone_once, with_auroc=True)
    other_point = weighted_headline(other, other_studies, *everyone_once, with_auroc=True)
    deltas = {name: [] for name in COMPARED_METRICS}
    for weights in patient_resamples(this, this_studies, resamples, seed):
        ours = weighted_headline(this, this_studies, *weights, with_auroc=True)
        theirs = weighted_headline(other, other_studies, *weights, with_auroc=True)
        for name in COMPARED_METRICS:
            deltas[name].append(ours[name] - theirs[name])
    result = {}
    for name in COMPARED_METRICS:
        delta = this_point[name] - other_point[name]
        interval = percentile_interval(deltas[name])
        result[name] = {
            "delta": float(delta) if np.isfinite(delta) else None,
            "ci95": list(interval) if interval is not None else None,
            "significant": interval is not None and (interval[0] > 0 or interval[1] < 0),
            "this": _finite(this_point[name]),
            "other": _finite(other_point[name]),
            "undefined_resamples": int(np.sum(~np.isfinite(deltas[name]))),
        }
    return result


def compare(this: Predictions, other_path: str, resamples: int, seed: int) -> tuple[dict, dict]:
    """(metrics.json's `comparison`, `compared_with`) of `this` against --compare other_path."""
    other = read_other(other_path, this)
    compared_with = {
        "path": other_path,
        "predictions": other_predictions_file(other_path),
        "resamples": resamples,
        "seed": seed,
        "unit": "patient",
        "level": CONFIDENCE_LEVEL,
        "n_patients": len(np.unique(this.patient_ids)),
        "study_threshold": 0.5,
    }
    return paired_bootstrap(this, other, resamples, seed), compared_with


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
