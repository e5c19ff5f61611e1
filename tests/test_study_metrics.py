"""The MURA metric's core on hand-made cases whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import cohen_kappa_score

from bonify.study_metrics import (
    Notes,
    abnormal_probability,
    apply_temperature,
    binary_report,
    expected_calibration_error,
    fit_operating_point,
    fit_temperature,
    fit_threshold,
    kappa_at_thresholds,
    negative_log_likelihood,
    region_given_abnormal,
    study_image_counts,
    study_scores,
    view_group,
)


def test_abnormal_probability_sums_the_abnormal_classes():
    probs = np.zeros((1, 14))
    probs[0, [0, 1, 3, 13]] = [0.4, 0.2, 0.3, 0.1]
    assert abnormal_probability(probs)[0] == pytest.approx(0.6)


def test_region_given_renormalises_within_the_true_region():
    probs = np.zeros((3, 14))
    probs[0, [6, 7, 1]] = [0.2, 0.2, 0.6]  # HAND (3): 0.2 / 0.4, whatever ELBOW holds
    probs[1, [0, 1]] = [0.1, 0.3]  # ELBOW (0): 0.3 / 0.4
    probs[2, 0] = 1.0  # HAND has no mass at all -> 0.5
    result = region_given_abnormal(probs, np.array([3, 0, 3]))
    np.testing.assert_allclose(result, [0.5, 0.75, 0.5])
    np.testing.assert_allclose(region_given_abnormal(probs[:2], 0), [1.0, 0.75])  # 0.6 / 0.6


def test_study_scores_mean_and_max_sorted_by_study_id():
    ids = np.array(["b", "a", "b", "c", "b"], dtype=object)
    scores = np.array([0.2, 0.9, 0.8, 0.1, 0.5])
    mean_ids, means = study_scores(scores, ids, "mean")
    max_ids, maxes = study_scores(scores, ids, "max")
    assert list(mean_ids) == list(max_ids) == ["a", "b", "c"]
    np.testing.assert_allclose(means, [0.9, 0.5, 0.1])
    np.testing.assert_allclose(maxes, [0.9, 0.8, 0.1])
    with pytest.raises(ValueError, match="mean, max"):
        study_scores(scores, ids, "median")


def test_image_counts_and_view_groups():
    ids, counts = study_image_counts(np.array(["x", "y", "y", "z", "z", "z", "z", "z"]))
    assert list(ids) == ["x", "y", "z"] and list(counts) == [1, 2, 5]
    assert list(view_group([1, 2, 3, 4, 7])) == ["1", "2", "3", "4+", "4+"]


def test_binary_report_by_hand_at_a_threshold():
    truth = np.array([True, True, True, False, False])
    scores = np.array([0.9, 0.6, 0.2, 0.5, 0.1])
    at_half = binary_report(truth, scores)  # 0.5 itself is abnormal
    assert at_half["sensitivity"] == pytest.approx(2 / 3)
    assert at_half["specificity"] == pytest.approx(1 / 2)
    assert at_half["accuracy"] == pytest.approx(3 / 5)
    assert at_half["auroc"] == pytest.approx(5 / 6)
    at_point_six = binary_report(truth, scores, 0.6)  # calls 0.9, 0.6: tp 2, tn 2
    assert at_point_six["accuracy"] == pytest.approx(4 / 5)
    assert at_point_six["specificity"] == 1.0
    assert at_point_six["kappa"] == pytest.approx(cohen_kappa_score(truth, scores >= 0.6))
    assert at_point_six["auroc"] == at_half["auroc"]  # threshold-free


def test_binary_report_with_one_class_says_why_each_metric_is_none():
    notes = Notes()
    result = binary_report(np.array([0, 0]), np.array([0.1, 0.2]), 0.5, notes, "x")
    assert result["sensitivity"] is None and result["auroc"] is None and result["kappa"] is None
    assert result["specificity"] == 1.0
    assert set(notes) == {"x.sensitivity", "x.auroc", "x.kappa"}


def test_kappa_at_thresholds_matches_sklearn_and_is_nan_when_undefined():
    truth = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    kappas = kappa_at_thresholds(np.array([0, 0]), np.array([0.1, 0.2]), [0.5])
    assert np.isnan(kappas[0])
    rng = np.random.default_rng(0)
    truth, scores = rng.integers(0, 2, 300), np.round(rng.random(300), 2)  # many ties
    thresholds = np.linspace(-0.1, 1.1, 61)
    for threshold, kappa in zip(
        thresholds, kappa_at_thresholds(truth, scores, thresholds), strict=True
    ):
        called = scores >= threshold
        expected = cohen_kappa_score(truth, called) if called.any() and not called.all() else 0.0
        assert kappa == pytest.approx(expected, abs=1e-12), threshold
    truth, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    for threshold, kappa in zip(
        [0.3, 0.5], kappa_at_thresholds(truth, scores, [0.3, 0.5]), strict=True
    ):
        assert kappa == pytest.approx(cohen_kappa_score(truth, scores >= threshold))


def test_fit_threshold_finds_the_known_optimum_between_neighbouring_scores():
    result = fit_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert result == {"threshold": 0.25, "kappa": 1.0, "youden_threshold": 0.25, "youden_j": 1.0}


def test_fit_threshold_keeps_one_half_when_it_makes_the_best_call():
    # Any threshold in (0.3, 0.7] separates the classes: 0.5 is one of them.
    result = fit_threshold(np.array([0, 1]), np.array([0.3, 0.7]))
    assert result["threshold"] == 0.5 and result["kappa"] == 1.0


def test_fit_threshold_ties_go_to_the_threshold_nearest_one_half():
    # Cuts at 0.2 (calls 0.3, 0.8, 0.9) and 0.85 (calls 0.9) both make one mistake with the
    # same kappa (1/2); 0.5 (calls 0.8, 0.9) makes two. 0.2 is nearer 0.5 than 0.85.
    truth = np.array([0, 1, 0, 1])
    scores = np.array([0.1, 0.3, 0.8, 0.9])
    kappas = kappa_at_thresholds(truth, scores, [0.2, 0.5, 0.85])
    assert kappas[0] == pytest.approx(kappas[2]) == 0.5 and kappas[1] < kappas[0]
    assert fit_threshold(truth, scores)["threshold"] == pytest.approx(0.2)
    # Pull the lower cut away (0.05) and the upper one nearer (0.75): the upper one wins.
    scores = np.array([0.0, 0.1, 0.7, 0.8])
    assert fit_threshold(truth, scores)["threshold"] == pytest.approx(0.75)


def test_fit_threshold_ties_at_a_score_are_one_call():
    # Two studies share the score 0.6: no threshold can split them.
    truth = np.array([0, 1, 0, 1])
    scores = np.array([0.2, 0.6, 0.6, 0.9])
    result = fit_threshold(truth, scores)
    called = scores >= result["threshold"]
    assert result["kappa"] == pytest.approx(cohen_kappa_score(truth, called))
    assert result["threshold"] == 0.5  # calls 0.6, 0.6, 0.9: kappa 1/2, the best there is


def test_youden_threshold_can_differ_from_the_kappa_threshold():
    # Abnormal studies score 0.5 and 0.8, normal ones 0.0, 0.1, 0.4, 0.6, 0.7.
    # At 0.5: sensitivity 1, specificity 3/5 -> J 0.6 (the largest), kappa 12/26.
    # At 0.75: sensitivity 1/2, specificity 1 -> J 0.5, kappa 10/17 (the largest).
    truth = np.array([0, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.6, 0.5, 0.8, 0.0, 0.7, 0.4, 0.1])
    result = fit_threshold(truth, scores)
    assert result["threshold"] == pytest.approx(0.75)
    assert result["kappa"] == pytest.approx(10 / 17)
    assert result["youden_threshold"] == 0.5 and result["youden_j"] == pytest.approx(0.6)


def test_fit_threshold_needs_both_classes():
    with pytest.raises(ValueError, match="both normal and abnormal"):
        fit_threshold(np.array([1, 1]), np.array([0.2, 0.9]))


def test_apply_temperature_one_is_the_identity_and_two_flattens():
    probs = softmax(np.array([[2.0, 0.0] + [-20.0] * 12]), axis=1)
    assert apply_temperature(probs, 1.0) is probs
    flat = apply_temperature(probs, 2.0)
    np.testing.assert_allclose(flat, softmax(np.log(probs) / 2.0, axis=1), rtol=1e-9)
    assert flat[0].sum() == pytest.approx(1.0) and flat[0, 0] < probs[0, 0]
    assert (flat.argmax(axis=1) == probs.argmax(axis=1)).all()


def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_with():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8000, 14)) * 3
    labels = np.array([rng.choice(14, p=row) for row in softmax(logits / 2.0, axis=1)])
    fitted = fit_temperature(softmax(logits, axis=1), labels)
    assert fitted == pytest.approx(2.0, rel=0.05)


def test_fitted_temperature_lowers_nll_and_ece_of_overconfident_outputs():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4000, 14)) * 2
    labels = np.array([rng.choice(14, p=row) for row in softmax(logits, axis=1)])
    overconfident = softmax(logits * 3, axis=1)  # the same model at T = 1/3
    fitted = fit_operating_point(overconfident, labels, np.arange(4000).astype(str))
    assert fitted["temperature"] == pytest.approx(3.0, rel=0.1)
    assert fitted["nll_after"] < fitted["nll_before"]
    assert fitted["ece_after"] < fitted["ece_before"]
    assert fitted["ece_before"] == pytest.approx(expected_calibration_error(overconfident, labels))
    assert fitted["nll_before"] == pytest.approx(negative_log_likelihood(overconfident, labels))


def test_operating_point_threshold_is_fitted_on_the_study_scores():
    # Two images per study; study truth from the labels, P(abnormal) the mean.
    probs = np.zeros((8, 14))
    abnormal = [0.1, 0.2, 0.3, 0.3, 0.6, 0.4, 0.9, 0.7]  # study means 0.15, 0.3, 0.5, 0.8
    probs[:, 1] = abnormal
    probs[:, 0] = 1 - np.array(abnormal)
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    studies = np.repeat(["s1", "s2", "s3", "s4"], 2)
    fitted = fit_operating_point(probs, labels, studies)
    assert fitted["n_studies"] == 4 and fitted["n_images"] == 8 and fitted["aggregation"] == "mean"
    assert fitted["kappa_at_threshold"] == 1.0
    scaled = apply_temperature(probs, fitted["temperature"])
    _, scores = study_scores(abnormal_probability(scaled), studies)
    assert scores[1] < fitted["threshold"] <= scores[2]
    expected = cohen_kappa_score([0, 0, 1, 1], scores >= 0.5)
    assert fitted["kappa_at_default_threshold"] == pytest.approx(expected)
