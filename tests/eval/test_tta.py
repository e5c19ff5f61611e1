"""--tta flip: the model averaged over each image and its horizontal mirror, the same in
process and in the Beam RunInference mode, and equal to the manual average."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bonify.dataset import iterate_records, split_files
from bonify.tta import mean_over_views, tta_views
from bonify.vocabulary import MANIFEST_FILE, RecordKeys
from eval.__main__ import main
from tests.support.eval_runs import save_dense_model


def test_flip_views_are_the_image_and_its_left_right_mirror():
    images = np.arange(2 * 3 * 4 * 1).reshape(2, 3, 4, 1)
    plain, mirrored = tta_views(images, "flip")
    np.testing.assert_array_equal(plain, images)
    np.testing.assert_array_equal(mirrored[:, :, 0], images[:, :, -1])
    assert len(tta_views(images, "none")) == 1
    with pytest.raises(ValueError, match="unknown tta mode 'rotate'"):
        tta_views(images, "rotate")


def test_mean_over_views_averages_predict_of_each_view():
    images = np.random.default_rng(0).random((3, 4, 4, 1))

    def predict(batch):
        return batch[:, :, 0, 0] * 2.0  # depends on the first column: differs for the mirror

    expected = (predict(images) + predict(images[:, :, ::-1])) / 2
    np.testing.assert_allclose(mean_over_views(predict, images, "flip"), expected)
    np.testing.assert_array_equal(mean_over_views(predict, images, "none"), predict(images))


@pytest.fixture(scope="module")
def model_and_manual(tmp_path_factory, sample_shards_dir):
    """(model path, {image path: manual flip-TTA probabilities}, {path: plain probabilities})."""
    import keras

    manifest = json.loads((sample_shards_dir / MANIFEST_FILE).read_text())
    model_path = save_dense_model(tmp_path_factory.mktemp("tta"), int(manifest["image_size"]), 0)
    model = keras.saving.load_model(model_path)
    records = list(iterate_records(split_files(str(sample_shards_dir), "test")))
    images = np.stack([record[RecordKeys.IMAGE] for record in records])
    plain = model(images, training=False).numpy().astype(np.float64)
    mirrored = model(images[:, :, ::-1, :].copy(), training=False).numpy().astype(np.float64)
    manual = (plain + mirrored) / 2
    paths = [record[RecordKeys.PATH] for record in records]
    return model_path, dict(zip(paths, manual, strict=True)), dict(zip(paths, plain, strict=True))


def _check_flip_probabilities(predictions, manual, plain):
    assert len(predictions) == len(manual)
    expected = np.stack([manual[path] for path in predictions.image_paths])
    np.testing.assert_allclose(predictions.probs, expected, atol=1e-5)
    # The mirror changes this model's outputs, so the check above could tell TTA from none.
    unflipped = np.stack([plain[path] for path in predictions.image_paths])
    assert np.abs(expected - unflipped).max() > 1e-2


def test_in_process_flip_equals_the_manual_average(model_and_manual, sample_shards_dir):
    from eval.predict import predict_split

    model_path, manual, plain = model_and_manual
    predictions = predict_split(str(model_path), str(sample_shards_dir), "test", 16, verbose=0,
                                tta="flip")  # fmt: skip
    _check_flip_probabilities(predictions, manual, plain)


@pytest.mark.slow
def test_beam_flip_equals_the_manual_average(model_and_manual, sample_shards_dir, tmp_path):
    from eval.beam_inference import predict_split_beam

    model_path, manual, plain = model_and_manual
    predictions = predict_split_beam(str(model_path), str(sample_shards_dir), "test", 16,
                                     str(tmp_path), ["--runner=FnApiRunner"], tta="flip")  # fmt: skip
    _check_flip_probabilities(predictions, manual, plain)


def test_tta_is_recorded_in_metrics(model_and_manual, sample_shards_dir, tmp_path):
    model_path, manual, _ = model_and_manual
    argv = ["--model", str(model_path), "--data_dir", str(sample_shards_dir), "--split", "test",
            "--output_dir", str(tmp_path), "--bootstrap_resamples", "0", "--tta", "flip"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["source"]["tta"] == "flip"
    expected_top1 = np.mean(
        [manual[path].argmax() == label for path, label in _labels(sample_shards_dir).items()]
    )
    assert metrics["top1_accuracy"] == pytest.approx(expected_top1)


def _labels(shards_dir) -> dict:
    return {record[RecordKeys.PATH]: record[RecordKeys.LABEL]
            for record in iterate_records(split_files(str(shards_dir), "test"))}  # fmt: skip


def test_tta_with_a_predictions_file_is_one_line(tmp_path, capsys):
    csv = tmp_path / "p.csv"
    csv.write_text("image_path,true_label\n")
    assert main(["--predictions", str(csv), "--output_dir", str(tmp_path / "o"),
                 "--tta", "flip"]) == 2  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--tta flip" in error and "--predictions" in error
