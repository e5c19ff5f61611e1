"""Predictions -> metrics: plain numpy/sklearn functions, no TensorFlow, no I/O.

Every metric that is undefined for the data at hand (no positives, one class only, ...)
is None, never NaN, and `Notes` records why; `metrics.json` is written with NaN forbidden.
Definitions (also in docs/EVALUATION.md):

- image level: 14-class top-1/top-3 accuracy, Cohen's kappa, F1/precision/recall; macro
  averages run over the classes present in the truth or the predictions (sklearn's default).
- P(abnormal) of an image = the sum of the 7 abnormal-class probabilities; called abnormal
  when >= ABNORMAL_THRESHOLD.
- study level (the MURA literature's metric): a study's P(abnormal) = the mean over its images.
- bootstrap CIs resample *patients* with replacement (all images of a drawn patient come along).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    cohen_kappa_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from bonify.vocabulary import CLASS_NAMES, NUM_CLASSES, NUM_REGIONS, REGIONS
from eval.predictions import Predictions

#: P(abnormal) at or above which an image or study is called abnormal (the MURA convention).
ABNORMAL_THRESHOLD = 0.5
#: Equal-width confidence bins of the expected calibration error and the reliability diagram.
CALIBRATION_BINS = 15
#: Two-sided confidence level of the bootstrap intervals.
CONFIDENCE_LEVEL = 0.95
#: Number of most-confused off-diagonal class pairs listed.
TOP_CONFUSED_PAIRS = 10

ABNORMAL_CLASS_COLUMNS = np.arange(1, NUM_CLASSES, 2)  # label = 2 * region + abnormal


class Notes(dict):
    """metric path (e.g. "per_region.HAND.auroc") -> why it is None."""

    def undefined(self, path: str, reason: str) -> None:
        self[path] = reason
        return None


def abnormal_probability(probs: np.ndarray) -> np.ndarray:
    """float64 [N]: sum of the abnormal-class probabilities of each row of probs [N, 14]."""
    return probs[:, ABNORMAL_CLASS_COLUMNS].sum(axis=1)


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


def _kappa(true, pred, notes: Notes, path: str):
    if len(np.union1d(true, pred)) < 2:
        return notes.undefined(path, "truth and predictions are all one class: kappa is 0/0")
    return float(cohen_kappa_score(true, pred))


def _auroc(truth, scores, notes: Notes, path: str):
    if len(np.unique(truth)) < 2:
        return notes.undefined(path, "only one true class present: AUROC needs both")
    return float(roc_auc_score(truth, scores))


def _ratio(numerator, denominator, notes: Notes, path: str, reason: str):
    if denominator == 0:
        return notes.undefined(path, reason)
    return float(numerator / denominator)


def binary_metrics(truth: np.ndarray, scores: np.ndarray, notes: Notes, prefix: str) -> dict:
    """Accuracy, sensitivity, specificity, kappa and AUROC of an abnormality call.

    truth: int [N] 0/1; scores: float [N] P(abnormal); abnormal when >= ABNORMAL_THRESHOLD.
    """
    called = (scores >= ABNORMAL_THRESHOLD).astype(np.int64)
    positives, negatives = int((truth == 1).sum()), int((truth == 0).sum())
    return {
        "accuracy": _ratio(
            (called == truth).sum(), len(truth), notes, f"{prefix}.accuracy", "no items"
        ),
        "sensitivity": _ratio(
            ((called == 1) & (truth == 1)).sum(),
            positives,
            notes,
            f"{prefix}.sensitivity",
            "no abnormal items: sensitivity is 0/0",
        ),
        "specificity": _ratio(
            ((called == 0) & (truth == 0)).sum(),
            negatives,
            notes,
            f"{prefix}.specificity",
            "no normal items: specificity is 0/0",
        ),
        "kappa": _kappa(truth, called, notes, f"{prefix}.kappa"),
        "auroc": _auroc(truth, scores, notes, f"{prefix}.auroc"),
    }


def per_class_metrics(true_labels, pred_labels, notes: Notes) -> list[dict]:
    """Precision, recall, F1 and support of each of the 14 classes (None when 0/0)."""
    matrix = confusion_matrix(true_labels, pred_labels)
    rows = []
    for index, name in enumerate(CLASS_NAMES):
        hits = matrix[index, index]
        support, predicted = int(matrix[index].sum()), int(matrix[:, index].sum())
        path = f"per_class.{name}"
        precision = _ratio(hits, predicted, notes, f"{path}.precision", "never predicted")
        recall = _ratio(hits, support, notes, f"{path}.recall", "no images of this class")
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
        "cohen_kappa": _kappa(true, pred, notes, "cohen_kappa"),
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
            "normal_accuracy": _ratio(correct[truth == 0].sum(), (truth == 0).sum(), notes,
                                      f"{path}.normal_accuracy", "no normal images"),
            "abnormal_accuracy": _ratio(correct[truth == 1].sum(), (truth == 1).sum(), notes,
                                        f"{path}.abnormal_accuracy", "no abnormal images"),
            "sensitivity": call["sensitivity"],
            "specificity": call["specificity"],
            "auroc": call["auroc"],
        }  # fmt: skip
    return result


def study_table(predictions: Predictions) -> pd.DataFrame:
    """One row per study: study_id, region, patient_id, n_images, true_abnormal,
    p_abnormal (mean image P(abnormal)), pred_abnormal (p_abnormal >= 0.5); sorted by study_id."""
    images = pd.DataFrame(
        {
            "study_id": predictions.study_ids,
            "region": predictions.regions,
            "patient_id": predictions.patient_ids,
            "true_abnormal": predictions.true_labels % 2,
            "p_abnormal": abnormal_probability(predictions.probs),
        }
    )
    studies = images.groupby("study_id", sort=True).agg(
        region=("region", "first"),
        patient_id=("patient_id", "first"),
        n_images=("p_abnormal", "size"),
        true_abnormal=("true_abnormal", "max"),
        p_abnormal=("p_abnormal", "mean"),
    )
    studies["pred_abnormal"] = (studies["p_abnormal"] >= ABNORMAL_THRESHOLD).astype(np.int64)
    return studies.reset_index()


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


def calibration(confidences: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """Expected calibration error of the top-1 confidence, and the reliability-diagram bins.

    ECE = sum over equal-width bins of |accuracy - mean confidence| * (bin count / N).
    Empty bins have None accuracy and confidence.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    # A confidence of exactly 1.0 belongs in the last bin.
    index = np.clip(np.digitize(confidences, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        mask = index == b
        count = int(mask.sum())
        accuracy = float(correct[mask].mean()) if count else None
        mean_confidence = float(confidences[mask].mean()) if count else None
        if count:
            ece += abs(accuracy - mean_confidence) * count / len(confidences)
        rows.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count,
                     "accuracy": accuracy, "confidence": mean_confidence})  # fmt: skip
    return {"ece": float(ece), "bins": rows}


def bootstrap_intervals(
    predictions: Predictions, studies: pd.DataFrame, resamples: int, seed: int, notes: Notes
) -> dict:
    """95 % percentile intervals of top-1, 14-class kappa and study kappa, resampling patients.

    A resample draws as many patients as there are, with replacement; each image (study) then
    counts as often as its patient was drawn, so a resample is a weight vector, not a copy.
    Resamples where a metric is undefined are left out of that metric's interval
    (`undefined_resamples` counts them). Same seed -> same intervals.
    """
    if resamples <= 0:
        notes.undefined("bootstrap", "--bootstrap_resamples is 0")
        return {"resamples": 0, "seed": seed}
    patients, image_patient = np.unique(predictions.patient_ids, return_inverse=True)
    study_patient = np.searchsorted(patients, studies["patient_id"].to_numpy())
    rng = np.random.default_rng(seed)
    true, pred = predictions.true_labels, predictions.pred_labels
    image_cells = true * NUM_CLASSES + pred
    study_cells = studies["true_abnormal"].to_numpy() * 2 + studies["pred_abnormal"].to_numpy()
    values = {"top1_accuracy": [], "cohen_kappa": [], "study_kappa": []}
    for _ in range(resamples):
        drawn = np.bincount(rng.integers(0, len(patients), len(patients)), minlength=len(patients))
        image_weights = drawn[image_patient]
        image_matrix = np.bincount(image_cells, image_weights, NUM_CLASSES**2)
        study_matrix = np.bincount(study_cells, drawn[study_patient], 4)
        values["top1_accuracy"].append(image_weights @ (true == pred) / image_weights.sum())
        values["cohen_kappa"].append(kappa_from_confusion(image_matrix.reshape(NUM_CLASSES, -1)))
        values["study_kappa"].append(kappa_from_confusion(study_matrix.reshape(2, 2)))
    tail = (1.0 - CONFIDENCE_LEVEL) / 2 * 100
    result = {"resamples": resamples, "seed": seed, "unit": "patient",
              "n_patients": len(patients), "level": CONFIDENCE_LEVEL}  # fmt: skip
    for name, samples in values.items():
        samples = np.asarray(samples, dtype=np.float64)
        finite = samples[np.isfinite(samples)]
        if len(finite) == 0:
            notes.undefined(f"bootstrap.{name}", "undefined in every resample")
            result[name] = {"low": None, "high": None, "undefined_resamples": len(samples)}
            continue
        low, high = np.percentile(finite, [tail, 100 - tail])
        result[name] = {"low": float(low), "high": float(high),
                        "undefined_resamples": int(len(samples) - len(finite))}  # fmt: skip
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


def compute_metrics(predictions: Predictions, bootstrap_resamples: int = 1000, seed: int = 0):
    """Everything `metrics.json` holds, plus the tables the files and figures need.

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
        "study_level": study_level_metrics(studies, notes),
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
