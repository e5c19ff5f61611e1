"""Grad-CAM over a bonify model: maps, exact probabilities, any backbone or precision, overlays."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
from PIL import Image

from bonify.images import resize_square, square_placement
from serve.gradcam import (
    expand_box,
    gradcam,
    heatmap_in_source,
    normalize_maps,
    overlay_png,
    peak_in_source,
    point_in_box,
    pointing_game,
    square_size_of,
)
from tests.support.trainer_runs import run_python
from trainer.model import build_model

IMAGE_SIZE = 64


def model_config(backbone: str, image_size: int = IMAGE_SIZE) -> dict:
    return {
        "model": {"backbone": backbone, "weights": "none", "small_cnn_width": 4,
                  "bn_momentum": 0.9, "head_units": [8], "head_dropout": [0.1]},
        "data": {"image_size": image_size},
    }  # fmt: skip


def random_images(count: int, image_size: int = IMAGE_SIZE, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, image_size, image_size, 1), dtype=np.uint8)


@pytest.fixture(scope="module")
def small_cnn():
    keras.utils.set_random_seed(0)  # the same untrained weights whatever ran before
    return build_model(model_config("small_cnn"))


def test_probabilities_equal_the_model_call_exactly(small_cnn):
    images = random_images(3)
    _, probabilities = gradcam(small_cnn, images)
    np.testing.assert_array_equal(probabilities, small_cnn(images, training=False).numpy())


def test_maps_are_float32_in_unit_range_at_the_last_conv_resolution(small_cnn):
    heatmaps, probabilities = gradcam(small_cnn, random_images(2))
    # small_cnn: 4 conv blocks, each followed by a 2x max-pool; the map is taken before the
    # last pool, so 64 px -> 8 x 8.
    assert heatmaps.shape == (2, 8, 8) and heatmaps.dtype == np.float32
    assert probabilities.shape == (2, 14) and probabilities.dtype == np.float32
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    assert np.isclose(heatmaps.max(axis=(1, 2)), 1.0).all()  # each map scaled by its peak


def test_default_class_is_the_predicted_one(small_cnn):
    images = random_images(2)
    default_maps, probabilities = gradcam(small_cnn, images)
    explicit_maps, _ = gradcam(small_cnn, images, class_index=probabilities.argmax(axis=1))
    np.testing.assert_array_equal(default_maps, explicit_maps)


def test_another_class_gives_another_map(small_cnn):
    images = random_images(1)
    # An untrained model has no positive evidence for some classes (an all-zero map): compare
    # the classes that have some.
    maps = [gradcam(small_cnn, images, class_index=index)[0] for index in range(14)]
    evident = [heatmap for heatmap in maps if heatmap.max() > 0]
    assert len(evident) >= 2
    assert any(not np.array_equal(evident[0], heatmap) for heatmap in evident[1:])


@pytest.mark.parametrize(
    "backbone",
    ["densenet121", pytest.param("densenet169", marks=pytest.mark.slow),
     pytest.param("densenet201", marks=pytest.mark.slow)],
)  # fmt: skip
def test_densenets_give_maps_and_exact_probabilities(backbone):
    model = build_model(model_config(backbone))
    images = random_images(2)
    heatmaps, probabilities = gradcam(model, images)
    assert heatmaps.shape == (2, 2, 2)  # DenseNet: stride 32
    assert np.isfinite(heatmaps).all()
    np.testing.assert_array_equal(probabilities, model(images, training=False).numpy())


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_models_saved_under_reduced_precision_give_float32_maps(policy, tmp_path):
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(model_config("small_cnn"))
        model.save(tmp_path / "final.keras")
    finally:
        keras.mixed_precision.set_global_policy(previous)
    loaded = keras.saving.load_model(tmp_path / "final.keras")
    assert loaded.layers[-2].dtype_policy.name == policy  # the reload kept the policy
    images = random_images(2)
    heatmaps, probabilities = gradcam(loaded, images)
    assert heatmaps.dtype == np.float32 and probabilities.dtype == np.float32
    assert np.isfinite(heatmaps).all() and heatmaps.max() > 0
    np.testing.assert_array_equal(probabilities, loaded(images, training=False).numpy())


def test_zero_gradients_give_a_map_of_zeros_not_nan():
    model = build_model(model_config("small_cnn"))
    logits = model.get_layer("logits")
    # Every class logit is its bias alone: no gradient reaches the features.
    logits.set_weights([np.zeros_like(w) for w in logits.get_weights()])
    heatmaps, _ = gradcam(model, random_images(2))
    assert np.isfinite(heatmaps).all()
    np.testing.assert_array_equal(heatmaps, 0.0)


def test_normalizing_constant_or_nan_maps_gives_zeros():
    cams = np.stack([np.zeros((3, 3)), np.full((3, 3), np.nan), np.full((3, 3), 2.0)])
    maps = normalize_maps(cams)
    np.testing.assert_array_equal(maps[:2], 0.0)
    np.testing.assert_array_equal(maps[2], 1.0)


@pytest.mark.parametrize("shape", [(512, 300), (300, 512), (512, 128), (400, 400), (97, 61)])
def test_square_size_is_recovered_from_the_placement(shape):
    placement = square_placement(*shape, IMAGE_SIZE, "pad")
    assert square_size_of(placement) == IMAGE_SIZE


def test_heatmap_is_cropped_from_the_padding_and_resized_to_the_source():
    # A 512 x 256 source: padded into 64 x 64 it spans columns 16..47, so the left quarter of
    # the square is padding. A map hot only in the padding maps to nothing on the image.
    placement = square_placement(512, 256, IMAGE_SIZE, "pad")
    assert (placement.left, placement.width) == (16, 32)
    hot_padding = np.zeros((8, 8), np.float32)
    hot_padding[:, 0] = 1.0
    in_source = heatmap_in_source(hot_padding, placement, (512, 256))
    assert in_source.shape == (512, 256)
    assert in_source.max() < 0.05
    # A map hot in its top-left image cell peaks at the source's top-left corner region.
    hot_corner = np.zeros((8, 8), np.float32)
    hot_corner[0, 2] = 1.0
    row, column = peak_in_source(hot_corner, placement, (512, 256))
    assert row < 512 // 8 and column < 256 // 4


def test_overlay_is_a_png_of_the_original_size_coloured_where_the_map_is_hot():
    original = np.full((300, 150), 100, np.uint8)
    placement = square_placement(300, 150, IMAGE_SIZE, "pad")
    heatmap = np.zeros((8, 8), np.float32)
    heatmap[0:2, 2:6] = 1.0  # the image's top rows (columns 2..5 hold the image)
    overlay = np.asarray(Image.open(io.BytesIO(overlay_png(original, heatmap, placement))))
    assert overlay.shape == (300, 150, 3)
    top, bottom = overlay[:20].astype(int), overlay[-20:].astype(int)
    assert np.abs(top[..., 0] - top[..., 2]).mean() > 20  # coloured
    np.testing.assert_array_equal(bottom, 100)  # cold: the radiograph unaltered


def test_overlay_of_an_image_as_the_model_saw_it_lines_up_with_the_source():
    # A bright square in the source's lower right: the model input is the padded resize, so
    # a map built from the model input's bright pixels must land there again on the source.
    source = np.zeros((400, 200), np.uint8)
    source[300:380, 120:190] = 255
    square = resize_square(source, IMAGE_SIZE, "pad").astype(np.float32) / 255.0
    placement = square_placement(400, 200, IMAGE_SIZE, "pad")
    row, column = peak_in_source(square, placement, source.shape, IMAGE_SIZE)
    assert point_in_box((row, column), expand_box((300, 120, 380, 190), 8, source.shape))


# A short real run that learns the sample's findings at 64 px: 150 patients (the session's
# 60-patient sample has too few abnormal test images to measure against chance), 20 epochs,
# about 45 s of training on 2 cores.
POINTING_RUN_PATIENTS = 150
POINTING_RUN_CONFIG = """
model: {backbone: small_cnn, weights: none, small_cnn_width: 8, bn_momentum: 0.9,
        head_units: [32], head_dropout: [0.1]}
data: {image_size: 64, shuffle_buffer: 256}
training: {global_batch_size: 16, validation_steps: 1, verbose: 2, tensorboard_images: 0}
distribute: {mixed_precision: "off"}
phases:
  - {name: only, trainable: all, learning_rate: 0.003, epochs: 20}
"""


@pytest.mark.slow
def test_maps_of_a_trained_model_point_at_the_findings_well_above_chance(tmp_path):
    from beam_preprocess.__main__ import main as preprocess_main
    from bonify.sample import generate_sample

    generate_sample(tmp_path / "raw", patients=POINTING_RUN_PATIENTS, seed=0)
    shards = tmp_path / "shards"
    assert preprocess_main(["--input_dir", str(tmp_path / "raw"), "--output_dir", str(shards),
                            "--image_size", str(IMAGE_SIZE), "--runner=FnApiRunner"]) == 0  # fmt: skip
    config = tmp_path / "pointing.yaml"
    config.write_text(POINTING_RUN_CONFIG)
    trained = run_python(
        "-m", "trainer", "--data_dir", str(shards), "--job_dir", str(tmp_path / "job"),
        "--config", str(config),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    model = keras.saving.load_model(tmp_path / "job" / "model" / "final.keras")

    result = pointing_game(model, str(shards), str(tmp_path / "raw"), split="test")
    print(result.summary())  # measured 24/38 = 0.632 against chance 0.261 (2.4x)
    assert result.images >= 30
    assert result.rate_true >= 2 * result.chance
