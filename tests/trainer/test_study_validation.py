"""MURA's metric inside the trainer: the validation study kappa / AUROC of every epoch,
`training.monitor`, and the operating point fitted at the end of training.

Unit tests on constructed inputs (plain Python), then real runs of `python -m trainer`
(single process, and a 2-worker MultiWorkerMirroredStrategy group) on the sample shards.
The sample's own validation split has 4 images in 2 studies (too few for a kappa that
moves); the runs here validate on a copy of the shards whose validation split is the
train split (155 images, 65 studies), which exercises the same code.
"""

from __future__ import annotations

import copy
import json
import pathlib
import re
import shutil
import sys
import textwrap

import numpy as np
import pytest
import yaml

from tests.support.trainer_runs import (
    finish_worker_group,
    run_python,
    run_trainer,
    start_worker_group,
)
from trainer.config import DEFAULTS, PHASE_DEFAULTS, dump_config, load_config, resume_conflict
from trainer.errors import TrainerError
from trainer.phases import after_epoch, block_monitor, new_phase_state

# ---- the study metrics of one validation pass ----------------------------------------------


def _probs(p_abnormal: float, label: int) -> np.ndarray:
    """A 14-class row whose abnormal mass is p_abnormal: all of it on the label's region."""
    row = np.zeros(14)
    region = label // 2
    row[2 * region + 1], row[2 * region] = p_abnormal, 1.0 - p_abnormal
    return row


def test_study_metrics_average_the_images_of_each_study_then_call_at_one_half():
    from trainer.run import study_metrics

    # study 7 (abnormal): images 0.75 and 0.25 -> mean 0.5, called abnormal (>= 0.5; the
    # max, 0.75, would give the same call but another AUROC); study 3 (normal): 0.7 ->
    # abnormal (wrong); study 9 (normal): 0.1, 0.2, 0.3 -> 0.2, normal. Images shuffled.
    images = [(7, 0.75, 1), (3, 0.7, 2), (9, 0.1, 0), (7, 0.25, 1), (9, 0.2, 0), (9, 0.3, 0)]
    order = [3, 0, 5, 1, 4, 2]
    studies = np.array([images[i][0] for i in order], dtype=np.int64)
    labels = np.array([images[i][2] for i in order])
    probs = np.stack([_probs(images[i][1], images[i][2]) for i in order])
    metrics = study_metrics(probs, labels, studies)
    # truth [1, 0, 0], calls [1, 1, 0]: p_o = 2/3, p_e = 1/3 * 2/3 + 2/3 * 1/3 = 4/9.
    assert metrics["val_study_kappa"] == pytest.approx((2 / 3 - 4 / 9) / (1 - 4 / 9))
    # scores 0.5 (abnormal) vs 0.7 and 0.2 (normal): one of two pairs ranked right.
    assert metrics["val_study_auroc"] == pytest.approx(0.5)


def test_study_metrics_are_none_when_undefined():
    from trainer.run import study_metrics

    normal_only = study_metrics(
        np.stack([_probs(0.2, 0), _probs(0.3, 2)]), np.array([0, 2]), np.array([1, 2])
    )
    assert normal_only == {"val_study_kappa": None, "val_study_auroc": None}
    empty = study_metrics(np.zeros((0, 14)), np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert empty == {"val_study_kappa": None, "val_study_auroc": None}


# ---- training.monitor: the phase state machine and the config -----------------------------


def _phase(**blocks) -> dict:
    phase = copy.deepcopy(PHASE_DEFAULTS)  # monitors left unset (null): training.monitor
    phase.update(epochs=10, learning_rate=0.1)
    for name, values in blocks.items():
        phase[name].update(values)
    return phase


def _run(phase, monitor, epochs: list[dict]):
    state, improvements = new_phase_state(phase), []
    for metrics in epochs:
        state, improved = after_epoch(state, phase, metrics, monitor)
        improvements.append(improved)
        if state["finished"]:
            break
    return state, improvements


def _epochs(kappas, accuracies=None, losses=None) -> list[dict]:
    accuracies = accuracies or [0.1 * (i + 1) for i in range(len(kappas))]
    losses = losses or [1.0 - 0.1 * i for i in range(len(kappas))]
    return [
        {"val_study_kappa": k, "val_accuracy": a, "val_loss": loss}
        for k, a, loss in zip(kappas, accuracies, losses, strict=True)
    ]


def test_monitor_study_kappa_picks_the_best_kappa_epoch_not_the_best_accuracy():
    phase = _phase(early_stopping={"patience": 5}, reduce_lr={"patience": 5})
    state, improvements = _run(phase, "val_study_kappa", _epochs([0.2, 0.5, None, 0.4]))
    assert improvements == [True, True, False, False]  # None (undefined) never improves
    assert (state["best_epoch"], state["best_val_study_kappa"]) == (2, 0.5)
    assert state["best_val_accuracy"] == pytest.approx(0.4)  # still the best accuracy seen


def test_monitor_study_kappa_drives_early_stopping_and_the_plateau():
    phase = _phase(early_stopping={"patience": 2}, reduce_lr={"patience": 1, "factor": 0.5})
    # Accuracy and loss improve every epoch; only the kappa stalls after epoch 2.
    state, _ = _run(phase, "val_study_kappa", _epochs([0.2, 0.5, 0.5, 0.3, 0.9]))
    assert state["stopped_early"] and state["epochs_completed"] == 4
    # Plateau: epochs 3 and 4 did not improve the kappa -> halved twice (wait resets each time).
    assert state["learning_rate"] == pytest.approx(0.025)


def test_monitor_val_loss_is_minimised():
    phase = _phase(early_stopping={"patience": 5})
    state, _ = _run(phase, "val_loss", _epochs([0.1] * 4, losses=[0.9, 0.4, 0.6, 0.5]))
    assert (state["best_epoch"], state["best_val_loss"]) == (2, 0.4)


def test_the_reference_pairing_stays_when_the_monitor_is_val_accuracy():
    """Unset phase monitors follow training.monitor, except that selecting by val_accuracy
    keeps the reference's val_loss plateau (the demo and resumed jobs stay bit-exact)."""
    assert block_monitor("reduce_lr", None, "val_accuracy") == "val_loss"
    assert block_monitor("early_stopping", None, "val_accuracy") == "val_accuracy"
    assert block_monitor("reduce_lr", None, "val_study_kappa") == "val_study_kappa"
    assert block_monitor("early_stopping", "val_loss", "val_study_kappa") == "val_loss"
    for config in (load_config(None), load_config("sample_cpu"), load_config("mura_densenet169")):
        assert config["training"]["monitor"] == "val_accuracy"
        assert {p["reduce_lr"]["monitor"] for p in config["phases"]} == {"val_loss"}
        assert {p["early_stopping"]["monitor"] for p in config["phases"]} == {"val_accuracy"}


def test_training_monitor_sets_every_phase_unless_the_phase_names_its_own():
    config = load_config(
        "mura_densenet169",
        ["training.monitor=val_study_kappa", "phases.2.reduce_lr.monitor=val_loss"],
    )
    watched = [
        (p["reduce_lr"]["monitor"], p["early_stopping"]["monitor"]) for p in config["phases"]
    ]
    assert watched == [("val_study_kappa", "val_study_kappa")] * 2 + [
        ("val_loss", "val_study_kappa")
    ]


def test_shipped_study_recipe_is_the_reference_selecting_by_study_kappa():
    study, reference = load_config("mura_study"), load_config("mura_densenet169")
    assert study["training"]["monitor"] == "val_study_kappa"
    for block in ("reduce_lr", "early_stopping"):
        assert {p[block]["monitor"] for p in study["phases"]} == {"val_study_kappa"}
    # Everything else is the reference recipe.
    for config in (study, reference):
        config["training"].pop("monitor")
        for phase in config["phases"]:
            phase["reduce_lr"].pop("monitor")
            phase["early_stopping"].pop("monitor")
    assert study == reference


def test_unknown_monitor_is_an_error_naming_the_key_and_the_allowed_values():
    with pytest.raises(TrainerError) as raised:
        load_config(None, ["training.monitor=val_auroc"])
    assert str(raised.value) == (
        "config key 'training.monitor': one of val_accuracy, val_study_kappa, val_loss"
    )
    with pytest.raises(TrainerError, match=re.escape("phases[1].early_stopping.monitor")):
        load_config(None, ["phases.1.early_stopping.monitor=kappa"])


def test_unknown_monitor_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    result = run_python(
        "-m", "trainer", "--data_dir", str(tmp_path), "--job_dir", str(tmp_path / "job"),
        "--set", "training.monitor=auroc",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "bonify-train: error: config key 'training.monitor': one of val_accuracy, "
        "val_study_kappa, val_loss"
    ]


def test_resume_treats_the_monitor_as_a_recipe_key():
    saved = yaml.safe_load(dump_config(load_config(None)))
    assert resume_conflict(saved, load_config(None)) is None
    # The key the user changed is named, not the phase monitors that follow from it.
    assert resume_conflict(saved, load_config(None, ["training.monitor=val_study_kappa"])) == (
        "training.monitor",
        "val_accuracy",
        "val_study_kappa",
    )
    # A job saved before the key existed ran with the default: it resumes with it.
    older = copy.deepcopy(saved)
    del older["training"]["monitor"]
    assert resume_conflict(older, load_config(None)) is None
    assert resume_conflict(older, load_config(None, ["training.monitor=val_loss"]))[0] == (
        "training.monitor"
    )
    assert "monitor" in DEFAULTS["training"]


# ---- real runs ------------------------------------------------------------------------------

#: Five epochs of one phase, selecting by the validation study kappa; no early stop. With
#: this seed the best kappa (epoch 3) is neither the last epoch nor the best accuracy's.
RUN_CONFIG = """
model: {backbone: small_cnn, weights: none, small_cnn_width: 4, head_units: [16],
        head_dropout: [0.1], bn_momentum: 0.9}
data: {image_size: 64, shuffle_buffer: 64}
training: {global_batch_size: 8, steps_per_epoch: 10, validation_steps: 0, verbose: 2,
           tensorboard_images: 0, seed: 2, monitor: val_study_kappa}
distribute: {mixed_precision: "off"}
phases:
  - {name: only, trainable: all, learning_rate: 0.01, epochs: 5,
     early_stopping: {patience: 10}, reduce_lr: {patience: 10}}
"""
EPOCH_LINE = re.compile(r"val_study_kappa (\S+) val_study_auroc (\S+) \| lr")


@pytest.fixture(scope="module")
def wide_validation_shards(tmp_path_factory, sample_shards_dir) -> pathlib.Path:
    """The sample shards with the train split's shards also as the validation split."""
    data = tmp_path_factory.mktemp("wide_validation")
    for path in sample_shards_dir.iterdir():
        if path.is_file() and not path.name.startswith("mura-validation."):
            shutil.copy(path, data / path.name)
    for path in sorted(sample_shards_dir.glob("mura-train.tfrecord-*")):
        shutil.copy(path, data / path.name.replace("mura-train.", "mura-validation."))
    manifest = json.loads((data / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    manifest["splits"]["validation"] = {
        **train,
        "files": [name.replace("mura-train.", "mura-validation.") for name in train["files"]],
    }
    (data / "manifest.json").write_text(json.dumps(manifest))
    return data


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, wide_validation_shards):
    """(job, stdout) of RUN_CONFIG on the wide validation split."""
    folder = tmp_path_factory.mktemp("study_run")
    config = folder / "study.yaml"
    config.write_text(RUN_CONFIG)
    job = folder / "job"
    result = run_trainer(wide_validation_shards, job, config)
    assert result.returncode == 0, result.stderr[-3000:]
    return job, result.stdout


def _validation_predictions(model_file, data_dir) -> dict:
    """probabilities, labels and study ids of a .keras model on the validation shards."""
    import keras

    from bonify.dataset import iterate_records, split_files
    from bonify.vocabulary import RecordKeys

    records = list(iterate_records(split_files(str(data_dir), "validation")))
    model = keras.saving.load_model(model_file)
    images = np.stack([record[RecordKeys.IMAGE] for record in records])
    return {
        "probabilities": model.predict(images, batch_size=8, verbose=0),
        "label": np.array([record[RecordKeys.LABEL] for record in records]),
        "study": np.array([record[RecordKeys.STUDY_ID] for record in records]),
    }


@pytest.mark.slow
def test_history_and_epoch_lines_carry_the_study_metrics(study_run):
    job, stdout = study_run
    history = json.loads((job / "history.json").read_text())
    lines = EPOCH_LINE.findall(stdout)
    assert len(lines) == len(history) == 5
    for (kappa, auroc), record in zip(lines, history, strict=True):
        assert -1 <= record["val_study_kappa"] <= 1 and 0 <= record["val_study_auroc"] <= 1
        assert (kappa, auroc) == (
            f"{record['val_study_kappa']:.4f}",
            f"{record['val_study_auroc']:.4f}",
        )


@pytest.mark.slow
def test_the_final_model_is_the_best_kappa_epoch_and_its_metrics_recompute(
    study_run, wide_validation_shards
):
    """The restored (final) weights are the best-kappa epoch's: recomputing the study
    metrics from final.keras' predictions on the validation shards gives that epoch's
    history values, which are not the last epoch's nor the best-accuracy epoch's."""
    from trainer.run import study_metrics

    job, stdout = study_run
    history = json.loads((job / "history.json").read_text())
    kappas = [record["val_study_kappa"] for record in history]
    best = int(np.argmax(kappas))  # the first of equal maxima, as the trainer keeps it
    state = json.loads((job / "training_state.json").read_text())
    assert state["phases"][0]["best_epoch"] == best + 1
    assert state["phases"][0]["best_val_study_kappa"] == pytest.approx(kappas[best])
    # The run picked here must tell the monitors apart, or the test proves nothing.
    accuracies = [record["val_accuracy"] for record in history]
    assert best != len(history) - 1 and best != int(np.argmax(accuracies)), history
    assert (
        f"phase 1 only finished: 5 epochs, not stopped early; restored best epoch {best + 1} "
        f"(val_study_kappa {kappas[best]:.4f})" in stdout.splitlines()
    )
    predictions = _validation_predictions(job / "model" / "final.keras", wide_validation_shards)
    recomputed = study_metrics(
        predictions["probabilities"], predictions["label"], predictions["study"]
    )
    assert recomputed["val_study_kappa"] == pytest.approx(kappas[best], abs=1e-9)
    assert recomputed["val_study_auroc"] == pytest.approx(history[best]["val_study_auroc"])
    top1 = (predictions["probabilities"].argmax(axis=1) == predictions["label"]).mean()
    assert top1 == pytest.approx(history[best]["val_accuracy"])


@pytest.mark.slow
def test_the_card_gets_the_operating_point_fitted_on_the_final_models_validation(
    study_run, wide_validation_shards
):
    from bonify.model_card import load_card
    from bonify.study_metrics import fit_operating_point

    job, stdout = study_run
    card = load_card(str(job / "model" / "final.keras"))
    point = card.raw["operating_point"]
    assert point["source"] == "trainer"
    manifest = json.loads((wide_validation_shards / "manifest.json").read_text())
    validation = manifest["splits"]["validation"]
    assert point["fitted_on"] == {
        "split": "validation",
        "data_dir": str(wide_validation_shards),
        "n_studies": validation["studies"],
        "n_images": validation["images"],
    }
    assert card.threshold == point["threshold"] and card.temperature == point["temperature"]
    predictions = _validation_predictions(job / "model" / "final.keras", wide_validation_shards)
    refit = fit_operating_point(
        predictions["probabilities"], predictions["label"], predictions["study"]
    )
    assert point["threshold"] == pytest.approx(refit["threshold"], abs=1e-6)
    assert point["temperature"] == pytest.approx(refit["temperature"], rel=1e-4)
    assert point["kappa_at_threshold"] == pytest.approx(refit["kappa_at_threshold"], abs=1e-9)
    assert point["kappa_at_default_threshold"] == pytest.approx(
        refit["kappa_at_default_threshold"], abs=1e-9
    )
    lines = [line for line in stdout.splitlines() if line.startswith("operating point")]
    assert lines == [
        f"operating point (validation, {validation['studies']} studies): threshold "
        f"{point['threshold']:.3f}, temperature {point['temperature']:.3f}; study kappa "
        f"{point['kappa_at_default_threshold']:.4f} at 0.5 -> "
        f"{point['kappa_at_threshold']:.4f} at the threshold (both with the temperature); "
        "written to the model card"
    ]


@pytest.mark.slow
def test_tensorboard_validation_study_scalars_match_the_history(study_run):
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import TENSORS, EventAccumulator

    job, _ = study_run
    events = EventAccumulator(str(job / "tensorboard"), size_guidance={TENSORS: 0})
    events.Reload()
    history = json.loads((job / "history.json").read_text())
    for tag, name in (("study_kappa", "val_study_kappa"), ("study_auroc", "val_study_auroc")):
        values = [
            (event.step, float(tf.make_ndarray(event.tensor_proto)))
            for event in events.Tensors(f"validation/{tag}")
        ]
        assert values == [
            (record["global_step"], pytest.approx(record[name])) for record in history
        ]
    best = events.Tensors("best/validation_study_kappa")[-1]
    assert float(tf.make_ndarray(best.tensor_proto)) == pytest.approx(
        max(record["val_study_kappa"] for record in history)
    )


@pytest.mark.slow
def test_a_job_finished_before_the_operating_point_still_reruns_and_loads(
    study_run, wide_validation_shards, tmp_path
):
    """A card written before issue 11 (no temperature, no operating_point): rerunning the
    finished job leaves it alone, and it loads with the defaults."""
    from bonify.model_card import CARD_FILE, load_card

    job = tmp_path / "job"
    shutil.copytree(study_run[0], job)
    card_file = job / "model" / CARD_FILE
    card = json.loads(card_file.read_text())
    for key in ("temperature", "operating_point"):
        card.pop(key)
    card.update(threshold=0.5, threshold_source="default")
    card_file.write_text(json.dumps(card, indent=2))
    before = card_file.read_text()
    result = run_trainer(wide_validation_shards, job, job / "config.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "is already finished" in result.stdout
    assert card_file.read_text() == before
    loaded = load_card(str(job / "model" / "final.keras"))
    assert (loaded.threshold, loaded.temperature) == (0.5, 1.0)


# ---- every worker of a MultiWorkerMirroredStrategy group computes the same numbers ----------

#: One validation pass through the trainer's own code (trainer.run._Trainer._validate) on
#: each worker; prints the metrics and a digest of the examples the worker gathered.
VALIDATE_ON_EACH_WORKER = """
import hashlib, json, sys
import numpy as np
from bonify.dataset import read_manifest, split_files
from trainer.config import load_config
from trainer.run import _Trainer

data_dir, job_dir, config_file, strategy = sys.argv[1:5]
config = load_config(config_file, [f"distribute.strategy={strategy}"])
trainer = _Trainer(config, read_manifest(data_dir), data_dir, job_dir,
                   split_files(data_dir, "train"), split_files(data_dir, "validation"))
trainer._build_phase(0)
metrics, examples = trainer._validate()
order = np.lexsort((examples["probabilities"][:, 0], examples["study"]))
digest = hashlib.sha256(examples["study"][order].tobytes() + examples["label"][order].tobytes())
print("RESULT " + json.dumps({
    "kappa": metrics["val_study_kappa"], "auroc": metrics["val_study_auroc"],
    "images": len(examples["label"]), "studies": len(set(examples["study"].tolist())),
    "digest": digest.hexdigest(),
}), flush=True)
"""


def _result(stdout: str) -> dict:
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])


@pytest.mark.slow
def test_every_worker_computes_the_study_metrics_of_the_whole_validation_split(
    wide_validation_shards, tmp_path
):
    """Validation records are sharded across the workers' input pipelines; the gathered
    examples make every worker score all of them, so all agree (and agree with one
    process) on the study kappa that early stopping, the plateau and the best weights use."""
    config = tmp_path / "study.yaml"
    config.write_text(RUN_CONFIG)
    script = tmp_path / "validate.py"
    script.write_text(textwrap.dedent(VALIDATE_ON_EACH_WORKER))
    manifest = json.loads((wide_validation_shards / "manifest.json").read_text())
    validation = manifest["splits"]["validation"]

    single = run_python(
        str(script), str(wide_validation_shards), str(tmp_path / "single"), str(config), "default"
    )
    assert single.returncode == 0, single.stderr[-3000:]
    alone = _result(single.stdout)
    assert (alone["images"], alone["studies"]) == (validation["images"], validation["studies"])

    workers = start_worker_group(
        [sys.executable, str(script), str(wide_validation_shards), str(tmp_path / "group"),
         str(config), "multi_worker"]
    )  # fmt: skip
    outputs = finish_worker_group(workers)
    for returncode, _, stderr in outputs:
        assert returncode == 0, stderr[-3000:]
    first, second = (_result(stdout) for _, stdout, _ in outputs)
    assert first == second
    # The same seed builds the same initial model under either strategy.
    assert first["images"] == alone["images"] and first["digest"] == alone["digest"]
    assert first["kappa"] == pytest.approx(alone["kappa"], abs=1e-9)
    assert first["auroc"] == pytest.approx(alone["auroc"], abs=1e-6)
