"""kill -9 at chosen points of every phase, then a rerun: the job ends exactly like the
uninterrupted run (same history, same per-phase results, bit-identical final weights).

The trainer runs as subprocesses and is killed with SIGKILL (no chance to save). The kill
points come from the run's own progress, so every phase is hit on every run, not by
wall-clock luck: JOB/training_state.json is rewritten at every epoch end and phase start,
and JOB/checkpoints/checkpoint names the latest save (here one per step). A kill point is
"once the state shows (phase, global step), after N more saves": N = 0 lands at the start
of the next epoch, N = 1 or 2 mid-epoch (in a step, the validation or a save).

The config makes a learning-rate reduction (phase one, after epoch 2) and an early stop
(phase two, after epoch 2 of 3) happen between two kills, so the resumed runs must restore
the reduced rate and the stopped phase from their checkpoints.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.support.trainer_runs import (
    REPO_ROOT,
    RUN_TIMEOUT,
    final_weights,
    run_trainer,
    stage_env,
    trainer_command,
)

# 3 steps per epoch. min_delta 1.0 on val_loss can never be met, so the plateau and the stop
# are decided by the patience alone, whatever the losses are:
# phase one: epochs 1-2 at 0.01, reduce-LR after epoch 2 (patience 1), epoch 3 at 0.005
# (and halved again after it);
# phase two: stops early after epoch 2 of 3 (patience 1); phase three: 2 epochs.
# Global steps: phase one 1-9, phase two 10-15, phase three 16-21.
KILL_CONFIG = """
model: {backbone: small_cnn, weights: none, small_cnn_width: 4, head_units: [16],
        head_dropout: [0.3], bn_momentum: 0.9}
data: {image_size: 64, shuffle_buffer: 64}
training: {global_batch_size: 8, steps_per_epoch: 3, validation_steps: 2,
           checkpoint_every_steps: 1, log_every_steps: 1, verbose: 2, seed: 3,
           tensorboard_images: 0}
distribute: {mixed_precision: "off"}
phases:
  - {name: one, trainable: "last_n:4", learning_rate: 0.01, epochs: 3,
     reduce_lr: {monitor: val_loss, patience: 1, factor: 0.5, min_delta: 1.0},
     early_stopping: {enabled: false}}
  - {name: two, trainable: all, learning_rate: 0.001, epochs: 3,
     reduce_lr: {enabled: false},
     early_stopping: {monitor: val_loss, patience: 1, min_delta: 1.0, restore_best: true}}
  - {name: three, trainable: all, learning_rate: 0.0005, epochs: 2, class_weights: false}
"""

# (phase, global step, further saves) of each kill; see the module docstring. Phase two
# starts at global step 9, phase three at 15. Between the 1st and 2nd kill phase one lowers
# its learning rate (after step 6); between the 4th and 5th phase two stops early (after 15).
KILL_POINTS = [(1, 3, 1), (1, 6, 1), (2, 9, 1), (2, 12, 0), (3, 15, 1)]


def _run_to_the_end(shards, job, config) -> subprocess.CompletedProcess:
    result = run_trainer(shards, job, config)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _training_state(job) -> dict | None:
    """JOB/training_state.json (written atomically), or None before the first save."""
    try:
        return json.loads((job / "training_state.json").read_text())
    except FileNotFoundError:
        return None


def _reached(job, phase: int, global_step: int) -> bool:
    state = _training_state(job)
    return state is not None and (state["phase"], state["global_step"]) >= (phase, global_step)


def _saves(job) -> int:
    """N of the latest JOB/checkpoints/ckpt-N (TensorFlow rewrites the index atomically)."""
    try:
        index = (job / "checkpoints" / "checkpoint").read_text()
    except FileNotFoundError:
        return 0
    return int(re.search(r'model_checkpoint_path: "ckpt-(\d+)"', index).group(1))


def _kill_at(shards, job, config, phase: int, global_step: int, further_saves: int) -> dict:
    """Start the trainer and SIGKILL it at a kill point (see the module docstring); returns
    the training state the killed run left behind."""
    process = subprocess.Popen(
        trainer_command(shards, job, config), cwd=REPO_ROOT, env=stage_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + RUN_TIMEOUT

    def wait_for(condition) -> None:
        while not condition() and process.poll() is None:
            assert time.time() < deadline, "the run did not reach its kill point in time"
            time.sleep(0.02)  # polling the job's files: there is no event to wait on
        assert process.poll() is None, f"the run ended before its kill point {phase, global_step}"

    try:
        wait_for(lambda: _reached(job, phase, global_step))
        saves_then = _saves(job)
        wait_for(lambda: _saves(job) >= saves_then + further_saves)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    return _training_state(job)


@pytest.fixture(scope="module")
def kill_config(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("config") / "kill.yaml"
    path.write_text(KILL_CONFIG)
    return path


@pytest.fixture(scope="module")
def uninterrupted_job(tmp_path_factory, sample_shards_dir, kill_config) -> pathlib.Path:
    job = tmp_path_factory.mktemp("uninterrupted") / "job"
    _run_to_the_end(sample_shards_dir, job, kill_config)
    return job


def test_uninterrupted_run_reduces_the_rate_then_stops_early_where_the_kills_expect(
    uninterrupted_job,
):
    state = _training_state(uninterrupted_job)
    one, two, three = state["phases"]
    history = json.loads((uninterrupted_job / "history.json").read_text())
    assert [row["global_step"] for row in history] == [3, 6, 9, 12, 15, 18, 21]
    # Halved after epoch 2 (epoch 3 trains at 0.005), and again after epoch 3.
    assert [row["learning_rate"] for row in history[:3]] == [0.01, 0.01, 0.005]
    assert one["epochs_completed"] == 3 and one["learning_rate"] == 0.0025
    assert two["epochs_completed"] == 2 and two["stopped_early"] is True
    assert three["epochs_completed"] == 2


@pytest.mark.slow
def test_kill_9_in_every_phase_then_resume_matches_the_uninterrupted_run(
    uninterrupted_job, sample_shards_dir, kill_config, tmp_path
):
    job = tmp_path / "job"
    killed_in_phase = []
    for phase, global_step, further_saves in KILL_POINTS:
        left = _kill_at(sample_shards_dir, job, kill_config, phase, global_step, further_saves)
        assert not left["completed"]
        killed_in_phase.append(left["phase"])
        if (phase, global_step) == (1, 6):  # after the reduction: the saved state holds it
            assert left["phases"][0]["learning_rate"] == 0.005
        if phase == 3:  # after the early stop: phase two is saved as stopped
            assert left["phases"][1]["stopped_early"] is True
    assert killed_in_phase == [1, 1, 2, 2, 3]  # every phase was killed at least once

    result = _run_to_the_end(sample_shards_dir, job, kill_config)
    assert "Resuming from" in result.stdout
    assert _training_state(job) == _training_state(uninterrupted_job)
    history = (job / "history.json").read_text()
    assert history == (uninterrupted_job / "history.json").read_text()
    resumed, uninterrupted = final_weights(job), final_weights(uninterrupted_job)
    assert len(resumed) == len(uninterrupted)
    for left, right in zip(resumed, uninterrupted, strict=True):
        np.testing.assert_array_equal(left, right)
