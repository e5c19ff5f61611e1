"""The MURA metric's core: P(abnormal), studies, the abnormality call and its operating point.

Plain numpy/scipy/scikit-learn functions (no TensorFlow, no I/O) shared by the evaluator
(`eval.metrics`), the trainer (validation study kappa, the operating point fitted at the end
of training) and serving (the temperature). Definitions (also in docs/EVALUATION.md):

- P(abnormal) of an image: the summed mass of the 7 abnormal classes; region-given, when the
  body part is known: P(R_Abnormal) / (P(R_Normal) + P(R_Abnormal)) for the true region R.
- a study's P(abnormal): the mean (MURA's rule) or the max over its images.
- the call: abnormal when P(abnormal) >= threshold.
- the operating point: a temperature T (probabilities softmax(log p / T), fitted to minimise
  the negative log-likelihood) and the threshold maximising study kappa on the scaled
  probabilities; both fitted on the validation split, never the test split.

A metric that is undefined for the data at hand (one class only, no items) is None, never
NaN; `Notes` records why under the metric's path.
"""

from __future__ import annotations

import numpy as np

from bonify.vocabulary import NUM_CLASSES

# scipy and scikit-learn are imported where used: this module is imported by every command
# (serving, the trainer, the evaluator), and importing them costs over a second at start-up,
# also on the paths that only check arguments.

#: P(abnormal) at or above which an image or study is called abnormal (the MURA convention).
ABNORMAL_THRESHOLD = 0.5
#: How a study's P(abnormal) is made from its images' (the first is MURA's).
AGGREGATIONS = ("mean", "max")
#: Studies grouped by their number of images (views); the last group is "this many or more".
VIEW_GROUPS = ("1", "2", "3", "4+")
#: Equal-width confidence bins of the expected calibration error and the reliability diagram.
CALIBRATION_BINS = 15
#: Probabilities are floored here before their log (a float32 softmax can underflow to 0).
PROBABILITY_FLOOR = 1e-12
#: Search range of the fitted temperature (on log T); beyond it a model is not "miscalibrated"
#: but broken, and the fit says so by landing on a bound.
TEMPERATURE_RANGE = (0.05, 20.0)

ABNORMAL_CLASS_COLUMNS = np.arange(1, NUM_CLASSES, 2)  # label = 2 * region + abnormal


class Notes(dict):
    """metric path (e.g. "per_region.HAND.auroc") -> why it is None."""

    def undefined(self, path: str, reason: str) -> None:
        self[path] = reason
        return None


# ---- P(abnormal) and studies -----------------------------------------------------------------


def abnormal_probability(probs: np.ndarray) -> np.ndarray:
    """float64 [N]: the summed abnormal-class mass of each row of probs [N, 14]."""
    return np.asarray(probs, dtype=np.float64)[:, ABNORMAL_CLASS_COLUMNS].sum(axis=1)


def region_given_abnormal(probs: np.ndarray, region_index) -> np.ndarray:
    """float64 [N]: P(R_Abnormal) / (P(R_Normal) + P(R_Abnormal)) of each row of probs [N, 14],
    R = region_index (an int, or int [N] per row, index into REGIONS); 0.5 where both are 0."""
    probs = np.asarray(probs, dtype=np.float64)
    rows = np.arange(len(probs))
    region_index = np.broadcast_to(np.asarray(region_index, dtype=np.int64), rows.shape)
    abnormal = probs[rows, 2 * region_index + 1]
    total = probs[rows, 2 * region_index] + abnormal
    return np.divide(abnormal, total, out=np.full(len(probs), 0.5), where=total > 0)


def study_scores(
    scores: np.ndarray, study_ids: np.ndarray, how: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """(study ids sorted [S], float64 [S] each study's `how` ("mean" or "max") of `scores`).

    scores: float [N] per image; study_ids: str [N]. Also gives a study's truth from its
    images' 0/1 truth (all images of a study share it; "max" makes one abnormal image enough).
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"how must be one of {', '.join(AGGREGATIONS)}, got {how!r}")
    scores = np.asarray(scores, dtype=np.float64)
    ids, index = np.unique(np.asarray(study_ids), return_inverse=True)
    if how == "mean":
        sums = np.bincount(index, weights=scores, minlength=len(ids))
        return ids, sums / np.bincount(index, minlength=len(ids))
    result = np.full(len(ids), -np.inf)
    np.maximum.at(result, index, scores)
    return ids, result


def study_image_counts(study_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(study ids sorted [S], int64 [S] number of images of each), in study_scores' order."""
    ids, counts = np.unique(np.asarray(study_ids), return_counts=True)
    return ids, counts.astype(np.int64)


def view_group(n_images) -> np.ndarray:
    """str [S]: the VIEW_GROUPS label of each study's image count ("1", "2", "3" or "4+")."""
    n_images = np.asarray(n_images, dtype=np.int64)
    last = len(VIEW_GROUPS)
    return np.asarray(VIEW_GROUPS, dtype=object)[np.clip(n_images, 1, last) - 1]


# ---- the abnormality call ---------------------------------------------------------------------


def kappa_or_none(truth, called, notes: Notes, path: str) -> float | None:
    """Cohen's kappa of two label vectors; None (and a note) when both are all one class."""
    from sklearn.metrics import cohen_kappa_score

    if len(np.union1d(truth, called)) < 2:
        return notes.undefined(path, "truth and predictions are all one class: kappa is 0/0")
    return float(cohen_kappa_score(truth, called))


def auroc_or_none(truth, scores, notes: Notes, path: str) -> float | None:
    """ROC AUC of binary truth vs scores; None (and a note) when truth has one class only."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(truth)) < 2:
        return notes.undefined(path, "only one true class present: AUROC needs both")
    return float(roc_auc_score(truth, scores))


def ratio_or_none(numerator, denominator, notes: Notes, path: str, reason: str) -> float | None:
    """numerator / denominator as a float; None (and `reason` noted) when the denominator is 0."""
    if denominator == 0:
        return notes.undefined(path, reason)
    return float(numerator / denominator)


def binary_report(
    truth: np.ndarray,
    scores: np.ndarray,
    threshold: float = ABNORMAL_THRESHOLD,
    notes: Notes | None = None,
    prefix: str = "binary",
) -> dict:
    """accuracy, sensitivity, specificity, kappa (of the call scores >= threshold) and AUROC.

    truth: bool or 0/1 [S]; scores: float [S] P(abnormal). An undefined metric is None and
    `notes` (when given) records why under "<prefix>.<metric>".
    """
    notes = Notes() if notes is None else notes
    truth = np.asarray(truth).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    called = (scores >= threshold).astype(np.int64)
    positives, negatives = int((truth == 1).sum()), int((truth == 0).sum())
    return {
        "accuracy": ratio_or_none(
            (called == truth).sum(), len(truth), notes, f"{prefix}.accuracy", "no items"
        ),
        "sensitivity": ratio_or_none(
            ((called == 1) & (truth == 1)).sum(),
            positives,
            notes,
            f"{prefix}.sensitivity",
            "no abnormal items: sensitivity is 0/0",
        ),
        "specificity": ratio_or_none(
            ((called == 0) & (truth == 0)).sum(),
            negatives,
            notes,
            f"{prefix}.specificity",
            "no normal items: specificity is 0/0",
        ),
        "kappa": kappa_or_none(truth, called, notes, f"{prefix}.kappa"),
        "auroc": auroc_or_none(truth, scores, notes, f"{prefix}.auroc"),
    }


def kappa_at_thresholds(truth: np.ndarray, scores: np.ndarray, thresholds) -> np.ndarray:
    """float64 [T]: Cohen's kappa of the call scores >= t for each t (NaN where undefined:
    truth and call all one class); the threshold-sweep curve.

    Counted from the sorted scores rather than by one cohen_kappa_score call per threshold
    (~2 ms each, seconds for a split's every distinct score); tests check it equals sklearn.
    """
    truth = np.asarray(truth).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    count = len(truth)
    abnormal, normal = np.sort(scores[truth]), np.sort(scores[~truth])
    true_positive = len(abnormal) - np.searchsorted(abnormal, thresholds, side="left")
    false_positive = len(normal) - np.searchsorted(normal, thresholds, side="left")
    called = true_positive + false_positive
    agreed = true_positive + (len(normal) - false_positive)
    chance = (called * len(abnormal) + (count - called) * len(normal)) / max(count, 1) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = (agreed / max(count, 1) - chance) / (1.0 - chance)
    return np.where(np.isclose(chance, 1.0), np.nan, kappa)


def _cut_points(scores: np.ndarray) -> np.ndarray:
    """One threshold per distinct call of `scores`: 0.5 when it makes that call, else the
    midpoint between the two neighbouring distinct scores that bound it (0 and 1 outside)."""
    distinct = np.unique(scores)
    lower = np.concatenate([[min(0.0, distinct[0])], distinct])  # call = scores > lower ...
    upper = np.concatenate([distinct, [max(1.0, distinct[-1])]])  # ... = scores >= upper
    inside = (lower < ABNORMAL_THRESHOLD) & (upper >= ABNORMAL_THRESHOLD)
    return np.where(inside, ABNORMAL_THRESHOLD, (lower + upper) / 2)


def _best(values: np.ndarray, cuts: np.ndarray) -> int:
    """Index of the largest value; among ties the cut nearest 0.5 (then the lower one)."""
    best = np.flatnonzero(np.isclose(values, np.nanmax(values), rtol=0, atol=1e-12))
    return int(best[np.argmin(np.abs(cuts[best] - ABNORMAL_THRESHOLD))])


def fit_threshold(truth: np.ndarray, scores: np.ndarray) -> dict:
    """The threshold maximising Cohen's kappa of the call scores >= threshold, and Youden's J.

    truth: bool or 0/1 [S] (both classes needed, else ValueError); scores: float [S]. Every
    distinct call is tried once, at the threshold `_cut_points` gives it (0.5 itself when 0.5
    makes that call, else the midpoint between the neighbouring scores); ties go to the
    threshold nearest 0.5. Returns {"threshold", "kappa", "youden_threshold", "youden_j"}.
    """
    from sklearn.metrics import roc_curve

    truth = np.asarray(truth).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if len(np.unique(truth)) < 2:
        raise ValueError("fitting a threshold needs both normal and abnormal studies")
    cuts = _cut_points(scores)
    kappas = kappa_at_thresholds(truth, scores, cuts)
    # sklearn's ROC gives the sensitivity and false-positive rate of every distinct call.
    false_positive, true_positive, roc_thresholds = roc_curve(
        truth, scores, drop_intermediate=False
    )
    # Each cut makes the call of the lowest ROC threshold at or above it (the last is inf).
    ascending = roc_thresholds[::-1]
    youden = (true_positive - false_positive)[::-1][np.searchsorted(ascending, cuts, side="left")]
    best_kappa, best_youden = _best(kappas, cuts), _best(youden, cuts)
    return {
        "threshold": float(cuts[best_kappa]),
        "kappa": float(kappas[best_kappa]),
        "youden_threshold": float(cuts[best_youden]),
        "youden_j": float(youden[best_youden]),
    }


# ---- calibration and the temperature ----------------------------------------------------------


def _logits(probs: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probs, dtype=np.float64), PROBABILITY_FLOOR))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / temperature) row-wise, float64 [N, 14]; T == 1 returns probs as is."""
    from scipy.special import softmax

    if temperature == 1.0:
        return probs
    return softmax(_logits(probs) / temperature, axis=1)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray, temperature: float = 1.0):
    """Mean -log P(true class) of softmax(log(probs) / temperature)."""
    from scipy.special import log_softmax

    log_probs = log_softmax(_logits(probs) / temperature, axis=1)
    return float(-log_probs[np.arange(len(log_probs)), np.asarray(labels)].mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T in TEMPERATURE_RANGE minimising the NLL of softmax(log(probs) / T) on
    (probs [N, 14], labels int [N]); searched on log T (scipy's bounded scalar minimiser)."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(probs, labels, np.exp(log_t)),
        bounds=tuple(np.log(TEMPERATURE_RANGE)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(result.x))


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


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray) -> float:
    """ECE of the top-1 confidence of probs [N, 14] against labels int [N]."""
    probs = np.asarray(probs, dtype=np.float64)
    correct = (probs.argmax(axis=1) == np.asarray(labels)).astype(np.float64)
    return calibration(probs.max(axis=1), correct)["ece"]


def fit_operating_point(
    probs: np.ndarray, labels: np.ndarray, study_ids: np.ndarray, how: str = "mean"
) -> dict:
    """Temperature, then threshold, fitted on one (validation) split's images.

    probs: float [N, 14] model outputs before any temperature; labels: int [N] 0..13;
    study_ids: str [N]. The threshold is fitted on the study P(abnormal) of the
    temperature-scaled probabilities, since those are what a user of the card thresholds.
    Returns the card's `operating_point` fields except `source` and `fitted_on`, which the
    caller knows: threshold, temperature, kappa_at_threshold, kappa_at_default_threshold (at
    0.5, same temperature), youden_threshold, youden_j,
    aggregation, nll_before/after, ece_before/after, n_studies, n_images. ValueError when the
    split lacks normal or abnormal studies.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    temperature = fit_temperature(probs, labels)
    scaled = apply_temperature(probs, temperature)
    _, truth = study_scores(labels % 2, study_ids, "max")
    ids, scores = study_scores(abnormal_probability(scaled), study_ids, how)
    fitted = fit_threshold(truth.astype(np.int64), scores)
    return {
        "threshold": fitted["threshold"],
        "temperature": temperature,
        "kappa_at_threshold": fitted["kappa"],
        "kappa_at_default_threshold": float(
            kappa_at_thresholds(truth, scores, [ABNORMAL_THRESHOLD])[0]
        ),
        "youden_threshold": fitted["youden_threshold"],
        "youden_j": fitted["youden_j"],
        "aggregation": how,
        "nll_before": negative_log_likelihood(probs, labels),
        "nll_after": negative_log_likelihood(probs, labels, temperature),
        "ece_before": expected_calibration_error(probs, labels),
        "ece_after": expected_calibration_error(scaled, labels),
        "n_studies": len(ids),
        "n_images": len(labels),
    }
