"""Metric functions on hand-made predictions whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from eval.metrics import (
    Notes,
    abnormal_probability,
    binary_metrics,
    bootstrap_intervals,
    calibration,
    compute_metrics,
    confusion_matrix,
    kappa_from_confusion,
    most_confused_pairs,
    per_class_metrics,
    row_normalized,
    study_table,
)
from eval.predictions import make_predictions


def one_hot_probs(labels, confidence=0.9):
    probs = np.full((len(labels), 14), (1 - confidence) / 13)
    probs[np.arange(len(labels)), labels] = confidence
    return probs


def paths_for(specs):
    """[(region, patient, study, abnormal, image)] -> MURA paths."""
    suffix = ("negative", "positive")
    return [f"MURA-v1.1/valid/XR_{r}/patient{p}/study{s}_{suffix[a]}/image{i}.png"
            for r, p, s, a, i in specs]  # fmt: skip


def test_confusion_matrix_rows_are_true_classes():
    matrix = confusion_matrix(np.array([0, 0, 1, 13]), np.array([0, 1, 1, 12]))
    assert matrix.shape == (14, 14)
    assert matrix[0, 0] == 1 and matrix[0, 1] == 1 and matrix[1, 1] == 1 and matrix[13, 12] == 1
    assert matrix.sum() == 4


def test_row_normalized_leaves_absent_classes_at_zero_not_nan():
    normalized = row_normalized(confusion_matrix(np.array([0, 0]), np.array([0, 1])))
    assert normalized[0, 0] == 0.5 and normalized[0, 1] == 0.5
    assert np.isfinite(normalized).all() and normalized[5].sum() == 0


def test_abnormal_probability_sums_the_odd_classes():
    probs = np.zeros((1, 14))
    probs[0, [1, 3, 13]] = [0.2, 0.3, 0.1]
    probs[0, 0] = 0.4
    assert abnormal_probability(probs)[0] == pytest.approx(0.6)


def test_fast_kappa_equals_sklearn():
    rng = np.random.default_rng(1)
    true, pred = rng.integers(0, 14, 500), rng.integers(0, 14, 500)
    pred[:300] = true[:300]
    assert kappa_from_confusion(confusion_matrix(true, pred)) == pytest.approx(
        cohen_kappa_score(true, pred)
    )


def test_binary_metrics_by_hand():
    truth = np.array([1, 1, 1, 0, 0])
    scores = np.array([0.9, 0.6, 0.2, 0.5, 0.1])  # 0.5 counts as abnormal
    notes = Notes()
    result = binary_metrics(truth, scores, notes, "x")
    assert result["sensitivity"] == pytest.approx(2 / 3)
    assert result["specificity"] == pytest.approx(1 / 2)
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["auroc"] == pytest.approx(5 / 6)
    assert notes == {}


def test_binary_metrics_with_one_class_are_none_with_a_reason():
    notes = Notes()
    result = binary_metrics(np.array([0, 0]), np.array([0.1, 0.2]), notes, "x")
    assert result["sensitivity"] is None and result["auroc"] is None and result["kappa"] is None
    assert result["specificity"] == 1.0
    assert set(notes) == {"x.sensitivity", "x.auroc", "x.kappa"}


def test_per_class_metrics_by_hand():
    notes = Notes()
    rows = per_class_metrics(np.array([0, 0, 1]), np.array([0, 1, 1]), notes)
    assert rows[0] == {"class": "ELBOW_Normal", "precision": 1.0, "recall": 0.5,
                       "f1": pytest.approx(2 / 3), "support": 2}  # fmt: skip
    assert rows[1]["precision"] == 0.5 and rows[1]["recall"] == 1.0
    assert rows[5]["f1"] is None and "per_class.FOREARM_Abnormal.f1" in notes


def test_study_probability_is_the_mean_of_image_abnormal_probabilities():
    paths = paths_for([("HAND", "00001", 1, 1, 1), ("HAND", "00001", 1, 1, 2),
                       ("HAND", "00002", 1, 0, 1)])  # fmt: skip
    probs = np.zeros((3, 14))
    probs[0, 7], probs[0, 6] = 0.8, 0.2  # P(abnormal) 0.8
    probs[1, 7], probs[1, 6] = 0.1, 0.9  # 0.1 -> mean 0.45: called normal
    probs[2, 6] = 1.0
    studies = study_table(make_predictions(paths, [7, 7, 6], probs))
    first = studies[studies["study_id"] == "HAND/patient00001/study1"].iloc[0]
    assert first["n_images"] == 2 and first["p_abnormal"] == pytest.approx(0.45)
    assert first["pred_abnormal"] == 0 and first["true_abnormal"] == 1


def test_calibration_of_perfectly_calibrated_bins_is_zero():
    confidences = np.array([0.75] * 4 + [1.0] * 2)
    correct = np.array([1, 1, 1, 0, 1, 1])
    result = calibration(confidences, correct, bins=4)
    assert result["ece"] == pytest.approx(0.0)
    assert [row["count"] for row in result["bins"]] == [0, 0, 4, 2]
    assert result["bins"][0]["accuracy"] is None


def test_calibration_error_by_hand():
    result = calibration(np.array([0.9, 0.9]), np.array([1, 0]), bins=10)
    assert result["ece"] == pytest.approx(0.4)


def test_most_confused_pairs_are_sorted_and_skip_the_diagonal():
    matrix = confusion_matrix(np.array([0, 0, 0, 2, 2, 5]), np.array([0, 1, 1, 3, 2, 5]))
    pairs = most_confused_pairs(matrix)
    assert [(p["true_class"], p["pred_class"], p["count"]) for p in pairs] == [
        ("ELBOW_Normal", "ELBOW_Abnormal", 2), ("FINGER_Normal", "FINGER_Abnormal", 1)]  # fmt: skip


def test_bootstrap_is_seeded_and_resamples_patients(synthetic_rows_factory):
    rng = np.random.default_rng(0)
    studies = [(r, p, 1, p % 2, 1 + p % 3) for p in range(40) for r in ("HAND", "WRIST")]
    predictions = make_predictions(*synthetic_rows_factory(studies, rng))
    table = study_table(predictions)
    first = bootstrap_intervals(predictions, table, 100, seed=3, notes=Notes())
    again = bootstrap_intervals(predictions, table, 100, seed=3, notes=Notes())
    other = bootstrap_intervals(predictions, table, 100, seed=4, notes=Notes())
    assert first == again and first != other
    assert first["n_patients"] == 40 and first["unit"] == "patient"
    assert first["top1_accuracy"]["low"] < first["top1_accuracy"]["high"]


def test_bootstrap_with_one_patient_has_zero_width():
    paths = paths_for([("HAND", "00001", 1, 1, i) for i in range(1, 5)])
    predictions = make_predictions(paths, [7, 7, 7, 7], one_hot_probs([7, 7, 6, 7]))
    result = bootstrap_intervals(predictions, study_table(predictions), 50, 0, Notes())
    assert result["top1_accuracy"]["low"] == result["top1_accuracy"]["high"] == 0.75


def test_compute_metrics_top3_and_region_accuracy_by_hand():
    paths = paths_for([("ELBOW", "1", 1, 0, 1), ("ELBOW", "2", 1, 1, 1), ("WRIST", "3", 1, 1, 1)])
    probs = np.zeros((3, 14))
    probs[0, [0, 1]] = [0.6, 0.4]  # right
    probs[1, [0, 2, 3, 1]] = [0.4, 0.3, 0.2, 0.1]  # wrong, true class 4th: not in top 3
    probs[2, [12, 13]] = [0.7, 0.3]  # wrong, right region, in top 3
    metrics, _ = compute_metrics(make_predictions(paths, [0, 1, 13], probs), 0)
    assert metrics["top1_accuracy"] == pytest.approx(1 / 3)
    assert metrics["top3_accuracy"] == pytest.approx(2 / 3)
    assert metrics["region_accuracy"] == pytest.approx(1.0)
    assert metrics["per_region"]["ELBOW"]["normal_accuracy"] == 1.0
    assert metrics["per_region"]["ELBOW"]["abnormal_accuracy"] == 0.0


def _two_class_probs(abnormal, region_index=3):
    """probs [N, 14] with P(region abnormal) = abnormal, the rest on region normal."""
    abnormal = np.asarray(abnormal, dtype=np.float64)
    probs = np.zeros((len(abnormal), 14))
    probs[:, 2 * region_index + 1] = abnormal
    probs[:, 2 * region_index] = 1 - abnormal
    return probs


def test_max_aggregation_calls_a_study_abnormal_on_one_abnormal_looking_image():
    # HAND study 1 (abnormal): images 0.2 and 0.9 -> mean 0.55, max 0.9
    # HAND study 2 (normal): images 0.1 and 0.6 -> mean 0.35 (normal), max 0.6 (abnormal)
    paths = paths_for([("HAND", "1", 1, 1, 1), ("HAND", "1", 1, 1, 2),
                       ("HAND", "2", 1, 0, 1), ("HAND", "2", 1, 0, 2)])  # fmt: skip
    predictions = make_predictions(paths, [7, 7, 6, 6], _two_class_probs([0.2, 0.9, 0.1, 0.6]))
    metrics, tables = compute_metrics(predictions, 0)
    aggregations = metrics["study_level"]["aggregations"]
    assert aggregations["mean"]["accuracy"] == 1.0 and aggregations["mean"]["kappa"] == 1.0
    assert aggregations["max"]["accuracy"] == 0.5 and aggregations["max"]["specificity"] == 0.0
    assert aggregations["max"]["kappa"] == 0.0 and aggregations["max"]["auroc"] == 1.0
    assert aggregations["mean"]["kappa"] == metrics["study_level"]["kappa"]
    np.testing.assert_allclose(tables["studies"]["p_abnormal_max"], [0.9, 0.6])


def test_a_one_view_only_split_has_empty_view_groups_with_reasons():
    paths = paths_for([("HAND", str(p), 1, p % 2, 1) for p in range(4)])
    predictions = make_predictions(paths, [6, 7, 6, 7], _two_class_probs([0.1, 0.8, 0.6, 0.7]))
    metrics, _ = compute_metrics(predictions, 0)
    by_views = metrics["study_level"]["by_views"]
    assert list(by_views) == ["1", "2", "3", "4+"]
    assert by_views["1"]["n_studies"] == 4 and by_views["1"]["accuracy"] == 0.75
    assert by_views["1"]["kappa"] == pytest.approx(cohen_kappa_score([0, 1, 0, 1], [0, 1, 1, 1]))
    for group in ("2", "3", "4+"):
        assert by_views[group] == {"n_studies": 0, "kappa": None, "auroc": None, "accuracy": None}
        assert "no studies with" in metrics["notes"][f"study_level.by_views.{group}"]


def test_views_group_studies_by_their_image_count():
    specs = [("WRIST", "1", 1, 1, i) for i in range(1, 6)]  # 5 images -> "4+"
    specs += [("WRIST", "2", 1, 0, 1), ("WRIST", "2", 1, 0, 2)]  # 2 images
    specs += [("WRIST", "3", 1, 1, i) for i in range(1, 4)]  # 3 images
    labels = [13] * 5 + [12] * 2 + [13] * 3
    predictions = make_predictions(paths_for(specs), labels, one_hot_probs(labels))
    by_views = compute_metrics(predictions, 0)[0]["study_level"]["by_views"]
    assert [by_views[g]["n_studies"] for g in ("1", "2", "3", "4+")] == [0, 1, 1, 1]
    # A group of one study has one class: kappa (all agree, one class) and AUROC undefined.
    assert by_views["4+"]["accuracy"] == 1.0 and by_views["4+"]["auroc"] is None


def test_region_given_uses_only_the_true_region_pair():
    # An ELBOW image whose mass went to WRIST_Abnormal: summed P(abnormal) 0.7 calls it
    # abnormal, region-given 0.1 / (0.1 + 0.2) = 1/3 calls it normal (its truth).
    paths = paths_for([("ELBOW", "1", 1, 0, 1), ("ELBOW", "2", 1, 1, 1)])
    probs = np.zeros((2, 14))
    probs[0, [0, 1, 13]] = [0.2, 0.1, 0.7]
    probs[1, [0, 1]] = [0.4, 0.6]
    metrics, tables = compute_metrics(make_predictions(paths, [0, 1], probs), 0)
    np.testing.assert_allclose(tables["studies"]["p_region_given"], [1 / 3, 0.6])
    assert metrics["study_level"]["accuracy"] == 0.5  # the summed mass gets image 1 wrong
    given = metrics["region_given"]
    assert given["study_level"]["accuracy"] == 1.0 and given["study_level"]["kappa"] == 1.0
    assert given["image_level"] == {"kappa": 1.0, "auroc": 1.0}
    assert given["study_level"]["per_region"]["ELBOW"] == {"n_studies": 2, "kappa": 1.0,
                                                           "auroc": 1.0}  # fmt: skip
    assert given["study_level"]["per_region"]["HAND"]["n_studies"] == 0


def test_region_given_of_a_region_with_one_class_is_none_with_a_reason():
    paths = paths_for([("HAND", "1", 1, 1, 1), ("HAND", "2", 1, 1, 1),
                       ("WRIST", "3", 1, 0, 1), ("WRIST", "4", 1, 1, 1)])  # fmt: skip
    labels = [7, 7, 12, 13]
    metrics, _ = compute_metrics(make_predictions(paths, labels, one_hot_probs(labels)), 0)
    hand = metrics["region_given"]["study_level"]["per_region"]["HAND"]
    assert hand["auroc"] is None and hand["kappa"] is None  # all abnormal, all called so
    path = "region_given.study_level.per_region.HAND"
    assert "AUROC needs both" in metrics["notes"][f"{path}.auroc"]
    assert "all one class" in metrics["notes"][f"{path}.kappa"]
    # Only the reported metrics leave notes (no sensitivity/specificity of region_given).
    assert not any(key.endswith(("sensitivity", "specificity")) and "region_given" in key
                   for key in metrics["notes"])  # fmt: skip


def test_a_study_exactly_at_the_operating_point_is_called_abnormal():
    paths = paths_for([("HAND", str(p), 1, a, 1) for p, a in enumerate([0, 0, 1, 1])])
    probs = _two_class_probs([0.1, 0.3, 0.3, 0.8])  # a normal and an abnormal study tie at 0.3
    metrics, _ = compute_metrics(make_predictions(paths, [6, 6, 7, 7], probs), 0, threshold=0.3)
    at_point = metrics["study_level"]["at_operating_point"]
    assert at_point["threshold"] == 0.3
    assert at_point["sensitivity"] == 1.0 and at_point["specificity"] == 0.5
    assert at_point["accuracy"] == 0.75
    assert at_point["kappa"] == pytest.approx(cohen_kappa_score([0, 0, 1, 1], [0, 1, 1, 1]))
    assert metrics["study_level"]["sensitivity"] == 0.5  # at 0.5 the 0.3 study is normal
