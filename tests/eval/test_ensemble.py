"""Ensembles: several --predictions files or several --model files of the same images are
averaged and evaluated as one model; each member's headline metrics are reported beside
the ensemble's; members that disagree on images or input are one error line."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from bonify.vocabulary import CLASS_NAMES, MANIFEST_FILE, REGIONS
from eval.__main__ import main
from eval.ensemble import members_mismatch
from eval.metrics import compute_metrics
from eval.predictions import make_predictions, read_predictions
from tests.support.eval_runs import save_dense_model, write_model_card

PROB_COLUMNS = [f"prob_{name}" for name in CLASS_NAMES]
STUDIES = [(region, 300 + 10 * index + p, 1, p % 2, 1 + p % 2)
           for index, region in enumerate(REGIONS) for p in range(6)]  # fmt: skip


@pytest.fixture
def two_members(synthetic_rows_factory, predictions_csv_factory):
    """Two predictions CSVs of the same 63 images (rows of the second shuffled), and their
    probabilities in the first file's row order."""
    paths, labels, first = synthetic_rows_factory(STUDIES, np.random.default_rng(1), 0.7)
    _, _, second = synthetic_rows_factory(STUDIES, np.random.default_rng(2), 0.6)
    order = np.random.default_rng(3).permutation(len(paths))
    first_csv = predictions_csv_factory(paths, labels, first)
    second_csv = predictions_csv_factory(np.asarray(paths)[order], labels[order], second[order])
    return (first_csv, second_csv), paths, labels, (first, second)


def _evaluate(tmp_path, *arguments) -> dict:
    output = tmp_path / "eval"
    assert main([*arguments, "--output_dir", str(output), "--bootstrap_resamples", "0"]) == 0
    return json.loads((output / "metrics.json").read_text())


def test_ensemble_of_predictions_files_is_the_mean_of_the_members(two_members, tmp_path):
    (first_csv, second_csv), paths, labels, (first, second) = two_members
    metrics = _evaluate(tmp_path, "--predictions", str(first_csv), "--predictions", str(second_csv))
    written = pd.read_csv(tmp_path / "eval" / "predictions.csv").set_index("image_path")
    expected = pd.DataFrame((first + second) / 2, index=paths, columns=PROB_COLUMNS)
    np.testing.assert_allclose(written.loc[paths, PROB_COLUMNS].to_numpy(), expected.to_numpy(),
                               atol=1e-9)  # fmt: skip
    # The ensemble's top-1 is that of the averaged probabilities, by hand.
    mean_top1 = np.mean(((first + second) / 2).argmax(axis=1) == labels)
    assert metrics["top1_accuracy"] == pytest.approx(mean_top1)


def test_each_member_has_its_headline_metrics(two_members, tmp_path, capsys):
    (first_csv, second_csv), paths, labels, (first, second) = two_members
    metrics = _evaluate(tmp_path, "--predictions", str(first_csv), "--predictions", str(second_csv))
    members = metrics["members"]
    assert [member["predictions"] for member in members] == [str(first_csv), str(second_csv)]
    for member, probs in zip(members, (first, second), strict=True):
        assert member["top1_accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == labels))
        assert member["cohen_kappa"] == pytest.approx(cohen_kappa_score(labels, probs.argmax(1)))
        alone, _ = compute_metrics(make_predictions(paths, labels, probs), 0)
        assert member["study_kappa"] == pytest.approx(alone["study_level"]["kappa"])
        assert member["study_auroc"] == pytest.approx(alone["study_level"]["auroc"])
    report = (tmp_path / "eval" / "report.html").read_text()
    assert "Ensemble members" in report and str(second_csv) in report
    printed = capsys.readouterr().out
    assert "ensemble members, each alone:" in printed
    line = next(line for line in printed.splitlines() if line.endswith(str(second_csv)))
    assert line.split()[0] == f"{members[1]['top1_accuracy']:.3f}"


def test_one_predictions_file_has_no_members_block(two_members, tmp_path):
    (first_csv, _), *_ = two_members
    assert "members" not in _evaluate(tmp_path, "--predictions", str(first_csv))


def test_files_of_other_images_are_one_error_line(two_members, predictions_csv_factory, tmp_path,
                                                  capsys):  # fmt: skip
    (first_csv, _), paths, labels, (first, _) = two_members
    fewer = predictions_csv_factory(paths[:-2], labels[:-2], first[:-2])
    argv = ["--predictions", str(first_csv), "--predictions", str(fewer), "--output_dir",
            str(tmp_path / "eval")]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert str(fewer) in error and str(first_csv) in error and "61 images instead of 63" in error
    assert not (tmp_path / "eval").exists()


def test_mismatch_names_the_first_differing_image(synthetic_rows_factory):
    paths, labels, probs = synthetic_rows_factory(STUDIES[:4], np.random.default_rng(0))
    first = make_predictions(paths, labels, probs).sorted_by_path()
    other_studies = [STUDIES[0], STUDIES[1], STUDIES[2], (STUDIES[3][0], 999, 1, 1, 2)]
    other_paths, other_labels, _ = synthetic_rows_factory(other_studies, np.random.default_rng(0))
    other = make_predictions(other_paths, other_labels, probs).sorted_by_path()
    assert members_mismatch(first, first) is None
    mismatch = members_mismatch(first, other)
    assert "patient00999" in mismatch and "instead of" in mismatch


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, sample_shards_dir):
    size = int(json.loads((sample_shards_dir / MANIFEST_FILE).read_text())["image_size"])
    root = tmp_path_factory.mktemp("ensemble")
    return save_dense_model(root / "a", size, 0), save_dense_model(root / "b", size, 1)


@pytest.mark.slow
def test_ensemble_of_models_is_the_mean_of_each_models_predictions(two_models, sample_shards_dir,
                                                                   tmp_path):  # fmt: skip
    common = ["--data_dir", str(sample_shards_dir), "--split", "test", "--bootstrap_resamples",
              "0"]  # fmt: skip
    alone = []
    for index, model in enumerate(two_models):
        assert (
            main(["--model", str(model), *common, "--output_dir", str(tmp_path / f"m{index}")]) == 0
        )
        alone.append(read_predictions(str(tmp_path / f"m{index}" / "predictions.csv")))
    first, second = two_models
    argv = ["--model", str(first), "--model", str(second), *common, "--output_dir",
            str(tmp_path / "ensemble")]  # fmt: skip
    assert main(argv) == 0
    ensemble = read_predictions(str(tmp_path / "ensemble" / "predictions.csv"))
    assert list(ensemble.image_paths) == list(alone[0].image_paths)
    np.testing.assert_allclose(ensemble.probs, (alone[0].probs + alone[1].probs) / 2, atol=1e-6)
    assert np.abs(alone[0].probs - alone[1].probs).max() > 1e-2  # the members differ
    metrics = json.loads((tmp_path / "ensemble" / "metrics.json").read_text())
    assert [member["model"] for member in metrics["members"]] == [str(first), str(second)]
    for member, predictions in zip(metrics["members"], alone, strict=True):
        assert member["top1_accuracy"] == pytest.approx(
            np.mean(predictions.pred_labels == predictions.true_labels)
        )


def _card_only_model(folder, image_size: int):
    """A model file never loaded (every case fails before TensorFlow) and its card."""
    folder.mkdir(parents=True)
    (folder / "final.keras").write_bytes(b"not loaded before TensorFlow")
    write_model_card(folder, image_size)
    return folder / "final.keras"


def test_models_taking_other_inputs_are_one_line_before_tensorflow(sample_shards_dir, tmp_path):
    first, other = _card_only_model(tmp_path / "a", 64), _card_only_model(tmp_path / "b", 32)
    argv = ["--model", str(first), "--model", str(other), "--data_dir", str(sample_shards_dir),
            "--output_dir", str(tmp_path / "eval")]  # fmt: skip
    code = ("import sys\nfrom eval.__main__ import main\n"
            f"code = main({argv!r})\n"
            "print('tensorflow imported:', 'tensorflow' in sys.modules)\nsys.exit(code)\n")  # fmt: skip
    root = pathlib.Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bonify-eval: error:"), result.stderr
    assert "image_size 32" in lines[0] and "image_size 64" in lines[0] and str(other) in lines[0]
    assert result.stdout.strip() == "tensorflow imported: False"


@pytest.mark.slow
def test_beam_ensemble_equals_the_in_process_one(two_models, sample_shards_dir, tmp_path):
    first, second = two_models
    common = ["--model", str(first), "--model", str(second), "--data_dir", str(sample_shards_dir),
              "--split", "test", "--bootstrap_resamples", "0"]  # fmt: skip
    assert main([*common, "--output_dir", str(tmp_path / "local")]) == 0
    assert main([*common, "--output_dir", str(tmp_path / "beam"), "--runner=FnApiRunner"]) == 0
    local = read_predictions(str(tmp_path / "local" / "predictions.csv"))
    beam = read_predictions(str(tmp_path / "beam" / "predictions.csv"))
    assert list(beam.image_paths) == list(local.image_paths)
    np.testing.assert_allclose(beam.probs, local.probs, atol=1e-5)
    members = json.loads((tmp_path / "beam" / "metrics.json").read_text())["members"]
    assert [member["model"] for member in members] == [str(first), str(second)]


MIRRORED_SCRIPT = """
import numpy as np, tensorflow as tf, keras
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from eval.predict import make_predict_function
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
models = []
with strategy.scope():
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((8, 8, 1), dtype="uint8")
        x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
        models.append(keras.Model(inputs, keras.layers.Dense(14, activation="softmax")(x)))
predict = make_predict_function(models, strategy, "flip")
rng = np.random.default_rng(0)
for size in (7, 1):  # odd, fewer rows than replicas
    images = rng.integers(0, 255, (size, 8, 8, 1)).astype("uint8")
    got = np.asarray(predict(tf.constant(images)))
    assert got.shape == (size, 2, 14), got.shape
    for member, model in enumerate(models):
        expected = (model.predict(images, verbose=0)
                    + model.predict(images[:, :, ::-1].copy(), verbose=0)) / 2
        np.testing.assert_allclose(got[:, member], expected, atol=1e-6)
print("OK")
"""


@pytest.mark.slow
def test_members_and_flip_keep_rows_apart_across_replicas():
    root = pathlib.Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], cwd=root,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]
