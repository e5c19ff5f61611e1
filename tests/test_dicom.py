"""DICOM through the one image path: files written with pydicom from known pixel arrays."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from bonify.images import (
    MIN_IMAGE_SIDE,
    ImageRejected,
    decode_to_gray,
    dicom_identifiers,
    to_model_input,
)
from tests.support.image_files import png_bytes, smooth

TWELVE_BIT_MAX = 4095


def dicom_bytes(
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    preamble: bool = True,
    **elements,
) -> bytes:
    """A DICOM Part 10 file (explicit VR little endian) holding `pixels`, plus `elements`."""
    dataset = Dataset()
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8)
    for keyword, value in elements.items():
        setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=preamble)
    return buffer.getvalue()


def twelve_bit(height: int = 64, width: int = 48) -> np.ndarray:
    """uint16 stored values covering 0..4095 (a 12-bit detector)."""
    return np.round(smooth(height, width).astype(np.float64) * TWELVE_BIT_MAX / 255).astype(
        np.uint16
    )


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window onto 0..255, in float."""
    center, width = center - 0.5, width - 1
    scaled = ((values - center) / width + 0.5) * 255
    scaled[values <= center - width / 2] = 0
    scaled[values > center + width / 2] = 255
    return scaled


def rejection(data: bytes) -> ImageRejected:
    with pytest.raises(ImageRejected) as raised:
        decode_to_gray(data)
    return raised.value


def test_8_bit_monochrome2_gives_the_model_input_of_the_same_pixels_as_png():
    pixels = smooth(120, 80)
    assert np.array_equal(decode_to_gray(dicom_bytes(pixels)), pixels)
    assert np.array_equal(
        to_model_input(dicom_bytes(pixels), 64, "pad"), to_model_input(png_bytes(pixels), 64, "pad")
    )


def test_monochrome1_is_inverted_so_its_twin_gives_the_same_model_input():
    pixels = smooth(120, 80)
    twin = dicom_bytes(255 - pixels, photometric="MONOCHROME1")
    assert np.array_equal(
        to_model_input(twin, 64, "pad"), to_model_input(png_bytes(pixels), 64, "pad")
    )


def test_without_a_window_the_full_stored_range_maps_to_0_255():
    stored = twelve_bit()
    gray = decode_to_gray(dicom_bytes(stored, bits_stored=12))
    assert np.array_equal(gray, np.round(stored * (255 / TWELVE_BIT_MAX)).astype(np.uint8))


def test_window_center_and_width_are_applied():
    stored = twelve_bit()
    gray = decode_to_gray(dicom_bytes(stored, bits_stored=12, WindowCenter=1500, WindowWidth=1000))
    expected = linear_window(stored.astype(np.float64), 1500, 1000)
    assert np.abs(gray - expected).max() <= 0.5 + 1e-6  # only rounding differs
    assert gray[stored < 1000].max() == 0 and gray[stored > 2000].min() == 255


def test_rescale_slope_and_intercept_come_before_the_window():
    stored = twelve_bit()
    # Window given in rescaled units (e.g. Hounsfield-like): value = 2 * stored - 1024.
    data = dicom_bytes(
        stored, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=0,
        WindowWidth=2000,
    )  # fmt: skip
    expected = linear_window(stored * 2.0 - 1024, 0, 2000)
    assert np.abs(decode_to_gray(data) - expected).max() <= 0.5 + 1e-6


def test_rescale_without_window_maps_the_rescaled_stored_range():
    stored = twelve_bit()
    data = dicom_bytes(stored, bits_stored=12, RescaleSlope=-1, RescaleIntercept=TWELVE_BIT_MAX)
    # A negative slope turns the image over within the same range.
    expected = np.round((TWELVE_BIT_MAX - stored) * (255 / TWELVE_BIT_MAX)).astype(np.uint8)
    assert np.array_equal(decode_to_gray(data), expected)


def test_a_compressed_transfer_syntax_without_a_decoder_is_one_line_naming_it():
    assert not get_decoder(JPEGLSLossless).is_available  # the premise of this test
    dataset_bytes = dicom_bytes(smooth(64, 64))
    # Same dataset, but declared JPEG-LS with an encapsulated (undecodable here) frame.
    dataset = dcmread(io.BytesIO(dataset_bytes))
    dataset.file_meta.TransferSyntaxUID = JPEGLSLossless
    dataset.PixelData = encapsulate([b"\xff\xd8\xff\xf7" + bytes(32)])
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    rejected = rejection(buffer.getvalue())
    assert rejected.reason == "unsupported_dicom"
    assert JPEGLSLossless in rejected.detail and "JPEG-LS Lossless" in rejected.detail
    assert "\n" not in str(rejected)


def test_multi_frame_dicom_is_unsupported():
    frames = np.stack([smooth(64, 64), smooth(64, 64, seed=1)])
    rejected = rejection(dicom_bytes(frames))
    assert rejected.reason == "unsupported_dicom" and "2 frames" in rejected.detail


def test_colour_dicom_is_unsupported():
    rgb = np.dstack([smooth(64, 64)] * 3)
    rejected = rejection(dicom_bytes(rgb, photometric="RGB"))
    assert rejected.reason == "unsupported_dicom" and "RGB" in rejected.detail


def test_a_tiny_dicom_is_too_small():
    assert rejection(dicom_bytes(smooth(MIN_IMAGE_SIDE - 1, 64))).reason == "too_small"


def test_a_dicom_without_preamble_is_read_by_its_dcm_name():
    pixels = smooth(64, 48)
    bare = dicom_bytes(pixels, preamble=False)
    assert bare[128:132] != b"DICM"
    assert np.array_equal(decode_to_gray(bare, filename="scan.dcm"), pixels)


def test_study_and_patient_come_from_the_dicom_tags():
    data = dicom_bytes(smooth(64, 64), StudyInstanceUID="1.2.826.0.1.42", PatientID="P0007")
    assert dicom_identifiers(data) == {"study": "1.2.826.0.1.42", "patient": "P0007"}


def test_absent_tags_are_none():
    assert dicom_identifiers(dicom_bytes(smooth(64, 64))) == {"study": None, "patient": None}
