"""Decoding every pixel mode, resizing, encoding, and rejecting bad bytes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil

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
from bonify.images import to_model_input
from bonify.vocabulary import REJECTED_FILE
from tests.support.image_files import bomb_png
from tests.support.image_files import smooth as noisy

from .conftest import csv_image_rows, read_records, run_job


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


# --- the Beam job writes exactly bonify.images.to_model_input -----------------------------

JOB_IMAGE_SIZE = 64


def _rgb(height: int, width: int) -> np.ndarray:
    return np.dstack([noisy(height, width, seed) for seed in range(3)])


#: Replacement files for listed images: every pixel mode and extreme aspect ratios.
ODD_IMAGES = {
    "sixteen_bit": lambda: png_bytes(Image.fromarray(noisy(90, 60).astype(np.uint16) * 200 + 7)),
    "rgb": lambda: png_bytes(Image.fromarray(_rgb(90, 130))),
    "rgba": lambda: png_bytes(Image.fromarray(np.dstack([_rgb(90, 60), noisy(90, 60, 9)]))),
    "palette": lambda: png_bytes(Image.fromarray(_rgb(70, 100)).convert("P")),
    "tall_1_to_4": lambda: png_bytes(Image.fromarray(noisy(240, 60))),
    "wide_4_to_1": lambda: png_bytes(Image.fromarray(noisy(50, 200))),
    "jpeg": lambda: _jpeg_bytes(Image.fromarray(noisy(100, 75))),
}
#: Replacement files the job must reject, with their reason.
REJECTED_IMAGES = {
    "decompression_bomb": lambda: bomb_png(30_000, 30_000),
    "too_small": lambda: png_bytes(Image.fromarray(noisy(20, 64))),
}


@pytest.fixture(scope="module")
def odd_images_run(sample_dataset_dir, tmp_path_factory):
    """One Beam run over a copy of the sample tree in which some listed images are replaced
    by ODD_IMAGES and REJECTED_IMAGES; returns (root, output dir, name -> relative path)."""
    root = tmp_path_factory.mktemp("odd_images") / "input"
    shutil.copytree(sample_dataset_dir, root)
    rows = csv_image_rows(root / "MURA-v1.1")
    replaced = {}
    replacements = {**ODD_IMAGES, **REJECTED_IMAGES}
    for row, (name, make) in zip(rows[: len(replacements)], replacements.items(), strict=True):
        (root / row).write_bytes(make())
        replaced[name] = row
    out = tmp_path_factory.mktemp("odd_images_out")
    with contextlib.redirect_stdout(io.StringIO()):
        code = run_job(["--input_dir", root, "--output_dir", out, "--image_size", JOB_IMAGE_SIZE])
    assert code == 0
    return root, out, replaced


def test_every_record_is_bit_identical_to_to_model_input_of_its_file(odd_images_run):
    root, out, replaced = odd_images_run
    records = read_records(out)
    written = {record["path"] for record in records}
    assert set(replaced[name] for name in ODD_IMAGES) <= written  # the odd ones are in
    for record in records:
        stored = np.asarray(Image.open(io.BytesIO(record["image"])))
        expected = to_model_input((root / record["path"]).read_bytes(), JOB_IMAGE_SIZE, "pad")
        assert np.array_equal(stored, expected), record["path"]


def test_the_job_rejects_a_bomb_and_a_tiny_image_with_the_shared_reasons(odd_images_run):
    _, out, replaced = odd_images_run
    rejected = [json.loads(line) for line in (out / REJECTED_FILE).read_text().splitlines()]
    reasons = {entry["path"]: entry["reason"] for entry in rejected}
    for reason in REJECTED_IMAGES:
        assert reasons[replaced[reason]] == reason
