"""What a person reads from a run: the piped console log and the TensorBoard event files.

One short run (2 phases; the first reduces its learning rate, the second stops early) with
stdout piped, as in a pod or CI, and `training.verbose` left at its default (auto).
"""

from __future__ import annotations

import json
import pathlib
import re

import pytest

from tests.support.trainer_runs import run_trainer

#: Every test here needs a whole training run in a subprocess: left out of `make test-fast`.
pytestmark = pytest.mark.slow


CONFIG = """
model: {backbone: small_cnn, weights: none, small_cnn_width: 4, head_units: [16],
        head_dropout: [0.3], bn_momentum: 0.9}
data: {image_size: 64, shuffle_buffer: 64}
training: {global_batch_size: 8, steps_per_epoch: 3, validation_steps: 2, log_every_steps: 1,
           seed: 3}
distribute: {mixed_precision: "off"}
phases:
  # val_loss never improves by 10: the learning rate drops after epoch 2.
  - {name: one, trainable: "last_n:4", learning_rate: 0.01, epochs: 2,
     reduce_lr: {patience: 1, min_delta: 10}}
  # val_accuracy never improves by 10: the phase stops early after epoch 2 of 3.
  - {name: two, trainable: all, learning_rate: 0.001, epochs: 3,
     early_stopping: {patience: 1, min_delta: 10}}
"""
EPOCH_LINE = re.compile(
    r"^phase (\d)/2 (\w+) epoch (\d)/\d: loss (\S+) acc (\S+) top3 (\S+) \| "
    r"val_loss (\S+) val_acc (\S+) val_top3 (\S+) val_study_kappa (\S+) val_study_auroc (\S+) \| "
    r"lr (\d\.\d\de[-+]\d\d) \| "
    r"\d+\.\d images/s, \d+\.\d s$"
)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("config") / "logs.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory, sample_shards_dir, config_file):
    """(job dir, stdout) of the run with stdout piped."""
    job = tmp_path_factory.mktemp("piped") / "job"
    result = run_trainer(sample_shards_dir, job, config_file)
    assert result.returncode == 0, result.stderr[-3000:]
    return job, result.stdout


def _history(job) -> list[dict]:
    return json.loads((job / "history.json").read_text())


def test_piped_log_has_no_terminal_control_characters(piped_run):
    _, stdout = piped_run
    for character in ("\r", "\b", "\x1b"):
        assert character not in stdout, repr(character)


def test_piped_log_has_one_line_per_epoch_with_the_history_values(piped_run):
    job, stdout = piped_run
    lines = [EPOCH_LINE.match(line) for line in stdout.splitlines()]
    lines = [match.groups() for match in lines if match]
    history = _history(job)
    assert len(lines) == len(history) == 4
    for groups, record in zip(lines, history, strict=True):
        assert (int(groups[0]), groups[1], int(groups[2])) == (
            record["phase"], record["phase_name"], record["epoch"]
        )  # fmt: skip
        names = ["loss", "accuracy", "top3_accuracy"]
        names += [f"val_{name}" for name in names] + ["val_study_kappa", "val_study_auroc"]
        assert list(groups[3:11]) == [f"{record[name]:.4f}" for name in names]
        assert groups[11] == f"{record['learning_rate']:.2e}"


def test_piped_log_says_when_the_learning_rate_is_reduced(piped_run):
    _, stdout = piped_run
    assert (
        "phase 1 epoch 2: val_loss did not improve for 1 epoch; "
        "learning rate 1.00e-02 -> 3.00e-03" in stdout.splitlines()
    )


def test_piped_log_says_how_each_phase_ended(piped_run):
    job, stdout = piped_run
    state = json.loads((job / "training_state.json").read_text())
    one, two = state["phases"]
    assert (
        f"phase 1 one finished: 2 epochs, not stopped early; restored best epoch "
        f"{one['best_epoch']} (val_acc {one['best_val_accuracy']:.4f})" in stdout.splitlines()
    )
    assert (
        f"phase 2 two finished: stopped early after 2 of 3 epochs; restored best epoch "
        f"{two['best_epoch']} (val_acc {two['best_val_accuracy']:.4f})" in stdout.splitlines()
    )


def test_progress_bar_ends_on_the_values_of_the_epoch_line(
    sample_shards_dir, config_file, tmp_path
):
    """verbose 1 forces the bar even when piped; its last values are the epoch's means."""
    result = run_trainer(
        sample_shards_dir, tmp_path / "job", config_file,
        "--set", "training.verbose=1", "--set", "phases=[{epochs: 1}]",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    bar, epoch_line = re.search(
        r"([^\r\n]*)\n(phase 1/1 phase epoch 1/1: .*)", result.stdout
    ).groups()
    bar_values = dict(re.findall(r"(\w+): (\d+\.\d+)", bar))
    epoch_values = dict(re.findall(r"(loss|acc|top3) (\d+\.\d+)", epoch_line.split("|")[0]))
    assert bar_values == epoch_values and set(epoch_values) == {"loss", "acc", "top3"}


# ---- TensorBoard ------------------------------------------------------------------------


def _events(job):
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

    accumulator = EventAccumulator(str(job / "tensorboard"), size_guidance={TENSORS: 0})
    accumulator.Reload()
    return accumulator


def _values(accumulator, tag) -> list[tuple[int, float]]:
    import tensorflow as tf

    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]


def test_tensorboard_scalars_are_grouped_by_prefix(piped_run):
    job, _ = piped_run
    tags = set(_events(job).Tags()["tensors"])
    scalars = {tag for tag in tags if not tag.startswith(("_hparams_", "input_images/"))}
    assert scalars == {
        "train/loss", "train/accuracy", "train/top3_accuracy", "train/images_per_second",
        "epoch/loss", "epoch/accuracy", "epoch/top3_accuracy",
        "validation/loss", "validation/accuracy", "validation/top3_accuracy",
        "validation/study_kappa", "validation/study_auroc",
        "phase/learning_rate", "phase/index",
        "best/validation_accuracy", "best/validation_loss", "best/validation_study_kappa",
        "best/phase1_validation_accuracy", "best/phase1_validation_loss",
        "best/phase1_validation_study_kappa",
        "best/phase2_validation_accuracy", "best/phase2_validation_loss",
        "best/phase2_validation_study_kappa",
    }  # fmt: skip


def test_tensorboard_validation_and_phase_scalars_match_the_history(piped_run):
    job, _ = piped_run
    events, history = _events(job), _history(job)
    steps = [record["global_step"] for record in history]
    assert _values(events, "validation/accuracy") == [
        (step, pytest.approx(record["val_accuracy"]))
        for step, record in zip(steps, history, strict=True)
    ]
    assert [value for _, value in _values(events, "phase/index")] == [1, 1, 2, 2]
    assert [value for _, value in _values(events, "phase/learning_rate")] == pytest.approx(
        [record["learning_rate"] for record in history]
    )


def test_tensorboard_best_metrics_equal_the_training_state(piped_run):
    job, _ = piped_run
    events, history = _events(job), _history(job)
    phases = json.loads((job / "training_state.json").read_text())["phases"]
    for number, row in enumerate(phases, start=1):
        accuracy = _values(events, f"best/phase{number}_validation_accuracy")[-1][1]
        assert accuracy == pytest.approx(row["best_val_accuracy"])
        losses = [record["val_loss"] for record in history if record["phase"] == number]
        assert _values(events, f"best/phase{number}_validation_loss")[-1][1] == pytest.approx(
            min(losses)
        )
    overall = _values(events, "best/validation_accuracy")
    assert overall[-1] == (history[-1]["global_step"], pytest.approx(
        max(row["best_val_accuracy"] for row in phases)
    ))  # fmt: skip
    assert _values(events, "best/validation_loss")[-1][1] == pytest.approx(
        min(record["val_loss"] for record in history)
    )


def test_tensorboard_hparams_carry_the_recipe_and_compare_runs_by_best_metrics(piped_run):
    from tensorboard.plugins.hparams import plugin_data_pb2

    job, _ = piped_run
    events = _events(job)

    def plugin_data(tag):
        content = events.SummaryMetadata(tag).plugin_data.content
        return plugin_data_pb2.HParamsPluginData.FromString(content)

    hparams = plugin_data("_hparams_/session_start_info").session_start_info.hparams
    values = {
        key: value.string_value or value.number_value or value.bool_value
        for key, value in hparams.items()
    }
    assert values["phase1_learning_rate"] == 0.01 and values["phase2_learning_rate"] == 0.001
    assert (values["phase1_epochs"], values["phase2_epochs"]) == (2, 3)
    assert (values["phase1_trainable"], values["phase2_trainable"]) == ("last_n:4", "all")
    assert (values["seed"], values["image_size"]) == (3, 64)
    assert (values["resize"], values["encoding"], values["precision"]) == ("pad", "png", "off")
    assert values["replicas"] == 1 and "Strategy" in values["strategy"]
    metrics = plugin_data("_hparams_/experiment").experiment.metric_infos
    assert {metric.name.tag for metric in metrics} == {
        "best/validation_accuracy", "best/validation_loss", "best/validation_study_kappa",
        "best/phase1_validation_accuracy", "best/phase1_validation_loss",
        "best/phase1_validation_study_kappa",
        "best/phase2_validation_accuracy", "best/phase2_validation_loss",
        "best/phase2_validation_study_kappa",
    }  # fmt: skip


def test_tensorboard_input_images_are_captioned_with_their_class(piped_run):
    from bonify.vocabulary import CLASS_NAMES

    job, _ = piped_run
    events = _events(job)
    image_tags = [tag for tag in events.Tags()["tensors"] if tag.startswith("input_images/")]
    assert image_tags and {tag.split("/", 1)[1] for tag in image_tags} <= set(CLASS_NAMES)
    for tag in image_tags:
        assert tag.split("/", 1)[1] in events.SummaryMetadata(tag).summary_description


class _Stream:
    def __init__(self, terminal: bool):
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def test_verbose_auto_is_a_progress_bar_on_a_terminal_and_epoch_lines_otherwise():
    from trainer.run import resolve_verbose

    assert resolve_verbose("auto", _Stream(terminal=True)) == 1
    assert resolve_verbose("auto", _Stream(terminal=False)) == 2
    assert resolve_verbose(1, _Stream(terminal=False)) == 1  # a number forces the mode
