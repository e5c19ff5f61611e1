"""Fixtures of the evaluator's tests: predictions CSVs and a tiny model in the trainer's contract."""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest

from bonify.model_card import CARD_FILE
from bonify.vocabulary import CLASS_NAMES, REGIONS, SCHEMA_VERSION, STUDY_SUFFIXES, label_of

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SEED_PREDICTIONS_DIR = REPO_ROOT.parent / "shared" / "reference" / "seed_predictions"
PROB_COLUMNS = [f"prob_{name}" for name in CLASS_NAMES]


def write_predictions_csv(path, image_paths, true_labels, probs) -> pathlib.Path:
    """A predictions CSV with just the required columns."""
    table = pd.DataFrame({"image_path": image_paths, "true_label": true_labels})
    for index, column in enumerate(PROB_COLUMNS):
        table[column] = np.asarray(probs)[:, index]
    table.to_csv(path, index=False)
    return pathlib.Path(path)


def synthetic_rows(studies, rng, accuracy=0.8):
    """Image paths, labels and softmax probs for `studies` = [(region, patient, study, abnormal,
    n_images)]; each image is right with probability `accuracy` (else a random other class)."""
    paths, labels, probs = [], [], []
    for region, patient, study, abnormal, n_images in studies:
        label = label_of(REGIONS.index(region), abnormal)
        for image in range(1, n_images + 1):
            paths.append(
                f"MURA-v1.1/valid/XR_{region}/patient{patient:05d}/"
                f"study{study}_{STUDY_SUFFIXES[abnormal]}/image{image}.png"
            )
            labels.append(label)
            predicted = label if rng.random() < accuracy else int(rng.integers(0, 14))
            row = rng.random(14) * 0.2
            row[predicted] += 2.0
            probs.append(row / row.sum())
    return paths, np.asarray(labels), np.asarray(probs)


@pytest.fixture
def predictions_csv_factory(tmp_path):
    """Call with (image_paths, true_labels, probs) -> path of a new predictions CSV."""
    counter = iter(range(1000))

    def make(image_paths, true_labels, probs):
        return write_predictions_csv(
            tmp_path / f"predictions_{next(counter)}.csv", image_paths, true_labels, probs
        )

    return make


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    """Call with image_size -> path of a saved `.keras` model in the trainer's contract
    (uint8 [B, S, S, 1] in, float32 [B, 14] softmax out), briefly trained on noise-free
    class-dependent patterns so its predictions are not all one class."""
    import keras

    cache = {}

    def make(image_size: int) -> pathlib.Path:
        if image_size in cache:
            return cache[image_size]
        keras.utils.set_random_seed(0)
        inputs = keras.Input((image_size, image_size, 1), dtype="uint8")
        x = keras.layers.Rescaling(1 / 255.0)(inputs)
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dense(14)(x)
        outputs = keras.layers.Activation("softmax", dtype="float32")(x)
        model = keras.Model(inputs, outputs)
        model.compile("adam", "sparse_categorical_crossentropy")
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 14, 256)
        images = labels[:, None, None, None] * 18 + rng.integers(
            0, 10, (256, image_size, image_size, 1)
        )
        model.fit(images.astype("uint8"), labels, epochs=2, verbose=0)
        path = tmp_path_factory.mktemp("model") / f"tiny_{image_size}.keras"
        model.save(path)
        # The card the trainer writes beside its models (its input spec is what consumers read).
        card = {"input_spec": {"image_size": image_size, "resize": "pad",
                               "class_names": list(CLASS_NAMES), "schema_version": SCHEMA_VERSION}}  # fmt: skip
        (path.parent / CARD_FILE).write_text(json.dumps(card))
        cache[image_size] = path
        return path

    return make


@pytest.fixture
def job_with_model(tiny_model_factory, sample_shards_dir, tmp_path) -> pathlib.Path:
    """A JOB folder holding model/final.keras + its card: the tiny evaluator model laid out
    as the trainer does."""
    manifest = json.loads((sample_shards_dir / "manifest.json").read_text())
    tiny = tiny_model_factory(int(manifest["image_size"]))
    model_dir = tmp_path / "job" / "model"
    model_dir.mkdir(parents=True)
    shutil.copy(tiny, model_dir / "final.keras")
    shutil.copy(tiny.parent / CARD_FILE, model_dir / CARD_FILE)
    return tmp_path / "job"


@pytest.fixture
def synthetic_rows_factory():
    """`synthetic_rows` as a fixture (test modules cannot import conftest under importlib mode)."""
    return synthetic_rows


def in_ci(env) -> bool:
    """True when the environment says it is a CI run (CI=true, as GitHub Actions and most
    CI services set it; also 1 or yes)."""
    return env.get("CI", "").strip().lower() in ("true", "1", "yes")


def reference_dir_or_skip(path: pathlib.Path, env) -> pathlib.Path:
    """`path` when it is a folder; otherwise skip the calling test on a developer's machine
    and fail it in CI, naming the folder, so CI never passes without the reproduction check."""
    if path.is_dir():
        return path
    message = (
        f"the reference model's published predictions are absent: no folder {path} "
        "(the reproduction tests read them from there, in the workspace beside the project)"
    )
    if in_ci(env):
        pytest.fail(f"{message}; CI must run these tests", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def reference_dir_or_skip_function():
    """`reference_dir_or_skip` as a fixture (test modules cannot import conftest)."""
    return reference_dir_or_skip


@pytest.fixture(scope="session")
def seed_predictions_dir() -> pathlib.Path:
    """The reference model's published test-split predictions (test_predictions.csv,
    test_probs.npy), read in place from the workspace and never copied into the project.
    Skipped when absent, except in CI (CI=true), where their absence fails the test."""
    return reference_dir_or_skip(SEED_PREDICTIONS_DIR, os.environ)
