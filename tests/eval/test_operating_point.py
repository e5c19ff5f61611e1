"""The operating point in bonify-eval: --threshold / the card's threshold, the card's
temperature applied to model outputs, --fit_operating_point on the validation split only,
and --update_model_card writing what was fitted into the card."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bonify.model_card import CARD_FILE, load_card
from bonify.predictions import PROB_COLUMNS
from bonify.study_metrics import apply_temperature, fit_operating_point
from bonify.vocabulary import parse_study_path
from eval.__main__ import main
from tests.support.eval_runs import (
    one_error_line_before_tensorflow,
    run_eval_in_fresh_interpreter,
)


def _studies():
    """40 patients, one study each in HAND or WRIST, 1-3 images, half abnormal."""
    return [("HAND" if p % 2 else "WRIST", p, 1, p % 2, 1 + p % 3) for p in range(40)]


@pytest.fixture
def validation_csv(predictions_csv_factory, synthetic_rows_factory):
    """Predictions of images from MURA's train/ folder (where bonify's validation split
    comes from)."""
    paths, labels, probs = synthetic_rows_factory(_studies(), np.random.default_rng(0), 0.7)
    paths = [path.replace("MURA-v1.1/valid/", "MURA-v1.1/train/") for path in paths]
    return predictions_csv_factory(paths, labels, probs)


@pytest.fixture
def job_model(job_with_model):
    """The .keras file of job_with_model (tests/eval/conftest.py)."""
    return job_with_model / "model" / "final.keras"


@pytest.fixture
def test_csv(predictions_csv_factory, synthetic_rows_factory):
    """Predictions of images from MURA's valid/ folder (bonify's test split)."""
    return predictions_csv_factory(
        *synthetic_rows_factory(_studies(), np.random.default_rng(0), 0.7)
    )


def _evaluate(argv, output) -> dict:
    assert main([*map(str, argv), "--output_dir", str(output), "--bootstrap_resamples", "0"]) == 0
    return json.loads((output / "metrics.json").read_text())


def test_threshold_flag_sets_the_study_call_at_the_operating_point(test_csv, tmp_path):
    metrics = _evaluate(["--predictions", test_csv, "--threshold", "0.3"], tmp_path / "eval")
    point = metrics["operating_point"]
    assert (point["threshold"], point["source"]) == (0.3, "--threshold")
    assert point["temperature"] == 1.0
    studies = pd.read_csv(tmp_path / "eval" / "study_predictions.csv")
    truth, called = studies["true_abnormal"].to_numpy(), studies["p_abnormal"].to_numpy() >= 0.3
    at_point = metrics["study_level"]["at_operating_point"]
    assert at_point["threshold"] == 0.3
    assert at_point["accuracy"] == pytest.approx((called == truth).mean())
    assert at_point["sensitivity"] == pytest.approx(called[truth == 1].mean())
    assert at_point["specificity"] == pytest.approx(1 - called[truth == 0].mean())
    # The 0.5 numbers are still there, unchanged by the flag.
    at_half = studies["p_abnormal"].to_numpy() >= 0.5
    assert metrics["study_level"]["accuracy"] == pytest.approx((at_half == truth).mean())


def test_without_flag_or_card_the_operating_point_is_one_half(test_csv, tmp_path):
    metrics = _evaluate(["--predictions", test_csv], tmp_path / "eval")
    assert metrics["operating_point"]["source"] == "default"
    at_point = metrics["study_level"]["at_operating_point"]
    assert at_point["kappa"] == metrics["study_level"]["kappa"]
    assert at_point["accuracy"] == metrics["study_level"]["accuracy"]


def test_fitting_records_what_fit_operating_point_finds(validation_csv, tmp_path, capsys):
    argv = ["--predictions", validation_csv, "--split", "validation", "--fit_operating_point"]
    metrics = _evaluate(argv, tmp_path / "eval")
    fitted = metrics["operating_point"]["fitted"]
    table = pd.read_csv(validation_csv)
    study_ids = [parse_study_path(path).study_id for path in table["image_path"]]
    expected = fit_operating_point(
        table[list(PROB_COLUMNS)].to_numpy(), table["true_label"], study_ids
    )
    for key, value in expected.items():
        assert fitted[key] == pytest.approx(value), key
    assert fitted["source"] == "bonify-eval --fit_operating_point"
    assert fitted["fitted_on"] == {"predictions": str(validation_csv), "n_studies": 40,
                                   "n_images": len(table)}  # fmt: skip
    out = capsys.readouterr().out
    assert f"fitted on this split: threshold {fitted['threshold']:.4f}" in out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--split", "test", "--fit_operating_point"], "--split validation"),
        (["--fit_operating_point"], "--split validation"),  # test is the default split
        (["--split", "validation", "--update_model_card"], "give both"),
    ],
)
def test_fit_flags_on_the_wrong_split_are_one_line_before_tensorflow(tmp_path, argv, says):
    model = tmp_path / "final.keras"
    model.write_bytes(b"never loaded")
    result = run_eval_in_fresh_interpreter(
        ["--model", model, "--data_dir", tmp_path, "--output_dir", tmp_path / "eval", *argv]
    )
    assert says in one_error_line_before_tensorflow(result)


def test_fitting_on_predictions_of_the_test_folder_is_refused(test_csv, tmp_path, capsys):
    argv = ["--predictions", str(test_csv), "--split", "validation", "--fit_operating_point",
            "--output_dir", str(tmp_path / "eval")]  # fmt: skip
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "valid/ folder (bonify's test split)" in lines[0]
    assert str(test_csv) in lines[0]
    assert not (tmp_path / "eval").exists()


def test_update_model_card_without_a_model_is_refused(validation_csv, tmp_path):
    result = run_eval_in_fresh_interpreter(
        ["--predictions", validation_csv, "--split", "validation", "--fit_operating_point",
         "--update_model_card", "--output_dir", tmp_path / "eval"]
    )  # fmt: skip
    assert "with --predictions there is no model" in one_error_line_before_tensorflow(result)


def test_update_model_card_of_a_card_less_model_is_refused(tmp_path, sample_shards_dir):
    model = tmp_path / "final.keras"
    model.write_bytes(b"never loaded")
    result = run_eval_in_fresh_interpreter(
        ["--model", model, "--data_dir", sample_shards_dir, "--split", "validation",
         "--fit_operating_point", "--update_model_card", "--image_size", "64", "--resize", "pad",
         "--output_dir", tmp_path / "eval"]
    )  # fmt: skip
    line = one_error_line_before_tensorflow(result)
    assert "--update_model_card" in line and "no model_card.json" in line


@pytest.mark.slow
def test_the_card_temperature_and_threshold_apply_to_model_outputs(
    job_model, sample_shards_dir, tmp_path
):
    base = ["--model", job_model, "--data_dir", sample_shards_dir, "--split", "test"]
    plain = _evaluate(base, tmp_path / "plain")
    card_file = job_model.parent / CARD_FILE
    card = json.loads(card_file.read_text())
    card_file.write_text(json.dumps({**card, "temperature": 2.0, "threshold": 0.3}))
    scaled = _evaluate(base, tmp_path / "scaled")
    point = scaled["operating_point"]
    assert (point["threshold"], point["source"]) == (0.3, "model_card")
    assert (point["temperature"], point["temperature_source"]) == (2.0, "model_card")
    assert plain["operating_point"]["temperature"] == 1.0
    columns = list(PROB_COLUMNS)
    raw = pd.read_csv(tmp_path / "plain" / "predictions.csv")[columns].to_numpy()
    written = pd.read_csv(tmp_path / "scaled" / "predictions.csv")[columns].to_numpy()
    np.testing.assert_allclose(written, apply_temperature(raw, 2.0), rtol=1e-9, atol=1e-12)
    assert scaled["top1_accuracy"] == plain["top1_accuracy"]  # a temperature keeps the arg-max
    # The written (scaled) predictions, scored as a file, give the same metrics.
    again = _evaluate(["--predictions", tmp_path / "scaled" / "predictions.csv",
                       "--threshold", "0.3"], tmp_path / "again")  # fmt: skip
    for block in ("study_level", "region_given"):
        assert again[block] == scaled[block], block


@pytest.mark.slow
def test_fit_on_validation_writes_the_card_and_test_evaluation_uses_it(
    job_model, sample_shards_dir, tmp_path, capsys
):
    base = ["--model", job_model, "--data_dir", sample_shards_dir]
    fitted_run = _evaluate([*base, "--split", "validation", "--fit_operating_point",
                            "--update_model_card"], tmp_path / "validation")  # fmt: skip
    fitted = fitted_run["operating_point"]["fitted"]
    assert fitted["fitted_on"]["split"] == "validation"
    assert fitted["fitted_on"]["data_dir"] == str(sample_shards_dir)
    card = load_card(str(job_model))
    assert (card.threshold, card.temperature) == (fitted["threshold"], fitted["temperature"])
    assert card.raw["operating_point"] == fitted and card.raw["threshold_source"] == "fitted"
    assert fitted_run["operating_point"]["model_card_updated"] == card.path
    test_run = _evaluate([*base, "--split", "test"], tmp_path / "test")
    point = test_run["operating_point"]
    assert point["threshold"] == fitted["threshold"] and point["source"] == "model_card"
    assert point["card_threshold_source"] == "fitted"
    assert point["temperature"] == fitted["temperature"]
    out = capsys.readouterr().out
    assert f"at the operating point {fitted['threshold']:g}" in out


def _flatten(block, prefix=""):
    if isinstance(block, dict):
        items = {}
        for key, value in block.items():
            items |= _flatten(value, f"{prefix}.{key}")
        return items
    return {prefix: block}


@pytest.mark.slow
def test_in_process_beam_and_predictions_modes_give_the_same_mura_metrics(
    job_model, sample_shards_dir, tmp_path
):
    card_file = job_model.parent / CARD_FILE
    card = json.loads(card_file.read_text())
    card_file.write_text(json.dumps({**card, "temperature": 2.0, "threshold": 0.3}))
    base = ["--model", job_model, "--data_dir", sample_shards_dir, "--split", "test"]
    local = _evaluate(base, tmp_path / "local")
    beam = _evaluate([*base, "--runner=FnApiRunner"], tmp_path / "beam")
    from_file = _evaluate(["--predictions", tmp_path / "beam" / "predictions.csv",
                           "--threshold", "0.3"], tmp_path / "file")  # fmt: skip
    assert beam["operating_point"]["temperature"] == local["operating_point"]["temperature"] == 2.0
    for other in (beam, from_file):
        for block in ("study_level", "region_given"):
            expected, actual = _flatten(local[block]), _flatten(other[block])
            assert expected.keys() == actual.keys()
            for key, value in expected.items():
                # Beam's float32 outputs differ from in-process ones by ~1e-6.
                assert actual[key] == pytest.approx(value, abs=1e-4), (block, key)
