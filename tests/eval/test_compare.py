"""--compare OTHER: a paired bootstrap over patients of this run minus another on the same
images; anything else is one line naming what differs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eval.__main__ import main
from eval.compare import COMPARED_METRICS, paired_bootstrap
from eval.predictions import make_predictions


def _studies():
    return [(region, p, 1, p % 2, 1 + p % 3) for p in range(30) for region in ("HAND", "WRIST")]


@pytest.fixture
def rows(synthetic_rows_factory):
    return synthetic_rows_factory(_studies(), np.random.default_rng(0), 0.7)


def _evaluate(argv, output, capsys=None) -> dict:
    argv = [*map(str, argv), "--output_dir", str(output), "--bootstrap_resamples", "200"]
    assert main(argv) == 0
    return json.loads((output / "metrics.json").read_text())


def test_a_predictions_file_against_itself_differs_by_exactly_zero(
    rows, predictions_csv_factory, tmp_path
):
    csv = predictions_csv_factory(*rows)
    metrics = _evaluate(["--predictions", csv, "--compare", csv], tmp_path / "eval")
    assert set(metrics["comparison"]) == set(COMPARED_METRICS)
    for name, entry in metrics["comparison"].items():
        assert entry["delta"] == 0.0 and entry["ci95"] == [0.0, 0.0], name
        assert entry["significant"] is False
    assert metrics["compared_with"]["resamples"] == 200
    assert metrics["compared_with"]["n_patients"] == 30


def test_an_evaluation_folder_is_compared_through_its_predictions(
    rows, predictions_csv_factory, tmp_path
):
    paths, labels, probs = rows
    first = _evaluate(["--predictions", predictions_csv_factory(*rows)], tmp_path / "first")
    better = probs.copy()
    better[np.arange(len(labels)), labels] += 5.0  # every image right, confidently
    better /= better.sum(axis=1, keepdims=True)
    second = _evaluate(
        ["--predictions", predictions_csv_factory(paths, labels, better), "--compare",
         tmp_path / "first"], tmp_path / "second",
    )  # fmt: skip
    top1 = second["comparison"]["top1_accuracy"]
    assert top1["delta"] == pytest.approx(1.0 - first["top1_accuracy"])
    assert top1["other"] == pytest.approx(first["top1_accuracy"]) and top1["this"] == 1.0
    assert top1["ci95"][0] > 0 and top1["significant"] is True
    assert second["compared_with"]["predictions"] == str(tmp_path / "first" / "predictions.csv")


def test_paired_intervals_are_seeded_and_bracket_the_difference(rows):
    paths, labels, probs = rows
    this = make_predictions(paths, labels, probs).sorted_by_path()
    noisy = np.random.default_rng(1).random(probs.shape) * 0.3 + probs
    other = make_predictions(paths, labels, noisy / noisy.sum(axis=1, keepdims=True))
    other = other.sorted_by_path()
    first = paired_bootstrap(this, other, 100, seed=5)
    assert first == paired_bootstrap(this, other, 100, seed=5)
    assert first != paired_bootstrap(this, other, 100, seed=6)
    for name, entry in first.items():
        low, high = entry["ci95"]
        assert low <= entry["delta"] <= high, name
        assert entry["significant"] == (low > 0 or high < 0)


def test_without_resamples_there_is_a_difference_but_no_interval(rows):
    paths, labels, probs = rows
    this = make_predictions(paths, labels, probs).sorted_by_path()
    result = paired_bootstrap(this, this, 0, seed=0)
    assert result["study_kappa"] == {"delta": 0.0, "ci95": None, "significant": False,
                                     "this": result["study_kappa"]["this"],
                                     "other": result["study_kappa"]["other"],
                                     "undefined_resamples": 0}  # fmt: skip


@pytest.mark.parametrize("change", ["fewer_images", "other_paths"])
def test_predictions_of_other_images_are_one_line_naming_the_difference(
    rows, predictions_csv_factory, tmp_path, capsys, change
):
    paths, labels, probs = rows
    this = predictions_csv_factory(paths, labels, probs)
    if change == "fewer_images":
        other = predictions_csv_factory(paths[:-1], labels[:-1], probs[:-1])
        expected = f"{len(paths) - 1} images instead of {len(paths)}"
    else:
        moved = [path.replace("patient00000/", "patient99999/") for path in paths]
        other = predictions_csv_factory(moved, labels, probs)
        expected = "(in path order)"
    argv = ["--predictions", str(this), "--compare", str(other),
            "--output_dir", str(tmp_path / "eval")]  # fmt: skip
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"--compare {other}" in lines[0] and expected in lines[0]
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("what", ["folder_without_predictions", "missing"])
def test_a_compare_path_without_predictions_is_one_line(
    rows, predictions_csv_factory, tmp_path, capsys, what
):
    other = tmp_path / "other"
    if what == "folder_without_predictions":
        other.mkdir()
    argv = ["--predictions", str(predictions_csv_factory(*rows)), "--compare", str(other),
            "--output_dir", str(tmp_path / "eval")]  # fmt: skip
    assert main(argv) == 2
    line = capsys.readouterr().err.strip()
    assert f"--compare {other}" in line and "\n" not in line
    assert ("without predictions.csv" if what != "missing" else "no such file") in line
