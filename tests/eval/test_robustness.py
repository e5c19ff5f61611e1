"""Odd splits evaluate without crashing, and metrics.json never holds NaN."""

from __future__ import annotations

import json

import numpy as np

from eval.__main__ import main


def strict_json(path):
    """Parse JSON rejecting NaN/Infinity (Python's json accepts them by default)."""

    def reject(constant):
        raise ValueError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def run(tmp_path, csv_path, name="out"):
    output = tmp_path / name
    argv = ["--predictions", str(csv_path), "--output_dir", str(output),
            "--bootstrap_resamples", "50"]  # fmt: skip
    assert main(argv) == 0
    return output, strict_json(output / "metrics.json")


def test_absent_classes_and_regions_give_null_with_reasons(
    tmp_path, synthetic_rows_factory, predictions_csv_factory
):
    rng = np.random.default_rng(0)
    studies = [("HAND", p, 1, p % 2, 2) for p in range(6)] + [("WRIST", 9, 1, 0, 1)]
    output, metrics = run(tmp_path, predictions_csv_factory(*synthetic_rows_factory(studies, rng)))
    assert metrics["per_region"]["ELBOW"]["accuracy"] is None
    assert metrics["study_level"]["per_region"]["WRIST"]["auroc"] is None  # normal studies only
    assert "ELBOW_Normal" in metrics["absent_classes"] and "ELBOW" in metrics["absent_regions"]
    assert "per_region.ELBOW" in metrics["notes"]
    assert "study_level.per_region.WRIST.auroc" in metrics["notes"]
    report = (output / "report.html").read_text()
    assert "study_level.per_region.WRIST.auroc" in report and "only one true class" in report


def test_single_image_studies(tmp_path, synthetic_rows_factory, predictions_csv_factory):
    rng = np.random.default_rng(1)
    studies = [(region, p, 1, p % 2, 1) for p in range(8) for region in ("ELBOW", "FINGER")]
    _, metrics = run(tmp_path, predictions_csv_factory(*synthetic_rows_factory(studies, rng)))
    assert metrics["study_level"]["n_studies"] == metrics["n_images"] == 16


def test_one_class_split_has_no_nan(tmp_path, synthetic_rows_factory, predictions_csv_factory):
    rng = np.random.default_rng(2)
    paths, labels, _ = synthetic_rows_factory([("SHOULDER", p, 1, 0, 2) for p in range(3)], rng)
    probs = np.zeros((len(labels), 14))
    probs[:, 10] = 1.0  # always right, always the same class: kappa is 0/0
    output, metrics = run(tmp_path, predictions_csv_factory(paths, labels, probs))
    assert metrics["top1_accuracy"] == 1.0
    assert metrics["cohen_kappa"] is None and metrics["study_level"]["kappa"] is None
    assert metrics["bootstrap"]["cohen_kappa"]["low"] is None
    assert metrics["study_level"]["sensitivity"] is None
    assert (output / "report.html").exists() and (output / "study_roc.png").stat().st_size > 0


def test_error_keeps_previous_output(tmp_path, synthetic_rows_factory, predictions_csv_factory):
    rng = np.random.default_rng(3)
    good = predictions_csv_factory(*synthetic_rows_factory([("HAND", 1, 1, 1, 2)], rng))
    output, _ = run(tmp_path, good)
    before = (output / "metrics.json").read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text(good.read_text().replace("HAND", "KNEE"))
    assert main(["--predictions", str(bad), "--output_dir", str(output)]) == 2
    assert (output / "metrics.json").read_text() == before


def test_bootstrap_can_be_disabled(tmp_path, synthetic_rows_factory, predictions_csv_factory):
    rng = np.random.default_rng(4)
    path = predictions_csv_factory(*synthetic_rows_factory([("HAND", 1, 1, 1, 2)], rng))
    argv = ["--predictions", str(path), "--output_dir", str(tmp_path / "o"),
            "--bootstrap_resamples", "0"]  # fmt: skip
    assert main(argv) == 0
    assert strict_json(tmp_path / "o" / "metrics.json")["bootstrap"]["resamples"] == 0
