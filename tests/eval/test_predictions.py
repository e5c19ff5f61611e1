"""Reading, validating and writing the predictions file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from eval.errors import EvalError
from eval.predictions import (
    WRITTEN_COLUMNS,
    make_predictions,
    predictions_csv_text,
    read_predictions,
)


@pytest.fixture
def good_rows(synthetic_rows_factory):
    rng = np.random.default_rng(0)
    return synthetic_rows_factory([("HAND", 1, 1, 1, 2), ("WRIST", 2, 1, 0, 3)], rng)


def test_region_patient_and_study_are_derived_from_the_path(predictions_csv_factory, good_rows):
    paths, labels, probs = good_rows
    paths = ["/kaggle/input/x/" + path for path in paths]  # any prefix works
    predictions = read_predictions(str(predictions_csv_factory(paths, labels, probs)))
    assert list(predictions.regions) == ["HAND"] * 2 + ["WRIST"] * 3
    assert predictions.patient_ids[2] == "00002"
    assert predictions.study_ids[0] == "HAND/patient00001/study1"
    np.testing.assert_allclose(predictions.probs, probs)


def test_written_file_reads_back_identically(tmp_path, good_rows):
    predictions = make_predictions(*good_rows)
    path = tmp_path / "out.csv"
    path.write_text(predictions_csv_text(predictions))
    assert list(pd.read_csv(path).columns) == list(WRITTEN_COLUMNS)
    again = read_predictions(str(path))
    np.testing.assert_array_equal(again.probs, predictions.probs)
    np.testing.assert_array_equal(again.study_ids, predictions.study_ids)


def _corrupt(tmp_path, good_rows, column, row, value):
    paths, labels, probs = good_rows
    table = pd.DataFrame({"image_path": paths, "true_label": labels})
    from bonify.vocabulary import CLASS_NAMES

    for index, name in enumerate(CLASS_NAMES):
        table[f"prob_{name}"] = probs[:, index]
    table = table.astype(str)
    table.loc[row, column] = value
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("prob_HAND_Abnormal", "abc", "row 3, column prob_HAND_Abnormal"),
        ("prob_WRIST_Normal", "-0.5", "row 3, column prob_WRIST_Normal"),
        ("true_label", "14", "row 3, column true_label"),
        ("true_label", "2.5", "row 3, column true_label"),
        ("true_label", "6", "row 3, column true_label"),  # disagrees with the study folder
        ("image_path", "images/foo.png", "row 3, column image_path"),
        ("image_path", "XR_KNEE/patient1/study1_positive/image1.png", "row 3, column image_path"),
    ],
)
def test_malformed_value_names_row_and_column(tmp_path, good_rows, column, value, expected):
    with pytest.raises(EvalError) as raised:
        read_predictions(_corrupt(tmp_path, good_rows, column, 2, value))
    message = str(raised.value)
    assert expected in message and "\n" not in message


def test_repeated_image_is_rejected(tmp_path, good_rows):
    paths, _, _ = good_rows
    with pytest.raises(EvalError, match="row 3, column image_path: .* repeats row 1"):
        read_predictions(_corrupt(tmp_path, good_rows, "image_path", 2, paths[0]))


def test_rows_not_summing_to_one_are_rejected(tmp_path, good_rows):
    path = _corrupt(tmp_path, good_rows, "prob_ELBOW_Normal", 0, "0.9")
    with pytest.raises(EvalError, match="row 1, columns prob_"):
        read_predictions(path)


def test_missing_column_is_named(tmp_path, good_rows, predictions_csv_factory):
    path = predictions_csv_factory(*good_rows)
    pd.read_csv(path).drop(columns=["prob_FINGER_Abnormal"]).to_csv(path, index=False)
    with pytest.raises(EvalError, match="missing column.*prob_FINGER_Abnormal"):
        read_predictions(str(path))


def test_empty_and_absent_files_are_clear_errors(tmp_path, good_rows, predictions_csv_factory):
    path = predictions_csv_factory(*good_rows)
    pd.read_csv(path).iloc[:0].to_csv(path, index=False)
    with pytest.raises(EvalError, match="zero rows"):
        read_predictions(str(path))
    with pytest.raises(EvalError, match="file not found"):
        read_predictions(str(tmp_path / "nope.csv"))
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(EvalError, match="not a readable CSV"):
        read_predictions(str(tmp_path / "blank.csv"))
