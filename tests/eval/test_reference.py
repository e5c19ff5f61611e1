"""The evaluator reproduces the reference model's published numbers from its predictions.

The predictions are read in place from the workspace folder `SEED_PREDICTIONS_DIR` names
(tests/eval/conftest.py). Without it the tests skip on a developer's machine and fail in CI.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from eval.__main__ import main

REGION_ACCURACY = {"ELBOW": 0.834, "WRIST": 0.830, "HUMERUS": 0.785, "HAND": 0.767,
                   "SHOULDER": 0.760, "FINGER": 0.755, "FOREARM": 0.704}  # fmt: skip
STUDY_REGION_KAPPA = {"ELBOW": 0.678, "FINGER": 0.595, "FOREARM": 0.666, "HAND": 0.555,
                      "HUMERUS": 0.689, "SHOULDER": 0.577, "WRIST": 0.731}  # fmt: skip


@pytest.fixture(scope="module")
def reference_csv(seed_predictions_dir, tmp_path_factory):
    """The seed predictions converted to the predictions format (image_path, true_label,
    prob_*) in a temp dir."""
    seed = pd.read_csv(seed_predictions_dir / "test_predictions.csv")
    probs = np.load(seed_predictions_dir / "test_probs.npy")
    assert probs.shape == (3197, 14)
    work = tmp_path_factory.mktemp("reference")
    table = pd.DataFrame({"image_path": seed["image_path"], "true_label": seed["true_label"]})
    from bonify.vocabulary import CLASS_NAMES

    for index, name in enumerate(CLASS_NAMES):
        table[f"prob_{name}"] = probs[:, index]
    table.to_csv(work / "seed.csv", index=False)
    return work / "seed.csv"


@pytest.fixture(scope="module")
def reference_metrics(reference_csv):
    """metrics.json of `python -m eval --predictions` on the seed predictions."""
    output = reference_csv.parent / "eval"
    argv = ["--predictions", str(reference_csv), "--output_dir", str(output),
            "--bootstrap_resamples", "200"]  # fmt: skip
    assert main(argv) == 0
    return json.loads((output / "metrics.json").read_text())


def test_image_level_numbers_match_the_reference(reference_metrics):
    m = reference_metrics
    assert m["n_images"] == 3197
    assert round(m["top1_accuracy"], 4) == 0.7826
    assert round(m["top3_accuracy"], 4) == 0.9865
    assert round(m["cohen_kappa"], 4) == 0.7641
    assert round(m["f1_macro"], 4) == 0.7744
    assert round(m["f1_weighted"], 4) == 0.7791
    assert round(m["region_accuracy"], 4) == 0.9650


def test_region_accuracies_match_the_reference_table(reference_metrics):
    for region, accuracy in REGION_ACCURACY.items():
        assert round(reference_metrics["per_region"][region]["accuracy"], 3) == accuracy, region


def test_study_level_numbers_match_the_reference(reference_metrics):
    study = reference_metrics["study_level"]
    assert study["n_studies"] == 1199
    assert round(study["kappa"], 4) == 0.6474
    assert round(study["auroc"], 4) == 0.8887
    for region, kappa in STUDY_REGION_KAPPA.items():
        assert round(study["per_region"][region]["kappa"], 3) == kappa, region


def test_bootstrap_interval_brackets_the_point_estimate(reference_metrics):
    bootstrap = reference_metrics["bootstrap"]
    assert bootstrap["n_patients"] == 783
    for name, point in (("top1_accuracy", reference_metrics["top1_accuracy"]),
                        ("cohen_kappa", reference_metrics["cohen_kappa"]),
                        ("study_kappa", reference_metrics["study_level"]["kappa"])):  # fmt: skip
        assert bootstrap[name]["low"] < point < bootstrap[name]["high"], name


#: Issue 11's MURA-metric numbers of the reference predictions (docs/EVALUATION.md states them).
REGION_GIVEN_STUDY_KAPPA = {"ELBOW": 0.665, "FINGER": 0.606, "FOREARM": 0.635, "HAND": 0.555,
                            "HUMERUS": 0.733, "SHOULDER": 0.577, "WRIST": 0.731}  # fmt: skip
BY_VIEWS = {
    "1": (101, 0.324, 0.826),
    "2": (412, 0.613, 0.886),
    "3": (517, 0.682, 0.895),
    "4+": (169, 0.701, 0.899),
}  # fmt: skip (n_studies, kappa, auroc)
AT_THRESHOLD = {
    0.4: (0.6074, 0.8309, 0.7821),
    0.5: (0.6474, 0.7268, 0.9107),
    0.6: (0.5894, 0.6134, 0.9576),
}  # fmt: skip (kappa, sensitivity, specificity)


def test_mean_aggregation_beats_max_on_the_reference(reference_metrics):
    aggregations = reference_metrics["study_level"]["aggregations"]
    assert round(aggregations["mean"]["kappa"], 4) == 0.6474
    assert round(aggregations["max"]["kappa"], 4) == 0.6020
    assert round(aggregations["max"]["auroc"], 4) == 0.8810
    assert round(aggregations["max"]["sensitivity"], 4) == 0.8011


def test_region_given_numbers_of_the_reference(reference_metrics):
    given = reference_metrics["region_given"]
    assert round(given["image_level"]["kappa"], 4) == 0.6211
    assert round(given["image_level"]["auroc"], 4) == 0.8757
    assert round(given["study_level"]["kappa"], 4) == 0.6493
    assert round(given["study_level"]["auroc"], 4) == 0.8886
    for region, kappa in REGION_GIVEN_STUDY_KAPPA.items():
        assert round(given["study_level"]["per_region"][region]["kappa"], 3) == kappa, region


def test_kappa_grows_with_the_number_of_views_on_the_reference(reference_metrics):
    by_views = reference_metrics["study_level"]["by_views"]
    for group, (count, kappa, auroc) in BY_VIEWS.items():
        row = by_views[group]
        assert (row["n_studies"], round(row["kappa"], 3), round(row["auroc"], 3)) == (
            count,
            kappa,
            auroc,
        ), group


@pytest.mark.parametrize("threshold", sorted(AT_THRESHOLD))
def test_study_kappa_at_thresholds_on_the_reference(reference_csv, tmp_path, threshold):
    output = tmp_path / "eval"
    argv = ["--predictions", str(reference_csv), "--output_dir", str(output),
            "--bootstrap_resamples", "0", "--threshold", str(threshold)]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    at_point = metrics["study_level"]["at_operating_point"]
    kappa, sensitivity, specificity = AT_THRESHOLD[threshold]
    assert at_point["threshold"] == threshold
    assert round(at_point["kappa"], 4) == kappa
    assert round(at_point["sensitivity"], 4) == sensitivity
    assert round(at_point["specificity"], 4) == specificity


def test_present_reference_folder_is_used(reference_dir_or_skip_function, tmp_path):
    assert reference_dir_or_skip_function(tmp_path, {"CI": "true"}) == tmp_path


def test_absent_reference_folder_skips_outside_ci(reference_dir_or_skip_function, tmp_path):
    absent = tmp_path / "seed_predictions"
    for env in ({}, {"CI": ""}, {"CI": "false"}):
        with pytest.raises(pytest.skip.Exception, match="seed_predictions"):
            reference_dir_or_skip_function(absent, env)


@pytest.mark.parametrize("ci", ["true", "TRUE", "1", "yes"])
def test_absent_reference_folder_fails_in_ci_naming_it(
    reference_dir_or_skip_function, tmp_path, ci
):
    absent = tmp_path / "seed_predictions"
    with pytest.raises(pytest.fail.Exception) as failure:
        reference_dir_or_skip_function(absent, {"CI": ci})
    assert f"no folder {absent}" in str(failure.value)
