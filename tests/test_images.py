"""bonify.images, the one image path: what it rejects, where the image lands, and that
to_model_input is decode + resize_square (the Beam job's record, see
tests/preprocess/test_transform.py for the job itself)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from beam_preprocess.index import REASONS
from bonify.images import (
    IMAGE_REJECTION_REASONS,
    MAX_IMAGE_PIXELS,
    MIN_IMAGE_SIDE,
    ImageRejected,
    decode_to_gray,
    dicom_identifiers,
    resize_square,
    square_placement,
    to_model_input,
)
from tests.support.image_files import bomb_png, encoded_bytes, png_bytes, smooth


def rejection(data: bytes) -> ImageRejected:
    with pytest.raises(ImageRejected) as raised:
        decode_to_gray(data)
    return raised.value


def test_every_image_reason_is_a_reason_of_the_beam_job():
    assert set(IMAGE_REJECTION_REASONS) <= set(REASONS)
    for code, meaning in IMAGE_REJECTION_REASONS.items():
        assert REASONS[code] == meaning


def test_empty_file_is_rejected():
    assert rejection(b"").reason == "empty_file"


# Pillow itself warns about the first size (and refuses the second); the warning is expected.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("width", "height"),
    [(10_000, 10_000), (30_000, 30_000)],
    ids=["above_the_guard", "above_pillows_error_limit"],
)
def test_decompression_bomb_is_rejected_before_its_pixels_are_decoded(width, height):
    assert width * height > MAX_IMAGE_PIXELS
    rejected = rejection(bomb_png(width, height))
    assert rejected.reason == "decompression_bomb"
    assert "\n" not in rejected.detail


@pytest.mark.parametrize("size", [(MIN_IMAGE_SIDE - 1, 200), (200, MIN_IMAGE_SIDE - 1), (8, 8)])
def test_images_under_the_minimum_side_are_too_small(size):
    height, width = size
    rejected = rejection(png_bytes(smooth(height, width)))
    assert rejected.reason == "too_small"
    assert f"{width}x{height}" in rejected.detail


def test_an_image_of_exactly_the_minimum_side_is_used():
    gray = decode_to_gray(png_bytes(smooth(MIN_IMAGE_SIDE, 4 * MIN_IMAGE_SIDE)))
    assert gray.shape == (MIN_IMAGE_SIDE, 4 * MIN_IMAGE_SIDE)


@pytest.mark.parametrize("format", ["GIF", "BMP", "TIFF"])
def test_image_formats_other_than_png_jpeg_dicom_are_unsupported(format):
    rejected = rejection(encoded_bytes(Image.fromarray(smooth(64, 64)), format))
    assert rejected.reason == "unsupported_format"
    assert format in rejected.detail


def test_text_is_not_an_image():
    assert rejection(b"patient,study\n" * 20).reason == "not_an_image"


def test_jpeg_is_decoded():
    pixels = smooth(80, 120)
    decoded = decode_to_gray(encoded_bytes(Image.fromarray(pixels), "JPEG", quality=100))
    assert decoded.shape == (80, 120)
    assert np.abs(decoded.astype(int) - pixels).mean() < 2


@pytest.mark.parametrize("resize", ["pad", "stretch"])
def test_model_input_is_the_decoded_image_resized_to_the_square(resize):
    rgb = np.dstack([smooth(300, 75), smooth(300, 75, seed=1), smooth(300, 75, seed=2)])
    data = png_bytes(rgb)
    expected = resize_square(decode_to_gray(data), 64, resize)
    model_input = to_model_input(data, 64, resize)
    assert model_input.dtype == np.uint8 and model_input.shape == (64, 64)
    assert np.array_equal(model_input, expected)


@pytest.mark.parametrize(
    ("height", "width"), [(400, 100), (100, 400), (300, 217), (217, 300), (64, 64), (33, 50)]
)
def test_square_placement_is_where_resize_square_puts_the_image(height, width):
    # A white image on black padding: the placement must be exactly the non-black box.
    square = resize_square(np.full((height, width), 255, np.uint8), 64, "pad")
    rows, cols = np.flatnonzero(square.max(axis=1)), np.flatnonzero(square.max(axis=0))
    place = square_placement(height, width, 64, "pad")
    assert (place.top, place.left) == (rows.min(), cols.min())
    assert (place.height, place.width) == (rows.size, cols.size)


def test_square_placement_of_stretch_is_the_whole_square():
    assert tuple(square_placement(400, 100, 64, "stretch")) == (0, 0, 64, 64)


def test_unknown_resize_mode_is_a_value_error():
    with pytest.raises(ValueError, match="crop"):
        square_placement(10, 10, 64, "crop")


def test_png_has_no_dicom_identifiers():
    assert dicom_identifiers(png_bytes(smooth(64, 64))) is None
    assert dicom_identifiers(b"") is None
