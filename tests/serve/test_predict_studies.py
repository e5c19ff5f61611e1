"""Per-image and per-study answers from probabilities (plain functions, no model)."""

from __future__ import annotations

import numpy as np

from bonify.predictions import WRITTEN_COLUMNS, unscored_predictions_table
from bonify.vocabulary import CLASS_NAMES
from serve.studies import abnormal_probability, image_verdicts, study_of, study_rows

MURA_IMAGE = "MURA-v1.1/valid/XR_WRIST/patient00007/study1_positive/image{}.png"


def _probs(**mass: float) -> np.ndarray:
    """One softmax row with the given class masses, the rest spread evenly."""
    row = np.zeros(len(CLASS_NAMES))
    for name, value in mass.items():
        row[CLASS_NAMES.index(name)] = value
    row[row == 0] = (1.0 - row.sum()) / np.count_nonzero(row == 0)
    return row


def test_abnormal_probability_is_the_mass_of_the_abnormal_classes():
    probs = np.stack([_probs(WRIST_Abnormal=0.5, HAND_Abnormal=0.3, WRIST_Normal=0.2)])
    np.testing.assert_allclose(abnormal_probability(probs), [0.8])


def test_image_status_is_called_at_the_threshold_with_its_confidence_and_top3():
    probs = np.stack([_probs(WRIST_Abnormal=0.6, WRIST_Normal=0.4)])
    (at_half,) = image_verdicts(["a.png"], probs, threshold=0.5)
    (strict,) = image_verdicts(["a.png"], probs, threshold=0.7)
    assert (at_half.region, at_half.status, round(at_half.confidence, 6)) == (
        "WRIST",
        "abnormal",
        0.6,
    )
    assert (strict.status, round(strict.confidence, 6)) == ("normal", 0.4)
    assert [name for name, _ in at_half.top3][:2] == ["WRIST_Abnormal", "WRIST_Normal"]


def test_study_region_is_the_majority_and_verdict_uses_the_mean_abnormal_mass():
    paths = [MURA_IMAGE.format(number) for number in (1, 2, 3)]
    probs = np.stack([
        _probs(WRIST_Abnormal=0.9, WRIST_Normal=0.1),
        _probs(WRIST_Normal=1.0),
        _probs(HAND_Abnormal=0.7, HAND_Normal=0.3),
    ])  # fmt: skip
    studies = [study_of(path, None) for path in paths]

    (row,) = study_rows(paths, studies, probs, threshold=0.5)

    assert row["study"] == "WRIST/patient00007/study1" and row["patient_id"] == "00007"
    assert (row["images"], row["region"]) == (3, "WRIST")
    assert abs(row["p_abnormal"] - (0.9 + 0.0 + 0.7) / 3) < 1e-9
    assert (row["verdict"], row["true_verdict"]) == ("abnormal", "abnormal")


def test_study_comes_from_dicom_identifiers_outside_the_mura_layout():
    ids = {"study": "1.2.840.1", "patient": "P7"}
    assert study_of("incoming/scan.dcm", ids) == ("1.2.840.1", "P7")
    assert study_of("incoming/scan.png", None) == ("incoming", "")
    assert study_of(MURA_IMAGE.format(1), ids)[0] == "WRIST/patient00007/study1"


def test_predictions_table_labels_mura_paths_and_leaves_others_empty():
    probs = np.stack([_probs(WRIST_Abnormal=1.0), _probs(HAND_Normal=1.0)])
    table = unscored_predictions_table([MURA_IMAGE.format(1), "incoming/x.png"], probs)
    assert list(table.columns) == list(WRITTEN_COLUMNS)
    labelled, unlabelled = table.to_dict("records")
    assert labelled["true_label"] == CLASS_NAMES.index("WRIST_Abnormal")
    assert labelled["correct"] == 1 and labelled["region"] == "WRIST"
    assert unlabelled["true_label"] == "" and unlabelled["region"] == ""
    assert unlabelled["pred_class"] == "HAND_Normal"
