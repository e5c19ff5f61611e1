"""Fixtures of the evaluator's tests: predictions CSVs and a tiny model in the trainer's contract."""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pytest

from bonify.vocabulary import CLASS_NAMES, REGIONS, STUDY_SUFFIXES, label_of

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
        cache[image_size] = path
        return path

    return make


@pytest.fixture
def synthetic_rows_factory():
    """`synthetic_rows` as a fixture (test modules cannot import conftest under importlib mode)."""
    return synthetic_rows


@pytest.fixture(scope="session")
def seed_predictions_dir() -> pathlib.Path:
    """../shared/reference/seed_predictions/ (the reference project's data, never copied here)."""
    if not SEED_PREDICTIONS_DIR.is_dir():
        pytest.skip(
            f"{SEED_PREDICTIONS_DIR} is absent (the reference predictions live outside the "
            "project, in ../shared/; CI has them)"
        )
    return SEED_PREDICTIONS_DIR
