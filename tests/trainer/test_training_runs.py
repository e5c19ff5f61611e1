"""End-to-end runs of `python -m trainer` as subprocesses on the sample shards.

Each run is a fresh process (the CPU split for MirroredStrategy and the multi-worker runtime
must be set before any TF op, so those runs happen only in subprocesses). A tiny CNN, 64 px,
3 steps per epoch and 1-2 epochs per phase keep every run to ~10-20 s on a 2-core CPU.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.support.trainer_runs import (
    REPO_ROOT,
    RUN_TIMEOUT,
    final_weights,
    finish_worker_group,
    run_trainer,
    stage_env,
    start_worker_group,
    trainer_command,
)

#: Every test here needs whole training runs in subprocesses: left out of `make test-fast`.
pytestmark = pytest.mark.slow


TINY_CONFIG = """
model: {backbone: small_cnn, weights: none, small_cnn_width: 4, head_units: [16],
        head_dropout: [0.3], bn_momentum: 0.9}
data: {image_size: 64, shuffle_buffer: 64}
training: {global_batch_size: 8, steps_per_epoch: 3, validation_steps: 2,
           checkpoint_every_steps: 1, log_every_steps: 1, verbose: 2, seed: 3}
distribute: {mixed_precision: "off"}
phases:
  - {name: one, trainable: "last_n:4", learning_rate: 0.01, epochs: 2}
  - {name: two, trainable: all, learning_rate: 0.001, epochs: 1}
  - {name: three, trainable: all, learning_rate: 0.0005, epochs: 2, class_weights: false}
"""


def epochs_per_phase(job) -> list[int]:
    state = json.loads((job / "training_state.json").read_text())
    return [row["epochs_completed"] for row in state["phases"]]


def assert_same_weights(job_a, job_b) -> None:
    a, b = final_weights(job_a), final_weights(job_b)
    assert len(a) == len(b)
    for left, right in zip(a, b, strict=True):
        np.testing.assert_array_equal(left, right)


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


@pytest.fixture(scope="module")
def reference_job(tmp_path_factory, sample_shards_dir, tiny_config):
    """One uninterrupted single-device run: (job dir, wall seconds, completed process)."""
    job = tmp_path_factory.mktemp("reference") / "job"
    started = time.time()
    result = run_trainer(sample_shards_dir, job, tiny_config)
    assert result.returncode == 0, result.stderr[-3000:]
    return job, time.time() - started, result


def test_uninterrupted_run_writes_state_history_models_and_config(reference_job):
    job, _, result = reference_job
    state = json.loads((job / "training_state.json").read_text())
    assert state["completed"] is True
    assert [row["name"] for row in state["phases"]] == ["one", "two", "three"]
    assert epochs_per_phase(job) == [2, 1, 2]
    history = json.loads((job / "history.json").read_text())
    assert [(h["phase"], h["epoch"]) for h in history] == [(1, 1), (1, 2), (2, 1), (3, 1), (3, 2)]
    assert history[-1]["global_step"] == 15  # steps continue across phases
    for name in ("final.keras", "phase1_best.keras", "phase2_best.keras", "phase3_best.keras"):
        assert (job / "model" / name).is_file()
    assert (job / "export" / "saved_model.pb").is_file()
    assert "small_cnn" in (job / "config.yaml").read_text()
    # One best-weights file set per phase is kept: the epoch the state names as best.
    for index, row in enumerate(state["phases"]):
        kept = {path.name.split(".")[0] for path in (job / "best" / f"phase{index + 1}").iterdir()}
        assert kept == {f"epoch{row['best_epoch']}"}, (index, kept)
    assert "tensorboard --logdir" in result.stdout


def test_rerun_of_finished_job_prints_summary_and_exits_0(
    reference_job, sample_shards_dir, tiny_config
):
    job, _, _ = reference_job
    before = (job / "model" / "final.keras").stat().st_mtime
    result = run_trainer(sample_shards_dir, job, tiny_config)
    assert result.returncode == 0
    first, *rest = result.stdout.strip().splitlines()
    assert first.startswith(f"{job} is already finished") and "Training summary" in rest
    assert (job / "model" / "final.keras").stat().st_mtime == before


def test_final_keras_loads_without_importing_trainer(reference_job):
    job, _, _ = reference_job
    code = (
        "import sys, numpy as np, keras\n"
        f"m = keras.saving.load_model({str(job / 'model' / 'final.keras')!r})\n"
        "assert 'trainer' not in sys.modules\n"
        "p = m.predict_on_batch(np.zeros((2, 64, 64, 1), np.uint8))\n"
        "print(m.inputs[0].dtype, p.dtype, p.shape, round(float(p.sum()), 3))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd="/", env=stage_env({"PYTHONPATH": ""}),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["uint8", "float32", "(2,", "14)", "2.0"]


def test_saved_model_predicts_on_png_bytes(reference_job, sample_shards_dir):
    import tensorflow as tf

    job, _, _ = reference_job
    loaded = tf.saved_model.load(str(job / "export"))
    serve = loaded.signatures["serving_default"]
    image = tf.cast(tf.random.stateless_uniform([80, 50, 1], [1, 2], 0, 255), tf.uint8)
    png = tf.io.encode_png(image)
    jpeg = tf.io.encode_jpeg(image)
    output = serve(images=tf.stack([png, jpeg]))
    probabilities = next(iter(output.values())).numpy()
    assert probabilities.shape == (2, 14)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_tensorboard_has_the_expected_tags(reference_job):
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

    job, _, _ = reference_job
    accumulator = EventAccumulator(str(job / "tensorboard"), size_guidance={TENSORS: 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["tensors"])
    for group, names in {
        "train": ("loss", "accuracy", "top3_accuracy", "images_per_second"),
        "epoch": ("loss", "accuracy", "top3_accuracy"),
        "validation": ("loss", "accuracy", "top3_accuracy"),
        "phase": ("learning_rate", "index"),
        "best": ("validation_accuracy", "validation_loss"),
    }.items():
        assert {f"{group}/{name}" for name in names} <= tags, group
    assert any(tag.startswith("input_images/") for tag in tags)
    steps = [event.step for event in accumulator.Tensors("phase/index")]
    assert max(steps) == 15


def _checkpoint_number(job) -> int:
    """N of the latest JOB/checkpoints/ckpt-N (0 when none yet)."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(job / "checkpoints"))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


MIRRORED = ("--strategy", "mirrored", "--set", "distribute.logical_cpus=2")


@pytest.fixture(scope="module")
def mirrored_job(tmp_path_factory, sample_shards_dir, tiny_config):
    """One uninterrupted 2-replica MirroredStrategy run on 2 logical CPUs."""
    job = tmp_path_factory.mktemp("mirrored") / "job"
    result = run_trainer(sample_shards_dir, job, tiny_config, *MIRRORED)
    assert result.returncode == 0, result.stderr[-3000:]
    return job, result


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_sigterm_saves_exits_143_and_rerun_finishes_identically(
    strategy, request, sample_shards_dir, tiny_config, tmp_path
):
    # The uninterrupted run of the same strategy: (job dir, ...).
    reference = request.getfixturevalue(
        f"{'reference' if strategy == 'default' else 'mirrored'}_job"
    )[0]
    flags = MIRRORED if strategy == "mirrored" else ()
    job = tmp_path / "job"
    process = subprocess.Popen(
        trainer_command(sample_shards_dir, job, tiny_config, *flags), cwd=REPO_ROOT, env=stage_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (job / "training_state.json").exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        sent = time.time()
        stdout, _ = process.communicate(timeout=60)
        assert time.time() - sent < 15, "the SIGTERM save should take seconds"
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    assert process.returncode == 143
    state = json.loads((job / "training_state.json").read_text())
    position = f"phase {state['phase']} epoch {state['epoch']} step {state['step_in_epoch']}"
    assert f"stopped after SIGTERM at {position}; checkpoint saved; rerun the same command to " \
        "resume" in stdout.splitlines()  # fmt: skip
    assert not state["completed"] and state["global_step"] > 0
    result = run_trainer(sample_shards_dir, job, tiny_config, *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from" in result.stdout
    assert_same_weights(job, reference)


INTERRUPTED = re.compile(
    r"^interrupted at phase (\d+) epoch (\d+) step (\d+); checkpoint saved; "
    r"rerun the same command to resume$"
)


def test_ctrl_c_saves_exits_130_and_rerun_finishes_like_uninterrupted(
    reference_job, sample_shards_dir, tiny_config, tmp_path
):
    """SIGINT (Ctrl-C) under the default strategy: save at the next step, one line saying
    where, exit 130; the same command then ends with the uninterrupted run's weights. With a
    progress bar (verbose 1), the line still starts a line of its own."""
    job = tmp_path / "job"
    process = subprocess.Popen(
        trainer_command(sample_shards_dir, job, tiny_config, "--set", "training.verbose=1"),
        cwd=REPO_ROOT, env=stage_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while _checkpoint_number(job) < 4 and process.poll() is None:
            assert time.time() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr[-3000:]
    assert "Ctrl-C received, saving at the next step" in stderr
    (match,) = [m for m in map(INTERRUPTED.match, stdout.split("\n")) if m]
    state = json.loads((job / "training_state.json").read_text())
    assert not state["completed"]
    # The console and training_state.json number the phase, epoch and step the same way.
    assert tuple(map(int, match.groups())) == (
        state["phase"], state["epoch"], state["step_in_epoch"]
    )  # fmt: skip
    result = run_trainer(sample_shards_dir, job, tiny_config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming from" in result.stdout
    assert epochs_per_phase(job) == epochs_per_phase(reference_job[0])
    assert_same_weights(job, reference_job[0])


def test_second_ctrl_c_aborts_at_once_without_saving(monkeypatch):
    """The handler itself: the first Ctrl-C asks for a save, a second one (e.g. while the
    save runs) exits 130 at once."""
    from trainer import run

    exits = []

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(run, "_stop_signal", None)
    monkeypatch.setattr(run.os, "_exit", fake_exit)
    run._on_stop_signal(signal.SIGINT, None)
    assert run._stop_signal == signal.SIGINT and exits == []
    with pytest.raises(SystemExit):
        run._on_stop_signal(signal.SIGINT, None)
    assert exits == [130]


def test_mirrored_on_two_logical_cpus_trains_all_phases(mirrored_job):
    job, result = mirrored_job
    assert "MirroredStrategy, 2 replicas" in result.stdout
    assert epochs_per_phase(job) == [2, 1, 2]


def _start_workers(shards, job, config) -> list[subprocess.Popen]:
    return start_worker_group(trainer_command(shards, job, config, "--strategy", "multi_worker"))


def _run_workers(shards, job, config) -> list[tuple[int, str, str]]:
    """Run a 2-worker group to the end: [(returncode, stdout, stderr)] per worker."""
    return finish_worker_group(_start_workers(shards, job, config))


def _fingerprints(results) -> list[str]:
    return [
        line.split("sha256:")[1].strip()
        for _, stdout, _ in results
        for line in stdout.splitlines()
        if "weights sha256:" in line
    ]


@pytest.fixture(scope="module")
def multi_worker_job(tmp_path_factory, sample_shards_dir, tiny_config):
    """An uninterrupted 2-process MultiWorkerMirroredStrategy run on localhost."""
    job = tmp_path_factory.mktemp("multi_worker") / "job"
    results = _run_workers(sample_shards_dir, job, tiny_config)
    for returncode, _, stderr in results:
        assert returncode == 0, stderr[-3000:]
    return job, results


def test_two_process_multi_worker_run_ends_with_identical_weights(multi_worker_job):
    job, results = multi_worker_job
    fingerprints = _fingerprints(results)
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    assert "CollectiveAllReduceStrategy, 2 replicas in sync" in results[0][1]  # = MWMS
    assert epochs_per_phase(job) == [2, 1, 2]
    assert not (job / "tmp" / "worker1").exists()  # the non-chief's temp saves are removed
    # The operating point is fitted and written once, by the chief.
    chief, other = (stdout.splitlines() for _, stdout, _ in results)
    assert sum(line.startswith("operating point (validation") for line in chief) == 1
    assert not any(line.startswith("operating point") for line in other)
    card = json.loads((job / "model" / "model_card.json").read_text())
    assert card["operating_point"]["source"] == "trainer"


def test_multi_worker_group_killed_and_restarted_matches_uninterrupted_group(
    multi_worker_job, sample_shards_dir, tiny_config, tmp_path
):
    reference, reference_results = multi_worker_job
    job = tmp_path / "job"
    target = random.Random(99).randrange(4, _checkpoint_number(reference) - 2)
    processes = _start_workers(sample_shards_dir, job, tiny_config)
    try:
        deadline = time.time() + RUN_TIMEOUT
        while _checkpoint_number(job) < target and all(p.poll() is None for p in processes):
            assert time.time() < deadline
            time.sleep(0.05)
        assert all(p.poll() is None for p in processes), "the group ended before its kill point"
        for process in processes:  # MWMS cannot go on without a worker: the group restarts
            os.kill(process.pid, signal.SIGKILL)
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.communicate(timeout=30)
    results = _run_workers(sample_shards_dir, job, tiny_config)
    for returncode, _, stderr in results:
        assert returncode == 0, stderr[-3000:]
    assert "Resuming from" in results[0][1]
    assert epochs_per_phase(job) == epochs_per_phase(reference)
    assert _fingerprints(results) == _fingerprints(reference_results)


def test_nonfinite_loss_restores_last_checkpoint_and_run_ends_like_uninterrupted(
    reference_job, sample_shards_dir, tiny_config, tmp_path, monkeypatch, capsys
):
    """fp32 has no loss scaling to skip a bad step: the trainer restores the last checkpoint.

    In-process, the real train step is wrapped so that one step (in phase 2) reports a
    non-finite loss and really leaves NaN in the weights. The run must restore, replay, log
    it and end with the uninterrupted run's weights; were the NaN kept, they would differ.
    """
    import tensorflow as tf

    from trainer import loop
    from trainer.run import train

    reference, _, _ = reference_job
    real_make_train_step = loop.make_train_step
    calls = {"steps": 0, "poisoned": 0}

    def make_train_step(strategy, model, *args, **kwargs):
        real_step = real_make_train_step(strategy, model, *args, **kwargs)

        def step(iterator, stop_flag):
            out = real_step(iterator, stop_flag)
            calls["steps"] += 1
            if calls["steps"] == 8 and not calls["poisoned"]:
                calls["poisoned"] += 1
                first = model.trainable_weights[0]
                first.assign(tf.fill(first.shape, float("nan")))
                out = dict(out, nonfinite=tf.constant(1.0))
            return out

        return step

    monkeypatch.setattr(loop, "make_train_step", make_train_step)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert train(str(sample_shards_dir), str(tmp_path / "job"), str(tiny_config)) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert calls["poisoned"] == 1
    assert "non-finite loss at global step" in capsys.readouterr().out
    assert epochs_per_phase(tmp_path / "job") == epochs_per_phase(reference)
    assert_same_weights(tmp_path / "job", reference)


def test_nonfinite_loss_every_step_stops_after_bounded_retries(
    sample_shards_dir, tiny_config, tmp_path
):
    """A learning rate that diverges at once: restores are bounded, then one clear error."""
    result = run_trainer(
        sample_shards_dir, tmp_path / "job", tiny_config,
        "--set", "phases.0.learning_rate=1e30", "--set", "training.max_nonfinite_retries=2",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stdout.count("restoring the last checkpoint") == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert "non-finite loss" in last_line and "after 2 restores" in last_line


def test_xla_compiled_step_trains_under_mirrored(sample_shards_dir, tiny_config, tmp_path):
    job = tmp_path / "job"
    result = run_trainer(
        sample_shards_dir, job, tiny_config, "--strategy", "mirrored", "--xla",
        "--set", "distribute.logical_cpus=2", "--set", "phases=[{epochs: 1}]",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "XLA True" in result.stdout
    assert epochs_per_phase(job) == [1]
    assert all(np.isfinite(w).all() for w in final_weights(job))


def test_sigterm_to_one_worker_stops_the_whole_group_at_one_step_and_rerun_matches(
    multi_worker_job, sample_shards_dir, tiny_config, tmp_path
):
    """Kubernetes evicts one pod: the stop flag is summed across workers inside the step,
    so both save at the same step and exit 143; the restarted group ends as if uninterrupted."""
    _, reference_results = multi_worker_job
    job = tmp_path / "job"
    processes = _start_workers(sample_shards_dir, job, tiny_config)
    try:
        deadline = time.time() + RUN_TIMEOUT
        while _checkpoint_number(job) < 3 and all(p.poll() is None for p in processes):
            assert time.time() < deadline
            time.sleep(0.05)
        processes[1].send_signal(signal.SIGTERM)  # the non-chief only
        outputs = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
    assert [process.returncode for process in processes] == [143, 143], outputs[0][1][-2000:]
    assert "after SIGTERM" in outputs[0][0]  # the chief saved, though it got no signal
    results = _run_workers(sample_shards_dir, job, tiny_config)
    for returncode, _, stderr in results:
        assert returncode == 0, stderr[-3000:]
    assert "Resuming from" in results[0][1]
    assert _fingerprints(results) == _fingerprints(reference_results)


def test_float16_step_skipped_by_the_loss_scaler_stays_out_of_epoch_metrics(
    sample_shards_dir, tiny_config, tmp_path, monkeypatch
):
    """float16: the LossScaleOptimizer skips a step with non-finite gradients and training
    goes on (no restore); that step's inf loss must not turn the epoch's mean loss into inf."""
    import tensorflow as tf

    from trainer import loop
    from trainer.run import train

    real_make_train_step = loop.make_train_step
    calls = {"steps": 0}

    def make_train_step(*args, **kwargs):
        real_step = real_make_train_step(*args, **kwargs)

        def step(iterator, stop_flag):
            out = real_step(iterator, stop_flag)
            calls["steps"] += 1
            if calls["steps"] == 2:  # as a step with an overflowing loss reports it
                out = dict(out, loss_sum=tf.constant(float("inf")), nonfinite=tf.constant(1.0))
            return out

        return step

    monkeypatch.setattr(loop, "make_train_step", make_train_step)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        code = train(
            str(sample_shards_dir), str(tmp_path / "job"), str(tiny_config),
            overrides=["phases=[{epochs: 1}]"], mixed_precision="float16",
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert code == 0
    (epoch,) = json.loads((tmp_path / "job" / "history.json").read_text())
    assert np.isfinite(epoch["loss"]) and epoch["loss"] > 0


def unfinished_copy(job: pathlib.Path, destination: pathlib.Path) -> pathlib.Path:
    """A copy of a finished job that a rerun does not take as finished (it then checks
    whether it may resume; the checkpoints themselves are the finished run's)."""
    import shutil

    shutil.copytree(job, destination)
    state = json.loads((destination / "training_state.json").read_text())
    (destination / "training_state.json").write_text(json.dumps(dict(state, completed=False)))
    return destination


def test_resuming_with_a_config_that_changes_the_checkpoints_is_refused(
    reference_job, sample_shards_dir, tiny_config, tmp_path
):
    job = unfinished_copy(reference_job[0], tmp_path / "job")
    saved_config = (job / "config.yaml").read_text()
    result = run_trainer(
        sample_shards_dir, job, tiny_config, "--set", "phases.0.trainable=all",
        "--set", "training.verbose=1",  # allowed to change on resume; not the one reported
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "config key 'phases.0.trainable' = 'last_n:4', this run has 'all'" in last
    assert (job / "config.yaml").read_text() == saved_config  # nothing overwritten


def test_sigterm_during_validation_stops_after_the_epoch_save_and_rerun_matches(
    reference_job, sample_shards_dir, tiny_config, tmp_path, monkeypatch, capsys
):
    """SIGTERM arriving while no train step runs (here: in the first validation) stops at the
    epoch-end checkpoint instead of waiting for the next step; a rerun in the same process
    (the stop flag reset) ends with the uninterrupted run's weights."""
    from trainer import loop
    from trainer.run import SIGTERM_EXIT_CODE, train

    real_make_eval_step = loop.make_eval_step
    sent = []

    def make_eval_step(*args, **kwargs):
        real_step = real_make_eval_step(*args, **kwargs)

        def step(iterator):
            if not sent:
                sent.append(True)
                os.kill(os.getpid(), signal.SIGTERM)  # the trainer's own handler takes it
            return real_step(iterator)

        return step

    job = tmp_path / "job"
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(loop, "make_eval_step", make_eval_step)
            assert train(str(sample_shards_dir), str(job), str(tiny_config)) == SIGTERM_EXIT_CODE
        assert (
            "stopped after SIGTERM at phase 1 epoch 1 step 3; checkpoint saved; "
            "rerun the same command to resume"
        ) in capsys.readouterr().out.splitlines()
        state = json.loads((job / "training_state.json").read_text())
        position = (state["phase"], state["epoch"], state["step_in_epoch"], state["completed"])
        assert position == (1, 1, 3, False)  # the console's numbers: 3 steps of epoch 1 done
        assert train(str(sample_shards_dir), str(job), str(tiny_config)) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert epochs_per_phase(job) == epochs_per_phase(reference_job[0])
    assert_same_weights(job, reference_job[0])


def test_resuming_with_another_resolved_precision_is_refused(
    reference_job, sample_shards_dir, tiny_config, tmp_path
):
    job = unfinished_copy(reference_job[0], tmp_path / "job")
    result = run_trainer(sample_shards_dir, job, tiny_config, "--mixed_precision", "bfloat16")
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "was trained with mixed precision 'off'" in last and "'bfloat16'" in last
