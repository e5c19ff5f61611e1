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

# The smallest real run: a tiny CNN, one phase of one short epoch (the numbers do not matter
# here, only that the trainer's own output is what the evaluator reads).
SHORT_RUN_CONFIG = """
model: {backbone: small_cnn, weights: none, small_cnn_width: 4, head_units: [16],
        head_dropout: [0.1]}
data: {image_size: 64, shuffle_buffer: 64}
training: {global_batch_size: 8, steps_per_epoch: 2, validation_steps: 1, verbose: 2,
           tensorboard_images: 0}
distribute: {mixed_precision: "off"}
phases:
  - {name: only, trainable: all, learning_rate: 0.01, epochs: 1}
"""


@pytest.mark.slow
def test_evaluator_scores_every_test_image_with_the_model_the_trainer_wrote(
    sample_shards_dir, tmp_path
):
    config = tmp_path / "short.yaml"
    config.write_text(SHORT_RUN_CONFIG)
    job, evaluation = tmp_path / "job", tmp_path / "eval"
    trained = run_python(
        "-m", "trainer", "--data_dir", str(sample_shards_dir), "--job_dir", str(job),
        "--config", str(config),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
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
