"""Decoding every pixel mode, resizing, encoding, and rejecting bad bytes."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from beam_preprocess.transform import (
    ImageRejected,
    decode_to_gray,
    encode,
    process_image,
    resize_square,
)


def gradient(height: int = 120, width: int = 80) -> np.ndarray:
    """A smooth uint8 gray image (H, W) with values 10..245."""
    rows = np.linspace(10, 245, height)[:, None]
    cols = np.linspace(0, 1, width)[None, :]
    return np.round(rows * (0.6 + 0.4 * cols)).astype(np.uint8)


def png_bytes(image: Image.Image, **save_options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save_options)
    return buffer.getvalue()


def test_gray_png_decodes_exactly():
    pixels = gradient()
    assert np.array_equal(decode_to_gray(png_bytes(Image.fromarray(pixels))), pixels)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "CMYK"])
def test_colour_modes_decode_to_the_same_gray(mode):
    pixels = gradient()
    image = Image.fromarray(pixels).convert(mode)
    data = png_bytes(image) if mode != "CMYK" else _jpeg_bytes(image)
    decoded = decode_to_gray(data)
    assert decoded.shape == pixels.shape and decoded.dtype == np.uint8
    tolerance = 1 if mode != "CMYK" else 8  # CMYK goes through lossy JPEG here
    assert np.abs(decoded.astype(int) - pixels).max() <= tolerance


def _jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=100)
    return buffer.getvalue()


def test_alpha_is_dropped_not_composited():
    pixels = gradient()
    rgba = np.dstack([pixels, pixels, pixels, np.zeros_like(pixels)])  # fully transparent
    decoded = decode_to_gray(png_bytes(Image.fromarray(rgba)))
    assert np.abs(decoded.astype(int) - pixels).max() <= 1


def test_palette_with_transparency_decodes():
    image = Image.fromarray(gradient()).convert("P")
    decoded = decode_to_gray(png_bytes(image, transparency=0))
    assert decoded.shape == (120, 80)


def test_16_bit_is_scaled_by_its_real_range():
    pixels16 = (gradient().astype(np.uint16) * 4 + 1000).astype(np.uint16)  # 12-bit-like
    image = Image.fromarray(pixels16)
    data = png_bytes(image)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    decoded = decode_to_gray(data)
    assert decoded.min() == 0 and decoded.max() == 255
    expected = (pixels16 - pixels16.min()) * 255.0 / (pixels16.max() - pixels16.min())
    assert np.abs(decoded - expected).max() <= 0.5 + 1e-9


def test_1_bit_becomes_0_or_255():
    image = Image.fromarray(gradient()).convert("1")
    assert set(np.unique(decode_to_gray(png_bytes(image)))) <= {0, 255}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty_file"),
        (
            b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 64,
            "not_an_image",
        ),  # ._image1.png
        (b"hello, I am a text file\n" * 10, "not_an_image"),
    ],
    ids=["empty", "macos_resource_fork", "text"],
)
def test_non_images_are_rejected(data, reason):
    with pytest.raises(ImageRejected) as raised:
        decode_to_gray(data)
    assert raised.value.reason == reason


def test_truncated_png_is_rejected():
    data = png_bytes(Image.fromarray(gradient(300, 200)))
    with pytest.raises(ImageRejected) as raised:
        decode_to_gray(data[: len(data) // 2])
    assert raised.value.reason == "truncated_image"


def test_corrupt_pixel_data_is_rejected():
    data = bytearray(png_bytes(Image.fromarray(gradient(300, 200))))
    start = data.find(b"IDAT") + 30
    data[start : start + 40] = bytes(40)
    with pytest.raises(ImageRejected) as raised:
        decode_to_gray(bytes(data))
    assert raised.value.reason in ("undecodable_image", "truncated_image")


def test_pad_keeps_aspect_and_centres_on_black():
    tall = np.full((200, 100), 200, dtype=np.uint8)
    square = resize_square(tall, 64, "pad")
    assert square.shape == (64, 64)
    columns_with_image = np.flatnonzero(square.max(axis=0) > 0)
    assert columns_with_image.min() == 16 and columns_with_image.max() == 47  # 32 wide, centred
    assert square[:, :16].max() == 0 and square[:, 48:].max() == 0
    assert square[:, 20:44].min() == 200


def test_stretch_fills_the_square():
    tall = np.full((200, 100), 200, dtype=np.uint8)
    square = resize_square(tall, 64, "stretch")
    assert square.shape == (64, 64) and square.min() == 200


@pytest.mark.parametrize("encoding", ["png", "jpeg", "raw"])
def test_encodings_round_trip_as_one_channel(encoding):
    square = resize_square(gradient(), 32, "pad")
    data = encode(square, encoding)
    if encoding == "raw":
        assert data == square.tobytes()
        return
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == "L" and decoded.format == encoding.upper()
    tolerance = 0 if encoding == "png" else 6
    assert np.abs(np.asarray(decoded).astype(int) - square).max() <= tolerance


def test_process_image_reports_sizes_and_source_hash():
    data = png_bytes(Image.fromarray(gradient(120, 80)).convert("RGB"))
    processed = process_image(data, 48, "pad", "png")
    assert (processed.height, processed.width) == (48, 48)
    assert (processed.original_height, processed.original_width) == (120, 80)
    assert processed.sha256 == hashlib.sha256(data).hexdigest()
    assert np.asarray(Image.open(io.BytesIO(processed.encoded))).shape == (48, 48)
