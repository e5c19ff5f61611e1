"""report.html's gallery: per region the most confident mistakes and a correct prediction,
each the image the model saw (from the shard) beside its Grad-CAM overlay."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from bonify.dataset import iterate_records, split_files
from bonify.vocabulary import MANIFEST_FILE, RecordKeys, label_of
from eval.__main__ import main
from eval.gallery import build_gallery, select_rows, thumbnail
from eval.predictions import make_predictions, read_predictions
from tests.support.eval_runs import write_model_card

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(label: int, predicted: int, confidence: float) -> np.ndarray:
    row = np.full(14, (1 - confidence) / 13)
    row[predicted] = confidence
    return row


def _path(region: str, patient: int, abnormal: int, image: int = 1) -> str:
    suffix = "positive" if abnormal else "negative"
    return f"MURA-v1.1/valid/XR_{region}/patient{patient:05d}/study1_{suffix}/image{image}.png"


def test_the_most_confident_mistakes_then_the_most_confident_correct_per_region():
    elbow_normal, elbow_abnormal = label_of(0, 0), label_of(0, 1)
    rows = [  # (path, label, predicted, confidence)
        (_path("ELBOW", 1, 0), elbow_normal, elbow_abnormal, 0.90),  # mistake, 1st
        (_path("ELBOW", 2, 0), elbow_normal, 5, 0.60),  # mistake, 3rd: not shown
        (_path("ELBOW", 3, 1), elbow_abnormal, elbow_normal, 0.80),  # mistake, 2nd
        (_path("ELBOW", 4, 1), elbow_abnormal, elbow_abnormal, 0.70),  # correct, 2nd: not shown
        (_path("ELBOW", 5, 0), elbow_normal, elbow_normal, 0.95),  # correct, 1st
        (_path("HAND", 6, 0), label_of(3, 0), label_of(3, 0), 0.50),  # HAND: no mistakes
    ]
    predictions = make_predictions(
        [path for path, *_ in rows],
        [label for _, label, _, _ in rows],
        np.stack([_row(label, predicted, conf) for _, label, predicted, conf in rows]),
    )
    chosen = [predictions.image_paths[index] for index in select_rows(predictions)]
    assert chosen == [rows[0][0], rows[2][0], rows[4][0], rows[5][0]]


def save_backbone_model(folder, image_size: int):
    """The trainer's small_cnn (a nested backbone, as Grad-CAM needs), untrained, saved with
    its model card."""
    import keras

    from trainer.model import build_model

    keras.utils.set_random_seed(0)
    model = build_model(
        {
            "model": {"backbone": "small_cnn", "weights": "none", "small_cnn_width": 4,
                      "bn_momentum": 0.9, "head_units": [8], "head_dropout": [0.1]},
            "data": {"image_size": image_size},
        }
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "final.keras")
    write_model_card(folder, image_size)
    return folder / "final.keras"


def gallery_entries(report: str) -> list[dict]:
    """Each gallery figure of report.html: its class, image path and the two decoded PNGs."""
    section = report[report.index("id='gallery'") :]
    entries = []
    for figure in re.findall(r"<figure class='(mistake|correct)'>(.*?)</figure>", section):
        verdict, body = figure
        images = dict(re.findall(r"class='gallery-(image|overlay)'[^>]*src='data:image/png;"
                                 r"base64,([^']+)'", body))  # fmt: skip
        entries.append(
            {
                "verdict": verdict,
                "path": re.search(r"<code>([^<]+)</code>", body).group(1),
                "images": {kind: base64.b64decode(data) for kind, data in images.items()},
            }
        )
    return entries


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, sample_shards_dir):
    size = int(json.loads((sample_shards_dir / MANIFEST_FILE).read_text())["image_size"])
    root = tmp_path_factory.mktemp("gallery")
    model = save_backbone_model(root / "model", size)
    argv = ["--model", str(model), "--data_dir", str(sample_shards_dir), "--split", "test",
            "--output_dir", str(root / "eval"), "--bootstrap_resamples", "0"]  # fmt: skip
    assert main(argv) == 0
    return model, root / "eval"


def test_gallery_shows_the_selected_rows_each_with_an_overlay(evaluated):
    _, output = evaluated
    report = (output / "report.html").read_text()
    entries = gallery_entries(report)
    predictions = read_predictions(str(output / "predictions.csv"))
    expected = [predictions.image_paths[index] for index in select_rows(predictions)]
    assert [entry["path"] for entry in entries] == expected and expected
    right = predictions.pred_labels == predictions.true_labels
    by_path = dict(zip(predictions.image_paths, right, strict=True))
    assert [entry["verdict"] for entry in entries] == [
        "correct" if by_path[path] else "mistake" for path in expected
    ]
    overlays = report.count("class='gallery-overlay'")
    assert overlays == report.count("class='gallery-image'") == len(entries)


def test_gallery_images_are_valid_pngs_of_what_the_model_saw(evaluated, sample_shards_dir):
    _, output = evaluated
    entries = gallery_entries((output / "report.html").read_text())
    shard_images = {record[RecordKeys.PATH]: record[RecordKeys.IMAGE]
                    for record in iterate_records(split_files(str(sample_shards_dir), "test"))}  # fmt: skip
    for entry in entries:
        for kind in ("image", "overlay"):
            data = entry["images"][kind]
            assert data.startswith(PNG_SIGNATURE)
            Image.open(io.BytesIO(data)).verify()
        shown = np.asarray(Image.open(io.BytesIO(entry["images"]["image"])))
        np.testing.assert_array_equal(shown, thumbnail(shard_images[entry["path"]][..., 0]))
        overlay = Image.open(io.BytesIO(entry["images"]["overlay"]))
        assert overlay.convert("RGB").size == shown.shape[::-1]


def test_a_model_grad_cam_cannot_map_gives_a_note_not_a_failure(sample_shards_dir):
    import keras

    inputs = keras.Input((64, 64, 1), dtype="uint8")
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255.0)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(14, activation="softmax")(flat))
    records = list(iterate_records(split_files(str(sample_shards_dir), "test"), limit=3))
    predictions = make_predictions(
        [record[RecordKeys.PATH] for record in records],
        [record[RecordKeys.LABEL] for record in records],
        np.full((3, 14), 1 / 14),
    )
    gallery = build_gallery(model, split_files(str(sample_shards_dir), "test"), predictions)
    assert gallery.items == () and "Grad-CAM" in gallery.note


def test_a_predictions_file_has_no_gallery(evaluated, tmp_path):
    _, output = evaluated
    argv = ["--predictions", str(output / "predictions.csv"), "--output_dir", str(tmp_path),
            "--bootstrap_resamples", "0"]  # fmt: skip
    assert main(argv) == 0
    assert "id='gallery'" not in (tmp_path / "report.html").read_text()


@pytest.mark.slow
def test_the_beam_mode_builds_the_same_gallery(evaluated, sample_shards_dir, tmp_path):
    model, output = evaluated
    argv = ["--model", str(model), "--data_dir", str(sample_shards_dir), "--split", "test",
            "--output_dir", str(tmp_path), "--bootstrap_resamples", "0", "--runner=FnApiRunner"]  # fmt: skip
    assert main(argv) == 0
    beam = gallery_entries((tmp_path / "report.html").read_text())
    local = gallery_entries((output / "report.html").read_text())
    assert [entry["path"] for entry in beam] == [entry["path"] for entry in local]


def test_a_region_without_mistakes_says_so():
    from eval.gallery import Gallery, GalleryItem
    from eval.report import gallery_html

    def item(region: str, correct: bool) -> GalleryItem:
        return GalleryItem(_path(region, 1, 0), region, f"{region}_Normal",
                           f"{region}_Normal" if correct else f"{region}_Abnormal", 0.9, correct,
                           PNG_SIGNATURE, PNG_SIGNATURE)  # fmt: skip

    text = "".join(gallery_html(Gallery(items=(item("ELBOW", False), item("ELBOW", True),
                                               item("HAND", True)))))  # fmt: skip
    elbow, hand = text.split("<h3>ELBOW</h3>")[1].split("<h3>HAND</h3>")
    assert "No wrong prediction" not in elbow and "No wrong prediction" in hand
    assert text.count("<figure class='mistake'>") == 1
