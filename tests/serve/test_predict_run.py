"""`bonify-predict` end to end on a model the trainer wrote: what it writes, what it prints,
and that the evaluator scores its output (the predictions file is the contract between them)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bonify.predictions import PROB_COLUMNS
from serve.predict import main
from tests.support.trainer_runs import run_python

pytestmark = pytest.mark.slow


def _predict(capsys, *arguments: str) -> tuple[int, str, str]:
    code = main([str(argument) for argument in arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _some_pngs(sample_dataset_dir, count: int) -> list:
    return sorted((sample_dataset_dir / "MURA-v1.1" / "valid").rglob("*.png"))[:count]


def test_predictions_on_mura_test_list_equal_the_evaluator_on_beam_records_and_score(
    trained_job, sample_dataset_dir, sample_shards_dir, tmp_path
):
    image_list = sample_dataset_dir / "MURA-v1.1" / "valid_image_paths.csv"
    predictions, studies = tmp_path / "preds.csv", tmp_path / "studies.csv"
    predicted = run_python(
        "-m", "serve.predict", "--model", str(trained_job), "--output", str(predictions),
        "--study_output", str(studies), "--batch_size", "16", str(image_list),
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "image(s) predicted" in predicted.stdout and "P(abnormal)" in predicted.stdout

    # The same model on the Beam job's records of the same files: same probabilities, because
    # predict's model input is the Beam record bit for bit.
    on_shards = tmp_path / "eval_shards"
    evaluated = run_python(
        "-m", "eval", "--model", str(trained_job / "model" / "final.keras"),
        "--data_dir", str(sample_shards_dir), "--split", "test",
        "--output_dir", str(on_shards), "--bootstrap_resamples", "0",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    ours = pd.read_csv(predictions).set_index("image_path").sort_index()
    theirs = pd.read_csv(on_shards / "predictions.csv").set_index("image_path").sort_index()
    assert list(ours.index) == list(theirs.index)
    np.testing.assert_allclose(ours[list(PROB_COLUMNS)], theirs[list(PROB_COLUMNS)], atol=1e-5)
    assert (ours["true_label"] == theirs["true_label"]).all()

    scored = tmp_path / "eval_predictions"
    evaluated = run_python(
        "-m", "eval", "--predictions", str(predictions), "--output_dir", str(scored),
        "--bootstrap_resamples", "0",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((scored / "metrics.json").read_text())["n_images"] == len(ours)

    study_table = pd.read_csv(studies)
    assert len(study_table) == ours["study_id"].nunique()
    assert study_table["images"].sum() == len(ours)
    called = np.where(study_table["p_abnormal"] >= study_table["threshold"], "abnormal", "normal")
    assert (study_table["verdict"] == called).all()


def test_images_outside_mura_are_predicted_and_the_evaluator_refuses_to_score_them(
    trained_job, sample_dataset_dir, tmp_path, capsys
):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for number, png in enumerate(_some_pngs(sample_dataset_dir, 3)):
        shutil.copy(png, incoming / f"scan{number}.png")
    predictions = tmp_path / "preds.csv"

    code, out, _ = _predict(capsys, "--model", trained_job, "--output", predictions, incoming)

    assert code == 0
    table = pd.read_csv(predictions, keep_default_na=False)
    assert len(table) == 3 and (table["true_label"] == "").all()
    np.testing.assert_allclose(table[list(PROB_COLUMNS)].sum(axis=1), 1.0, atol=1e-4)
    assert "scan0.png" in out
    refused = run_python(
        "-m", "eval", "--predictions", str(predictions), "--output_dir", str(tmp_path / "e")
    )
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "no true_label" in lines[0]


def test_unreadable_inputs_are_listed_with_their_reason_and_skipped(
    trained_job, sample_dataset_dir, tmp_path, capsys
):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    shutil.copy(_some_pngs(sample_dataset_dir, 1)[0], incoming / "good.png")
    (incoming / "empty.png").write_bytes(b"")
    (incoming / "text.png").write_text("not an image")
    predictions = tmp_path / "preds.csv"

    code, _, err = _predict(capsys, "--model", trained_job, "--output", predictions, incoming)

    assert code == 0
    assert "warning: 2 of 3 input(s) could not be read" in err
    assert "empty.png: empty_file" in err and "text.png: not_an_image" in err
    assert len(pd.read_csv(predictions)) == 1


def test_nothing_readable_exits_2(trained_job, tmp_path, capsys):
    (tmp_path / "empty.png").write_bytes(b"")
    code, _, err = _predict(
        capsys, "--model", trained_job, "--output", tmp_path / "p.csv", tmp_path / "empty.png"
    )
    assert code == 2
    assert "error: none of the 1 input image(s) could be read" in err
    assert not (tmp_path / "p.csv").exists()


def test_flip_tta_and_ensembles_average_the_softmax(trained_job, sample_dataset_dir):
    import keras

    from bonify.images import to_model_input
    from serve.predict import predict_probabilities

    model = keras.saving.load_model(trained_job / "model" / "final.keras")
    images = np.stack(
        [to_model_input(png.read_bytes(), 64, "pad") for png in _some_pngs(sample_dataset_dir, 4)]
    )[..., np.newaxis]
    plain = model.predict_on_batch(images)
    mirrored = model.predict_on_batch(np.ascontiguousarray(images[:, :, ::-1]))

    flipped = predict_probabilities([model], images, "flip", batch_size=8)
    ensemble = predict_probabilities([model, model], images, "none", batch_size=4)

    np.testing.assert_allclose(flipped, (plain + mirrored) / 2, atol=1e-6)
    np.testing.assert_allclose(ensemble, plain, atol=1e-6)


def _write_dicom(path, pixels: np.ndarray, photometric: str, study_uid: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.preamble = b"\0" * 128
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.StudyInstanceUID, dataset.PatientID = study_uid, "P1"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.astype(np.uint8).tobytes()
    dataset.save_as(path, enforce_file_format=True)


def test_dicoms_predict_like_the_same_pixels_as_png_and_group_by_study_uid(
    trained_job, sample_dataset_dir, tmp_path, capsys
):
    gray = np.asarray(Image.open(_some_pngs(sample_dataset_dir, 1)[0]).convert("L"))
    gray = gray.copy()
    gray[0, 0], gray[0, 1] = 0, 255  # the full 8-bit range, whatever the window rule
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    Image.fromarray(gray).save(incoming / "same.png")
    _write_dicom(incoming / "mono2.dcm", gray, "MONOCHROME2", "1.2.3.4")
    _write_dicom(incoming / "MONO1", 255 - gray, "MONOCHROME1", "1.2.3.4")
    predictions, studies = tmp_path / "preds.csv", tmp_path / "studies.csv"

    code, _, err = _predict(
        capsys, "--model", trained_job, "--output", predictions, "--study_output", studies, incoming
    )

    assert code == 0, err
    table = pd.read_csv(predictions).set_index("image_path")
    png = table.loc[str(incoming / "same.png"), list(PROB_COLUMNS)].to_numpy()
    for name in ("mono2.dcm", "MONO1"):
        np.testing.assert_allclose(
            table.loc[str(incoming / name), list(PROB_COLUMNS)], png, atol=1e-6
        )
    study_table = pd.read_csv(studies, dtype={"patient_id": str}).set_index("study")
    assert study_table.loc["1.2.3.4", "images"] == 2
    assert study_table.loc["1.2.3.4", "patient_id"] == "P1"
    assert study_table.loc[str(incoming), "images"] == 1


def test_gradcam_overlays_mirror_the_inputs_at_the_original_size(
    trained_job, sample_dataset_dir, tmp_path, capsys
):
    incoming = tmp_path / "incoming"
    pngs = _some_pngs(sample_dataset_dir, 2)
    for number, png in enumerate(pngs):
        (incoming / f"study{number}").mkdir(parents=True)
        shutil.copy(png, incoming / f"study{number}" / "image1.png")
    heatmaps = tmp_path / "heatmaps"

    code, _, err = _predict(
        capsys, "--model", trained_job, "--output", tmp_path / "p.csv", "--gradcam_dir", heatmaps,
        incoming,
    )  # fmt: skip

    assert code == 0, err
    for number, png in enumerate(pngs):
        overlay = heatmaps / "incoming" / f"study{number}" / "image1.png"
        assert overlay.is_file()
        assert Image.open(overlay).size == Image.open(png).size
