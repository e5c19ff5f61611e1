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
def reference_metrics(seed_predictions_dir, tmp_path_factory):
    """metrics.json of `python -m eval --predictions` on the seed predictions, converted
    to the predictions format (image_path, true_label, prob_*) in a temp dir."""
    seed = pd.read_csv(seed_predictions_dir / "test_predictions.csv")
    probs = np.load(seed_predictions_dir / "test_probs.npy")
    assert probs.shape == (3197, 14)
    work = tmp_path_factory.mktemp("reference")
    table = pd.DataFrame({"image_path": seed["image_path"], "true_label": seed["true_label"]})
    from bonify.vocabulary import CLASS_NAMES

    for index, name in enumerate(CLASS_NAMES):
        table[f"prob_{name}"] = probs[:, index]
    table.to_csv(work / "seed.csv", index=False)
    output = work / "eval"
    argv = ["--predictions", str(work / "seed.csv"), "--output_dir", str(output),
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
