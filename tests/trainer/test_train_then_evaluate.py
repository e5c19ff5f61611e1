"""The contract between the trainer and the evaluator, on a model the trainer really produced.

The two stages talk only through files (JOB/model/final.keras, the shards and manifest.json),
so both run as their own command-line processes, as a user chains them.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.support.trainer_runs import run_python


@pytest.mark.slow
def test_evaluator_scores_every_test_image_with_the_model_the_trainer_wrote(
    sample_shards_dir, short_trained_job, tmp_path
):
    job, _ = short_trained_job
    evaluation = tmp_path / "eval"
    model = job / "model" / "final.keras"
    assert model.is_file()

    evaluated = run_python(
        "-m", "eval", "--model", str(model), "--data_dir", str(sample_shards_dir),
        "--split", "test", "--output_dir", str(evaluation), "--bootstrap_resamples", "0",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]

    manifest = json.loads((sample_shards_dir / "manifest.json").read_text())
    test_images = manifest["splits"]["test"]["images"]
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["n_images"] == test_images
    with open(evaluation / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == test_images
    assert len({row["image_path"] for row in rows}) == test_images  # each image once
    probability_columns = [name for name in rows[0] if name.startswith("prob_")]
    assert len(probability_columns) == 14
    sums = [sum(float(row[name]) for name in probability_columns) for row in rows]
    np.testing.assert_allclose(sums, 1.0, atol=1e-4)  # the model's softmax, not garbage
