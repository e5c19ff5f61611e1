"""serve.core.Predictor: the answer for image bytes that bonify-predict, the API and the app
share."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from bonify.vocabulary import CLASS_NAMES
from serve.core import (
    ImageAnswer,
    Predictor,
    Rejection,
    ServeError,
    check_model_paths,
    padded_size,
    study_block,
)


def _pngs(sample_dataset_dir, count: int) -> list:
    return sorted((sample_dataset_dir / "MURA-v1.1" / "valid").rglob("*.png"))[:count]


@pytest.fixture(scope="module")
def predictor(trained_job) -> Predictor:
    return Predictor.load([str(trained_job)], batch_size=8)


def test_load_reads_the_card_spec_and_threshold(predictor, trained_job):
    assert predictor.spec.image_size == 64
    assert predictor.card is not None
    assert predictor.threshold == predictor.card.threshold
    assert predictor.model_files == (str(trained_job / "model" / "final.keras"),)


def test_predict_arrays_equals_the_bare_model(predictor, sample_dataset_dir):
    from bonify.images import to_model_input

    images = np.stack(
        [to_model_input(p.read_bytes(), 64, "pad") for p in _pngs(sample_dataset_dir, 3)]
    )[..., np.newaxis]
    probs = predictor.predict_arrays(images)
    bare = np.asarray(predictor.models[0].predict_on_batch(images), np.float64)
    assert probs.dtype == np.float32 and probs.shape == (3, 14)
    # The trainer fits a temperature into the card; the predictor reports calibrated outputs.
    (temperature,) = predictor.temperatures
    assert temperature == predictor.card.temperature
    np.testing.assert_allclose(probs, _softmax_of_log_over(bare, temperature), atol=1e-5)


def test_answer_gives_region_status_top3_and_the_decoded_original(predictor, sample_dataset_dir):
    png = _pngs(sample_dataset_dir, 1)[0]
    answer = predictor.answer(png.read_bytes(), png.name)
    assert isinstance(answer, ImageAnswer)
    assert list(answer.probabilities) == list(CLASS_NAMES)
    assert sum(answer.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert answer.status in ("normal", "abnormal")
    assert answer.top3[0][0] == max(answer.probabilities, key=answer.probabilities.get)
    assert answer.original.ndim == 2 and answer.original.dtype == np.uint8
    assert answer.overlay_png is None


def test_answer_with_gradcam_returns_an_overlay_png_of_the_original_size(
    predictor, sample_dataset_dir
):
    import io

    from PIL import Image

    png = _pngs(sample_dataset_dir, 1)[0]
    answer = predictor.answer(png.read_bytes(), png.name, gradcam=True)
    overlay = Image.open(io.BytesIO(answer.overlay_png))
    assert overlay.size == (answer.original.shape[1], answer.original.shape[0])


def test_a_truncated_png_is_a_rejection_not_an_exception(predictor, sample_dataset_dir):
    data = _pngs(sample_dataset_dir, 1)[0].read_bytes()
    rejection = predictor.answer(data[: len(data) // 2], "cut.png")
    assert isinstance(rejection, Rejection)
    assert rejection.name == "cut.png" and rejection.reason == "truncated_image"


def test_answer_many_keeps_order_and_rejections(predictor, sample_dataset_dir):
    first, second = _pngs(sample_dataset_dir, 2)
    results = predictor.answer_many(
        [
            ("a.png", first.read_bytes()),
            ("bad.png", b"not an image"),
            ("b.png", second.read_bytes()),
        ]
    )
    assert [type(r).__name__ for r in results] == ["ImageAnswer", "Rejection", "ImageAnswer"]
    single = predictor.answer(first.read_bytes(), "a.png")
    np.testing.assert_allclose(results[0].probs, single.probs, atol=1e-5)


def test_study_is_the_mean_p_abnormal_at_the_threshold(predictor, sample_dataset_dir):
    answers = [predictor.answer(p.read_bytes(), p.name) for p in _pngs(sample_dataset_dir, 3)]
    study = predictor.study([*answers, Rejection("x.png", "empty_file", "0 bytes")])
    mean = float(np.mean([a.p_abnormal for a in answers]))
    assert study["images"] == 3 and study["left_out"] == 1
    assert study["p_abnormal"] == pytest.approx(mean)
    assert study["verdict"] == ("abnormal" if mean >= predictor.threshold else "normal")


def test_study_block_region_is_the_majority_region():
    def answer(region_index: int, abnormal: bool) -> ImageAnswer:
        probs = np.zeros(14)
        probs[2 * region_index + int(abnormal)] = 1.0
        return ImageAnswer("x", probs, "", "", float(abnormal), 1.0, (), np.zeros((1, 1)))

    study = study_block([answer(3, False), answer(3, True), answer(0, True)], 0.5)
    assert study["region"] == "HAND"
    assert study["verdict"] == "abnormal" and study["p_abnormal"] == pytest.approx(2 / 3)


def test_an_ensemble_with_different_inputs_is_refused_before_loading(trained_job, tmp_path):
    import json
    import shutil

    other = tmp_path / "other"
    shutil.copytree(trained_job / "model", other)
    card = json.loads((other / "model_card.json").read_text())
    card["input_spec"]["image_size"] = 128
    (other / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ServeError, match="an ensemble needs models with the same input"):
        check_model_paths([str(trained_job), str(other)])


@pytest.mark.parametrize(
    ("count", "batch_size", "expected"),
    [(1, 16, 1), (3, 16, 4), (9, 16, 16), (16, 16, 16), (5, 6, 6)],
)
def test_batches_are_padded_to_a_few_shapes(count, batch_size, expected):
    assert padded_size(count, batch_size) == expected


class _OneCallerModel:
    """A stand-in model that notes how many threads are inside it at once."""

    def __init__(self):
        self.inside = 0
        self.most_inside = 0
        self.guard = threading.Lock()

    def predict_on_batch(self, images):
        with self.guard:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        time.sleep(0.02)  # long enough for other threads to arrive
        with self.guard:
            self.inside -= 1
        return np.full((len(images), 14), 1 / 14, dtype=np.float32)


def test_model_calls_from_many_threads_run_one_at_a_time():
    from bonify.model_card import InputSpec
    from bonify.vocabulary import SCHEMA_VERSION

    model = _OneCallerModel()
    spec = InputSpec(8, "pad", tuple(CLASS_NAMES), SCHEMA_VERSION)
    predictor = Predictor([model], ("fake.keras",), spec, card=None, batch_size=4)
    images = np.zeros((2, 8, 8, 1), np.uint8)
    threads = [threading.Thread(target=predictor.predict_arrays, args=(images,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert model.most_inside == 1


def _job_with_temperature(trained_job, folder, temperature: float):
    """A copy of the trained job whose model card says `temperature`."""
    import json
    import shutil

    job = folder / "job"
    shutil.copytree(trained_job / "model", job / "model")
    card_file = job / "model" / "model_card.json"
    card = json.loads(card_file.read_text())
    card["temperature"] = temperature
    card_file.write_text(json.dumps(card))
    return job


@pytest.fixture(scope="module")
def uncalibrated(trained_job, tmp_path_factory) -> Predictor:
    job = _job_with_temperature(trained_job, tmp_path_factory.mktemp("cold"), 1.0)
    return Predictor.load([str(job)], batch_size=8)


@pytest.fixture(scope="module")
def hot_job(trained_job, tmp_path_factory):
    return _job_with_temperature(trained_job, tmp_path_factory.mktemp("hot"), 2.0)


def _softmax_of_log_over(probs: np.ndarray, temperature: float) -> np.ndarray:
    from scipy.special import softmax

    return softmax(np.log(probs) / temperature, axis=1)


def test_the_cards_temperature_calibrates_every_answer(uncalibrated, hot_job, sample_dataset_dir):
    from bonify.images import to_model_input

    hot = Predictor.load([str(hot_job)], batch_size=8)
    assert hot.temperatures == (2.0,) and uncalibrated.temperatures == (1.0,)
    pngs = _pngs(sample_dataset_dir, 3)
    images = np.stack([to_model_input(p.read_bytes(), 64, "pad") for p in pngs])[..., np.newaxis]
    plain = uncalibrated.predict_arrays(images).astype(np.float64)
    np.testing.assert_allclose(plain, uncalibrated.models[0].predict_on_batch(images), atol=1e-5)
    expected = _softmax_of_log_over(plain, 2.0)
    np.testing.assert_allclose(hot.predict_arrays(images), expected, atol=1e-5)
    answer = hot.answer(pngs[0].read_bytes(), pngs[0].name)  # what the API and the app show
    np.testing.assert_allclose(answer.probs, expected[0], atol=1e-5)


def test_bonify_predict_writes_the_calibrated_probabilities(
    uncalibrated, hot_job, sample_dataset_dir, tmp_path
):
    import pandas as pd

    from bonify.predictions import PROB_COLUMNS
    from serve.predict import main as predict_main

    pngs = _pngs(sample_dataset_dir, 2)
    output = tmp_path / "preds.csv"
    assert predict_main(["--model", str(hot_job), "--output", str(output), *map(str, pngs)]) == 0
    written = pd.read_csv(output).set_index("image_path").loc[list(map(str, pngs))]
    plain = np.stack([uncalibrated.answer(p.read_bytes(), p.name).probs for p in pngs])
    np.testing.assert_allclose(
        written[list(PROB_COLUMNS)].to_numpy(float), _softmax_of_log_over(plain, 2.0), atol=1e-5
    )
