"""`python -m eval --model` on the fixture shards: in-process inference, files, report, TensorBoard."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from bonify.vocabulary import MANIFEST_FILE, SPLITS, RecordKeys, shard_pattern, tf_feature_spec
from eval.__main__ import main
from eval.figures import FIGURES
from eval.run import TABLE_FILES


def decoded_split(shards_dir, split="test"):
    """(paths, uint8 images [N, S, S, 1]) of a split, decoded the simplest way (eagerly)."""
    import tensorflow as tf

    spec = tf_feature_spec((RecordKeys.IMAGE, RecordKeys.PATH))
    paths, images = [], []
    for file in sorted(shards_dir.glob(shard_pattern(split))):
        for record in tf.data.TFRecordDataset(str(file)):
            features = tf.io.parse_single_example(record, spec)
            paths.append(features[RecordKeys.PATH].numpy().decode())
            images.append(tf.io.decode_png(features[RecordKeys.IMAGE], channels=1).numpy())
    return paths, np.stack(images)


@pytest.fixture(scope="module")
def model_path(tiny_model_factory, sample_shards_dir):
    manifest = json.loads((sample_shards_dir / MANIFEST_FILE).read_text())
    return tiny_model_factory(int(manifest["image_size"]))


@pytest.fixture(scope="module")
def evaluated(model_path, sample_shards_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("eval") / "EVAL"
    argv = ["--model", str(model_path), "--data_dir", str(sample_shards_dir), "--split", "test",
            "--output_dir", str(output), "--batch_size", "16", "--bootstrap_resamples", "50"]  # fmt: skip
    assert main(argv) == 0
    return output


def test_every_listed_file_is_written(evaluated):
    for name in (*TABLE_FILES, *FIGURES):
        assert (evaluated / name).is_file() and (evaluated / name).stat().st_size > 0, name
    assert pd.read_csv(evaluated / "confusion_matrix.csv", index_col=0).shape == (14, 14)
    assert pd.read_csv(evaluated / "region_confusion.csv", index_col=0).shape == (7, 7)


def test_report_embeds_every_figure_and_loads_nothing_from_the_network(evaluated):
    report = (evaluated / "report.html").read_text()
    for name in FIGURES:
        assert f"id='{name}'" in report, name
    assert report.count("src='data:image/png;base64,") == len(FIGURES)
    assert "http://" not in report and "https://" not in report


def test_predictions_are_the_models_on_every_test_image(evaluated, model_path, sample_shards_dir):
    import keras

    manifest = json.loads((sample_shards_dir / MANIFEST_FILE).read_text())
    written = pd.read_csv(evaluated / "predictions.csv").set_index("image_path")
    assert len(written) == manifest["splits"]["test"]["images"]
    paths, images = decoded_split(sample_shards_dir)
    expected = keras.saving.load_model(model_path).predict(images, verbose=0)
    probs = written.loc[paths, [c for c in written.columns if c.startswith("prob_")]].to_numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    metrics = json.loads((evaluated / "metrics.json").read_text())
    assert metrics["n_images"] == len(paths)
    assert metrics["top1_accuracy"] == pytest.approx(written["correct"].mean())
    assert metrics["source"]["inference"] == "in-process"


def test_report_header_names_the_model_and_manifest_with_their_sha256(
    evaluated, model_path, sample_shards_dir
):
    import bonify

    text = (evaluated / "report.html").read_text(encoding="utf-8")
    cells = dict(re.findall(r"<td id='([\w-]+)'>([^<]*)</td>", text))
    manifest_path = sample_shards_dir / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text())
    assert cells["bonify-version"] == bonify.__version__
    assert cells["model"] == str(model_path)
    assert cells["model-sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert cells["split"] == "test (in-process inference)"
    assert cells["manifest"] == str(manifest_path)
    assert cells["manifest-sha256"] == hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    assert cells["image-settings"] == (
        f"{manifest['image_size']} px square, resize {manifest['resize']}, "
        f"encoding {manifest['encoding']}"
    )
    split_images = {split: manifest["splits"][split]["images"] for split in SPLITS}
    assert cells["split-images"] == ", ".join(f"{s} {n:,}" for s, n in split_images.items())
    source = json.loads((evaluated / "metrics.json").read_text())["source"]
    assert source["model_sha256"] == cells["model-sha256"]
    assert source["manifest"]["split_images"] == split_images


def test_tensorboard_has_scalars_and_figures(evaluated):
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import (
        TENSORS,
        EventAccumulator,
    )

    accumulator = EventAccumulator(str(evaluated / "tensorboard"), size_guidance={TENSORS: 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["tensors"])
    assert {"eval/top1_accuracy", "eval/cohen_kappa", "eval/study_kappa", "eval/ece"} <= tags
    assert {f"figures/{name.removesuffix('.png')}" for name in FIGURES} <= tags
    metrics = json.loads((evaluated / "metrics.json").read_text())
    value = float(tf.make_ndarray(accumulator.Tensors("eval/top1_accuracy")[0].tensor_proto))
    assert value == pytest.approx(metrics["top1_accuracy"], abs=1e-6)


def test_model_input_size_differing_from_shards_is_a_clear_error(
    tiny_model_factory, sample_shards_dir, tmp_path, capsys
):
    wrong = tiny_model_factory(32)
    argv = ["--model", str(wrong), "--data_dir", str(sample_shards_dir),
            "--output_dir", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "image_size 32" in error and "image_size 64" in error
    assert len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_empty_split_is_a_clear_error(model_path, sample_shards_dir, tmp_path, capsys):
    data_dir = tmp_path / "shards"
    data_dir.mkdir()
    manifest = json.loads((sample_shards_dir / MANIFEST_FILE).read_text())
    manifest["splits"]["test"]["images"] = 0
    (data_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    argv = [
        "--model",
        str(model_path),
        "--data_dir",
        str(data_dir),
        "--output_dir",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert "has no images" in capsys.readouterr().err
    # Shards present but holding no records (and a manifest that counts images anyway).
    manifest["splits"]["test"]["images"] = 5
    (data_dir / MANIFEST_FILE).write_text(json.dumps(manifest))
    (data_dir / "mura-test.tfrecord-00000-of-00001").write_bytes(b"")
    assert main(argv) == 2
    assert "hold no records" in capsys.readouterr().err


def test_missing_manifest_is_a_clear_error(model_path, sample_shards_dir, tmp_path, capsys):
    data_dir = tmp_path / "copy"
    shutil.copytree(sample_shards_dir, data_dir)
    (data_dir / MANIFEST_FILE).unlink()
    argv = [
        "--model",
        str(model_path),
        "--data_dir",
        str(data_dir),
        "--output_dir",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert f"no {MANIFEST_FILE}" in capsys.readouterr().err
