"""The model's own preprocessing against a hand computation in numpy.

The trainer feeds the model raw uint8 gray images and the exported model is served the same
way, so the preprocessing inside the model (x/255, gray copied to R, G and B, ImageNet
mean/std per channel) is the only place it happens: deleting, reordering or changing one of
those layers must fail here, not silently change what the backbone sees.
"""

from __future__ import annotations

import numpy as np
import pytest

IMAGE_SIZE = 16
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float64)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float64)


def _by_hand(images: np.ndarray) -> np.ndarray:
    """uint8 [n, S, S, 1] -> float [n, S, S, 3], written out independently of the model."""
    scaled = images.astype(np.float64) / 255.0
    rgb = np.concatenate([scaled, scaled, scaled], axis=-1)
    return (rgb - IMAGENET_MEAN) / IMAGENET_STD


@pytest.fixture(scope="module")
def model():
    from trainer.config import load_config
    from trainer.model import build_model

    config = load_config(
        None,
        [
            "model.backbone=small_cnn",
            "model.weights=none",
            "model.small_cnn_width=2",
            f"data.image_size={IMAGE_SIZE}",
        ],
    )
    return build_model(config)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Every uint8 value, the extremes 0 and 255 included, in a deterministic layout."""
    values = np.arange(2 * IMAGE_SIZE * IMAGE_SIZE) % 256
    images = values.reshape(2, IMAGE_SIZE, IMAGE_SIZE, 1).astype(np.uint8)
    images[0, 0, 0, 0], images[1, -1, -1, 0] = 0, 255
    return images


def test_backbone_receives_rescaled_gray_as_rgb_normalised_with_imagenet_mean_and_std(
    model, images
):
    from trainer.model import preprocessing_of

    seen_by_backbone = np.asarray(preprocessing_of(model)(images))
    assert seen_by_backbone.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert seen_by_backbone.dtype == np.float32
    np.testing.assert_allclose(seen_by_backbone, _by_hand(images), rtol=0, atol=1e-5)
