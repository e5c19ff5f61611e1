"""The predictions file as the contract between `bonify-predict` and `bonify-eval`, and the
progress output of long predict runs (no model needed)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from bonify.predictions import PredictionsError, read_predictions, unscored_predictions_table
from bonify.vocabulary import NUM_CLASSES
from serve.predict import Progress

MURA_IMAGE = "MURA-v1.1/valid/XR_HAND/patient00002/study1_negative/image1.png"


def _write(tmp_path, paths):
    probs = np.full((len(paths), NUM_CLASSES), 1.0 / NUM_CLASSES)
    file = tmp_path / "preds.csv"
    unscored_predictions_table(paths, probs).to_csv(file, index=False)
    return file


def test_predict_output_for_mura_paths_reads_back_with_the_folder_label(tmp_path):
    predictions = read_predictions(str(_write(tmp_path, [MURA_IMAGE])))
    assert predictions.true_labels.tolist() == [6]  # HAND (index 3), normal
    assert predictions.regions.tolist() == ["HAND"]


def test_predict_output_without_labels_is_refused_naming_the_first_unlabelled_row(tmp_path):
    file = _write(tmp_path, [MURA_IMAGE, "incoming/scan.png"])
    with pytest.raises(PredictionsError, match=r"1 of 2 row\(s\) have no true_label .*row 2"):
        read_predictions(str(file))


def test_progress_is_plain_lines_when_not_on_a_terminal():
    stream = io.StringIO()
    progress = Progress(total=100, stream=stream)
    for done in range(10, 101, 10):
        progress.update(done)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("100/100 images read")
    assert "\r" not in stream.getvalue()


def test_progress_is_a_live_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = Progress(total=4, stream=stream)
    progress.update(2)
    progress.update(4)
    progress.close()
    assert stream.getvalue().count("\r[") == 2 and "4/4 images" in stream.getvalue()
