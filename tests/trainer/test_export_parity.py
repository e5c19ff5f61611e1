"""The served SavedModel (JOB/export/) sees the pixels the model was trained on: its TF
preprocessing matches the Beam job's records (bonify.images.to_model_input, which
tests/preprocess/test_transform.py shows is bit-identical to them) within 1 gray level, and
its probabilities match final.keras on the Beam record within 0.01."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bonify.images import to_model_input
from tests.conftest import TEST_IMAGE_SIZE
from tests.preprocess.conftest import read_records
from tests.support.image_files import encoded_bytes, png_bytes, smooth

IMAGE_SIZE = 64


def _rgb(height: int, width: int) -> np.ndarray:
    return np.dstack([smooth(height, width, seed) for seed in range(3)])


#: Non-square sources: extreme aspect ratios both ways, gray and colour, down- and upscaled.
SOURCES = {
    "gray_1_to_4": lambda: png_bytes(smooth(400, 100)),
    "gray_4_to_1": lambda: png_bytes(smooth(100, 400)),
    "rgb_1_to_4": lambda: png_bytes(_rgb(240, 60)),
    "rgb_4_to_1": lambda: png_bytes(_rgb(60, 240)),
    "rgba_3_to_2": lambda: png_bytes(np.dstack([_rgb(150, 100), smooth(150, 100, 7)])),
    "palette_odd": lambda: png_bytes(Image.fromarray(_rgb(217, 300)).convert("P")),
    "sixteen_bit_gray": lambda: png_bytes(smooth(90, 60).astype(np.uint16) * 201 + 9),
    "small_upscaled": lambda: png_bytes(smooth(40, 37)),
    "gray_jpeg": lambda: encoded_bytes(Image.fromarray(smooth(300, 120)), "JPEG", quality=95),
}


def served_input(data: bytes, image_size: int, resize: str) -> np.ndarray:
    import tensorflow as tf

    from trainer.export import serving_model_input

    return serving_model_input(tf.constant(data), image_size, resize).numpy()[..., 0]


@pytest.mark.parametrize("resize", ["pad", "stretch"])
@pytest.mark.parametrize("name", list(SOURCES))
def test_served_input_is_within_one_gray_level_of_the_job_record(name, resize):
    data = SOURCES[name]()
    record = to_model_input(data, IMAGE_SIZE, resize)
    served = served_input(data, IMAGE_SIZE, resize)
    assert served.shape == record.shape and served.dtype == np.uint8
    assert np.abs(served.astype(int) - record).max() <= 1


def test_served_input_of_the_sample_tree_matches_the_beam_records(
    sample_dataset_dir, sample_shards_dir
):
    records = read_records(sample_shards_dir, "test")
    assert records
    for record in records:
        stored = np.asarray(Image.open(io.BytesIO(record["image"])))
        source = (sample_dataset_dir / record["path"]).read_bytes()
        served = served_input(source, TEST_IMAGE_SIZE, "pad")
        assert np.abs(served.astype(int) - stored).max() <= 1, record["path"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small_cnn with sharpened logits (so probabilities move with the pixels), saved as
    final.keras without a card and exported with explicit image_size/resize."""
    import keras

    from trainer.config import load_config
    from trainer.export import export_saved_model, save_keras
    from trainer.model import build_model

    keras.utils.set_random_seed(3)
    model = build_model(
        load_config(
            None,
            [
                "model.backbone=small_cnn", "model.weights=none", "model.small_cnn_width=4",
                "model.head_units=[8]", "model.head_dropout=[0.1]",
                f"data.image_size={IMAGE_SIZE}",
            ],
        )
    )  # fmt: skip
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([kernel * 10, bias])
    job = tmp_path_factory.mktemp("job")
    keras_path = str(job / "model" / "final.keras")
    save_keras(model, keras_path)
    export_saved_model(keras_path, str(job / "export"), image_size=IMAGE_SIZE, resize="pad")
    return keras.saving.load_model(keras_path), str(job / "export")


@pytest.mark.slow
def test_saved_model_probabilities_match_final_keras_on_the_job_record(exported):
    import tensorflow as tf

    model, export_dir = exported
    names = list(SOURCES)
    sources = [SOURCES[name]() for name in names]
    saved_model = tf.saved_model.load(export_dir)  # kept: its variables live as long as it
    served = saved_model.serving_default(tf.constant(sources))
    served = np.asarray(served["probabilities"] if isinstance(served, dict) else served)
    records = np.stack([to_model_input(data, IMAGE_SIZE, "pad") for data in sources])[..., None]
    expected = model.predict(records, verbose=0)
    assert served.shape == expected.shape == (len(sources), 14)
    assert np.abs(served - expected).max() <= 0.01
    # The bound bites: the old export's stretch resize moves these probabilities far more.
    stretched = np.stack([to_model_input(data, IMAGE_SIZE, "stretch") for data in sources])
    skewed = model.predict(stretched[..., None], verbose=0)
    assert np.abs(skewed - expected).max() > 0.05
