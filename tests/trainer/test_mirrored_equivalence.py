"""MirroredStrategy on 2 logical CPUs trains the same weights as the default strategy on the
same global batch: a real run under each (subprocesses: the CPU split must happen before any
TensorFlow op), final weights compared array by array.

What Mirrored changes and this test covers: each global batch split across two replicas,
the loss divided by the global batch on each replica, the gradients summed across replicas,
class weights, the optimizer's updates, validation spread over replicas, reduce-LR and early
stopping with best-weight restore decided from the replicas' summed metrics.

What the config turns off, and why:
- BatchNormalization must not train. Under MirroredStrategy each replica normalises with its
  own batch's statistics (Keras' BatchNormalization defaults to synchronized=False), so a
  training BN layer sees 4 images on each replica where the default strategy sees 8: the
  runs are then different computations, not the same one in another order (measured on
  this tiny config: weights differ by ~5e-2). So the backbone is frozen (its BN layers run
  in inference mode) and the head has no hidden layer (each one carries a BN layer): the
  trained weights are the classifier's.
- Dropout draws its masks per replica from per-replica random streams, so the head has no
  dropout layer (no hidden layer, above).
- Augmentation stays on: it is seeded per record, not per replica, so both runs see the
  same pixels.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tests.support.trainer_runs import run_trainer

BN_FREE_TRAINING_CONFIG = """
model: {backbone: small_cnn, weights: none, small_cnn_width: 4, head_units: [], head_dropout: []}
data: {image_size: 64, shuffle_buffer: 64}
training: {global_batch_size: 8, steps_per_epoch: 3, validation_steps: 2,
           checkpoint_every_steps: 100, verbose: 2, seed: 5, tensorboard_images: 0}
distribute: {mixed_precision: "off"}
phases:
  - {name: one, trainable: head_only, learning_rate: 0.01, epochs: 3,
     reduce_lr: {patience: 1, factor: 0.5, min_delta: 1.0}}
  - {name: two, trainable: head_only, optimizer: sgd, learning_rate: 0.05, epochs: 1,
     class_weights: false}
"""


def _train(shards, job, config, *flags: str) -> subprocess.CompletedProcess:
    result = run_trainer(shards, job, config, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _final_weights(job) -> dict[str, np.ndarray]:
    import keras

    model = keras.saving.load_model(job / "model" / "final.keras")
    return {variable.path: np.asarray(variable) for variable in model.weights}


@pytest.mark.slow
def test_mirrored_on_two_cpus_ends_with_the_default_strategys_weights(sample_shards_dir, tmp_path):
    config = tmp_path / "bn_free.yaml"
    config.write_text(BN_FREE_TRAINING_CONFIG)
    _train(sample_shards_dir, tmp_path / "default", config, "--strategy", "default")
    mirrored = _train(
        sample_shards_dir, tmp_path / "mirrored", config,
        "--strategy", "mirrored", "--set", "distribute.logical_cpus=2",
    )  # fmt: skip
    assert "MirroredStrategy, 2 replicas" in mirrored.stdout

    default_weights = _final_weights(tmp_path / "default")
    mirrored_weights = _final_weights(tmp_path / "mirrored")
    assert default_weights.keys() == mirrored_weights.keys()
    for path, value in default_weights.items():
        np.testing.assert_allclose(mirrored_weights[path], value, rtol=0, atol=1e-5, err_msg=path)
    # Both runs went through a learning-rate reduction (epoch 3 of phase one), as configured.
    for job in ("default", "mirrored"):
        history = json.loads((tmp_path / job / "history.json").read_text())
        assert history[2]["learning_rate"] == history[0]["learning_rate"] / 2, job
