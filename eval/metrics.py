"""Predictions -> metrics: plain numpy/sklearn functions, no TensorFlow, no I/O.

Every metric that is undefined for the data at hand (no positives, one class only, ...)
is None, never NaN, and `Notes` records why; `metrics.json` is written with NaN forbidden.
Definitions (also in docs/EVALUATION.md):

- image level: 14-class top-1/top-3 accuracy, Cohen's kappa, F1/precision/recall; macro
  averages run over the classes present in the truth or the predictions (sklearn's default).
- P(abnormal) of an image = the sum of the 7 abnormal-class probabilities; called abnormal
  when >= ABNORMAL_THRESHOLD.
- study level (the MURA literature's metric): a study's P(abnormal) = the mean over its images
  (`study_level`); also the max (`study_level.aggregations`), by number of views
  (`study_level.by_views`) and at the operating point (`study_level.at_operating_point`).
- region-given (`region_given`): P(abnormal | true region) = P(R_Abnormal) / (P(R_Normal) +
  P(R_Abnormal)), the body part being known from the study's metadata.
- bootstrap CIs resample *patients* with replacement (all images of a drawn patient come along).

The shared definitions (P(abnormal), studies, the binary call) live in `bonify.study_metrics`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from bonify.study_metrics import (  # noqa: F401  (re-exported: the evaluator's metric names)
    ABNORMAL_CLASS_COLUMNS,
    ABNORMAL_THRESHOLD,
    CALIBRATION_BINS,
    VIEW_GROUPS,
    Notes,
    abnormal_probability,
    auroc_or_none,
    binary_report,
    calibration,
    kappa_or_none,
    ratio_or_none,
    region_given_abnormal,
    study_image_counts,
    study_scores,
    view_group,
)
from bonify.vocabulary import CLASS_NAMES, NUM_CLASSES, NUM_REGIONS, REGIONS
from eval.predictions import Predictions

#: Two-sided confidence level of the bootstrap intervals.
CONFIDENCE_LEVEL = 0.95
#: Number of most-confused off-diagonal class pairs listed.
TOP_CONFUSED_PAIRS = 10


def confusion_matrix(true_labels: np.ndarray, pred_labels: np.ndarray, size: int = NUM_CLASSES):
    """int64 [size, size] counts; rows are the true class, columns the predicted one."""
    flat = np.bincount(true_labels * size + pred_labels, minlength=size * size)
    return flat.reshape(size, size).astype(np.int64)


def row_normalized(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum; rows of absent classes stay 0 (not NaN)."""
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)


def kappa_from_confusion(matrix: np.ndarray) -> float:
    """Cohen's kappa of a (possibly weighted) confusion matrix; NaN when undefined (p_e = 1)."""
    total = matrix.sum()
    if total <= 0:
        return float("nan")
    observed = np.trace(matrix) / total
    expected = float(matrix.sum(axis=0) @ matrix.sum(axis=1)) / total**2
    if np.isclose(expected, 1.0):
        return float("nan")
    return float((observed - expected) / (1.0 - expected))


def binary_metrics(truth: np.ndarray, scores: np.ndarray, notes: Notes, prefix: str) -> dict:
    """`bonify.study_metrics.binary_report` at ABNORMAL_THRESHOLD (the 0.5 numbers)."""
    return binary_report(truth, scores, ABNORMAL_THRESHOLD, notes, prefix)


def per_class_metrics(true_labels, pred_labels, notes: Notes) -> list[dict]:
    """Precision, recall, F1 and support of each of the 14 classes (None when 0/0)."""
    matrix = confusion_matrix(true_labels, pred_labels)
    rows = []
    for index, name in enumerate(CLASS_NAMES):
        hits = matrix[index, index]
        support, predicted = int(matrix[index].sum()), int(matrix[:, index].sum())
        path = f"per_class.{name}"
        precision = ratio_or_none(hits, predicted, notes, f"{path}.precision", "never predicted")
        recall = ratio_or_none(hits, support, notes, f"{path}.recall", "no images of this class")
        if precision is None and recall is None:
            f1 = notes.undefined(f"{path}.f1", "class neither present nor predicted")
        elif not precision or not recall:
            f1 = 0.0  # one side defined and 0, or one undefined while the other is 0 or >0
        else:
            f1 = 2 * precision * recall / (precision + recall)
        rows.append(
            {"class": name, "precision": precision, "recall": recall, "f1": f1, "support": support}
        )
    return rows


def image_level_metrics(predictions: Predictions, notes: Notes) -> dict:
    """The 14-class metrics of the issue (`n_images`, `top1_accuracy`, ... `region_accuracy`)."""
    true, pred = predictions.true_labels, predictions.pred_labels
    top3 = np.argsort(-predictions.probs, axis=1, kind="stable")[:, :3]
    weighted = {"average": "weighted", "zero_division": 0}
    return {
        "n_images": len(true),
        "top1_accuracy": float((pred == true).mean()),
        "top3_accuracy": float((top3 == true[:, None]).any(axis=1).mean()),
        "cohen_kappa": kappa_or_none(true, pred, notes, "cohen_kappa"),
        "f1_macro": float(f1_score(true, pred, average="macro", zero_division=0)),
        "f1_weighted": float(f1_score(true, pred, **weighted)),
        "precision_weighted": float(precision_score(true, pred, **weighted)),
        "recall_weighted": float(recall_score(true, pred, **weighted)),
        "region_accuracy": float((true // 2 == pred // 2).mean()),
    }


def per_region_metrics(predictions: Predictions, notes: Notes) -> dict:
    """region -> n, 14-class accuracy, normal/abnormal accuracy and the image abnormality call."""
    true, pred = predictions.true_labels, predictions.pred_labels
    p_abnormal = abnormal_probability(predictions.probs)
    result = {}
    for region in REGIONS:
        path = f"per_region.{region}"
        mask = predictions.regions == region
        if not mask.any():
            notes.undefined(path, "no images of this region in the split")
            result[region] = {"n": 0, "accuracy": None, "normal_accuracy": None,
                              "abnormal_accuracy": None, "sensitivity": None,
                              "specificity": None, "auroc": None}  # fmt: skip
            continue
        truth = true[mask] % 2
        correct = pred[mask] == true[mask]
        call = binary_metrics(truth, p_abnormal[mask], notes, path)
        result[region] = {
            "n": int(mask.sum()),
            "accuracy": float(correct.mean()),
            "normal_accuracy": ratio_or_none(correct[truth == 0].sum(), (truth == 0).sum(),
                                             notes, f"{path}.normal_accuracy", "no normal images"),
            "abnormal_accuracy": ratio_or_none(correct[truth == 1].sum(), (truth == 1).sum(),
                                               notes, f"{path}.abnormal_accuracy",
                                               "no abnormal images"),
            "sensitivity": call["sensitivity"],
            "specificity": call["specificity"],
            "auroc": call["auroc"],
        }  # fmt: skip
    return result


def region_given_probability(predictions: Predictions) -> np.ndarray:
    """float64 [N]: each image's P(abnormal | its true region) (see bonify.study_metrics)."""
    region_index = np.asarray([REGIONS.index(region) for region in predictions.regions])
    return region_given_abnormal(predictions.probs, region_index)


def study_table(predictions: Predictions) -> pd.DataFrame:
    """One row per study, sorted by study_id: study_id, region, patient_id, n_images,
    true_abnormal, p_abnormal (the mean of its images' P(abnormal), MURA's rule),
    pred_abnormal (p_abnormal >= 0.5), p_abnormal_max (the largest image P(abnormal)) and
    p_region_given (the mean of its images' region-given P(abnormal))."""
    ids = predictions.study_ids
    image_scores = abnormal_probability(predictions.probs)
    study_ids, first = np.unique(ids, return_index=True)
    mean = study_scores(image_scores, ids, "mean")[1]
    return pd.DataFrame(
        {
            "study_id": study_ids,
            "region": predictions.regions[first],
            "patient_id": predictions.patient_ids[first],
            "n_images": study_image_counts(ids)[1],
            "true_abnormal": study_scores(predictions.true_labels % 2, ids, "max")[1].astype(
                np.int64
            ),
            "p_abnormal": mean,
            "pred_abnormal": (mean >= ABNORMAL_THRESHOLD).astype(np.int64),
            "p_abnormal_max": study_scores(image_scores, ids, "max")[1],
            "p_region_given": study_scores(region_given_probability(predictions), ids)[1],
        }
    )


def _selected(truth, scores, threshold: float, keys, notes: Notes, prefix: str) -> dict:
    """The `keys` of binary_report (and only their notes)."""
    scratch = Notes()
    report = binary_report(truth, scores, threshold, scratch, prefix)
    notes.update({path: why for path, why in scratch.items() if path.rsplit(".", 1)[1] in keys})
    return {key: report[key] for key in keys}


def study_level_metrics(studies: pd.DataFrame, notes: Notes) -> dict:
    """`n_studies` + binary metrics of the study call, overall and `per_region`."""
    truth = studies["true_abnormal"].to_numpy()
    scores = studies["p_abnormal"].to_numpy()
    result = {"n_studies": len(studies), **binary_metrics(truth, scores, notes, "study_level")}
    result["per_region"] = {}
    for region in REGIONS:
        mask = (studies["region"] == region).to_numpy()
        path = f"study_level.per_region.{region}"
        if not mask.any():
            notes.undefined(path, "no studies of this region in the split")
            empty = dict.fromkeys(("accuracy", "sensitivity", "specificity", "kappa", "auroc"))
            result["per_region"][region] = {"n_studies": 0, **empty}
            continue
        result["per_region"][region] = {
            "n_studies": int(mask.sum()),
            **binary_metrics(truth[mask], scores[mask], notes, path),
        }
    return result


def aggregation_metrics(studies: pd.DataFrame, notes: Notes) -> dict:
    """`study_level.aggregations`: the study call (at 0.5) with a study's P(abnormal) the
    mean or the max of its images'."""
    truth = studies["true_abnormal"].to_numpy()
    columns = {"mean": "p_abnormal", "max": "p_abnormal_max"}
    return {
        how: binary_report(
            truth, studies[column].to_numpy(), ABNORMAL_THRESHOLD, notes,
            f"study_level.aggregations.{how}",
        )
        for how, column in columns.items()
    }  # fmt: skip


def by_views_metrics(studies: pd.DataFrame, notes: Notes) -> dict:
    """`study_level.by_views`: n_studies, kappa, AUROC and accuracy of the study call (mean,
    0.5) of the studies with 1, 2, 3 and 4 or more images."""
    groups = view_group(studies["n_images"].to_numpy())
    truth = studies["true_abnormal"].to_numpy()
    scores = studies["p_abnormal"].to_numpy()
    result = {}
    for group in VIEW_GROUPS:
        mask = groups == group
        path = f"study_level.by_views.{group}"
        keys = ("kappa", "auroc", "accuracy")
        if not mask.any():
            notes.undefined(path, f"no studies with {group} image(s) in the split")
            result[group] = {"n_studies": 0, **dict.fromkeys(keys)}
            continue
        result[group] = {
            "n_studies": int(mask.sum()),
            **_selected(truth[mask], scores[mask], ABNORMAL_THRESHOLD, keys, notes, path),
        }
    return result


def operating_point_metrics(studies: pd.DataFrame, threshold: float, notes: Notes) -> dict:
    """`study_level.at_operating_point`: the study call (mean) at `threshold`."""
    keys = ("kappa", "accuracy", "sensitivity", "specificity")
    path = "study_level.at_operating_point"
    truth = studies["true_abnormal"].to_numpy()
    scores = studies["p_abnormal"].to_numpy()
    return {"threshold": threshold, **_selected(truth, scores, threshold, keys, notes, path)}


def region_given_metrics(predictions: Predictions, studies: pd.DataFrame, notes: Notes) -> dict:
    """`region_given`: the abnormality call (at 0.5) on P(abnormal | true region), per image
    and per study (the mean over its images), overall and per region."""
    image = _selected(
        predictions.true_labels % 2, region_given_probability(predictions), ABNORMAL_THRESHOLD,
        ("kappa", "auroc"), notes, "region_given.image_level",
    )  # fmt: skip
    truth = studies["true_abnormal"].to_numpy()
    scores = studies["p_region_given"].to_numpy()
    prefix = "region_given.study_level"
    study = _selected(
        truth, scores, ABNORMAL_THRESHOLD, ("kappa", "auroc", "accuracy"), notes, prefix
    )
    study["per_region"] = {}
    for region in REGIONS:
        mask = (studies["region"] == region).to_numpy()
        path = f"{prefix}.per_region.{region}"
        if not mask.any():
            notes.undefined(path, "no studies of this region in the split")
            study["per_region"][region] = {"n_studies": 0, "kappa": None, "auroc": None}
            continue
        study["per_region"][region] = {
            "n_studies": int(mask.sum()),
            **_selected(
                truth[mask], scores[mask], ABNORMAL_THRESHOLD, ("kappa", "auroc"), notes, path
            ),
        }
    return {"image_level": image, "study_level": study}


def patient_resamples(predictions: Predictions, studies: pd.DataFrame, resamples: int, seed: int):
    """Yield (image weights int [N], study weights int [S]) of `resamples` bootstrap draws.

    A draw picks as many patients as there are, with replacement; each image (study) then
    counts as often as its patient was drawn, so a resample is a weight vector, not a copy.
    Same seed and patients -> same draws (a paired comparison relies on it).
    """
    patients, image_patient = np.unique(predictions.patient_ids, return_inverse=True)
    study_patient = np.searchsorted(patients, studies["patient_id"].to_numpy())
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        drawn = np.bincount(rng.integers(0, len(patients), len(patients)), minlength=len(patients))
        yield drawn[image_patient], drawn[study_patient]


def weighted_headline(
    predictions: Predictions,
    studies: pd.DataFrame,
    image_weights: np.ndarray,
    study_weights: np.ndarray,
    with_auroc: bool = False,
) -> dict[str, float]:
    """top1_accuracy, cohen_kappa, study_kappa (0.5, mean) and, with_auroc, study_auroc of
    images and studies counted `*_weights` times; NaN where undefined."""
    true, pred = predictions.true_labels, predictions.pred_labels
    image_matrix = np.bincount(true * NUM_CLASSES + pred, image_weights, NUM_CLASSES**2)
    study_cells = studies["true_abnormal"].to_numpy() * 2 + studies["pred_abnormal"].to_numpy()
    study_matrix = np.bincount(study_cells, study_weights, 4)
    values = {
        "top1_accuracy": float(image_weights @ (true == pred) / image_weights.sum()),
        "cohen_kappa": kappa_from_confusion(image_matrix.reshape(NUM_CLASSES, -1)),
        "study_kappa": kappa_from_confusion(study_matrix.reshape(2, 2)),
    }
    if with_auroc:
        truth = studies["true_abnormal"].to_numpy()
        present = study_weights > 0
        both = len(np.unique(truth[present])) == 2
        values["study_auroc"] = (
            float(roc_auc_score(truth, studies["p_abnormal"], sample_weight=study_weights))
            if both
            else float("nan")
        )
    return values


def percentile_interval(samples) -> tuple[float, float] | None:
    """The CONFIDENCE_LEVEL percentile interval of the finite samples (None if there are none)."""
    samples = np.asarray(samples, dtype=np.float64)
    finite = samples[np.isfinite(samples)]
    if len(finite) == 0:
        return None
    tail = (1.0 - CONFIDENCE_LEVEL) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_intervals(
    predictions: Predictions, studies: pd.DataFrame, resamples: int, seed: int, notes: Notes
) -> dict:
    """95 % percentile intervals of top-1, 14-class kappa and study kappa, resampling patients
    (`patient_resamples`). Resamples where a metric is undefined are left out of that
    metric's interval (`undefined_resamples` counts them). Same seed -> same intervals.
    """
    if resamples <= 0:
        notes.undefined("bootstrap", "--bootstrap_resamples is 0")
        return {"resamples": 0, "seed": seed}
    values = {"top1_accuracy": [], "cohen_kappa": [], "study_kappa": []}
    for image_weights, study_weights in patient_resamples(predictions, studies, resamples, seed):
        for name, value in weighted_headline(
            predictions, studies, image_weights, study_weights
        ).items():
            values[name].append(value)
    result = {"resamples": resamples, "seed": seed, "unit": "patient",
              "n_patients": len(np.unique(predictions.patient_ids)),
              "level": CONFIDENCE_LEVEL}  # fmt: skip
    for name, samples in values.items():
        interval = percentile_interval(samples)
        undefined = int(np.sum(~np.isfinite(samples)))
        if interval is None:
            notes.undefined(f"bootstrap.{name}", "undefined in every resample")
            result[name] = {"low": None, "high": None, "undefined_resamples": undefined}
            continue
        result[name] = {"low": interval[0], "high": interval[1], "undefined_resamples": undefined}
    return result


def most_confused_pairs(matrix: np.ndarray, top: int = TOP_CONFUSED_PAIRS) -> list[dict]:
    """The largest off-diagonal cells of a 14x14 count matrix, largest first (ties by index)."""
    off_diagonal = matrix.copy()
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(-off_diagonal, axis=None, kind="stable")
    pairs = []
    for flat in order[:top]:
        true_index, pred_index = divmod(int(flat), NUM_CLASSES)
        count = int(off_diagonal[true_index, pred_index])
        if count == 0:
            break
        support = int(matrix[true_index].sum())
        pairs.append({"true_class": CLASS_NAMES[true_index], "pred_class": CLASS_NAMES[pred_index],
                      "count": count, "fraction_of_true": count / support})  # fmt: skip
    return pairs


def compute_metrics(
    predictions: Predictions,
    bootstrap_resamples: int = 1000,
    seed: int = 0,
    threshold: float = ABNORMAL_THRESHOLD,
):
    """Everything `metrics.json` holds, plus the tables the files and figures need.

    threshold: the operating point of `study_level.at_operating_point` (every other call is
    at 0.5, the MURA convention, so runs stay comparable).

    Returns (metrics: JSON-ready dict with no NaN, tables: dict of numpy arrays / DataFrames:
    `confusion` [14,14] int64, `region_confusion` [7,7] int64, `studies` DataFrame).
    """
    notes = Notes()
    true, pred = predictions.true_labels, predictions.pred_labels
    matrix = confusion_matrix(true, pred)
    studies = study_table(predictions)
    correct = (true == pred).astype(np.float64)
    metrics = {
        **image_level_metrics(predictions, notes),
        "per_class": per_class_metrics(true, pred, notes),
        "per_region": per_region_metrics(predictions, notes),
        "study_level": {
            **study_level_metrics(studies, notes),
            "aggregations": aggregation_metrics(studies, notes),
            "by_views": by_views_metrics(studies, notes),
            "at_operating_point": operating_point_metrics(studies, threshold, notes),
        },
        "region_given": region_given_metrics(predictions, studies, notes),
        "bootstrap": bootstrap_intervals(predictions, studies, bootstrap_resamples, seed, notes),
        "calibration": calibration(predictions.confidences, correct),
        "most_confused_pairs": most_confused_pairs(matrix),
        "absent_classes": [name for i, name in enumerate(CLASS_NAMES) if not (true == i).any()],
        "absent_regions": [r for r in REGIONS if not (predictions.regions == r).any()],
    }
    metrics["notes"] = dict(notes)
    tables = {
        "confusion": matrix,
        "region_confusion": confusion_matrix(true // 2, pred // 2, NUM_REGIONS),
        "studies": studies,
    }
    return metrics, tables
