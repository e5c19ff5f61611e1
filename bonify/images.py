"""The image path: bytes of one source image -> the uint8 S×S gray array a model sees.

TF-free (Pillow + NumPy; pydicom only for DICOM). The Beam job (beam_preprocess/transform.py),
bonify-predict and the upload app all call `to_model_input`, so a model is served exactly the
pixels it was trained on. Unusable bytes raise `ImageRejected` with a code of
`IMAGE_REJECTION_REASONS`; the Beam job writes the same codes to rejected.jsonl.

Decisions:
- Formats: PNG (1/8/16 bit, gray, RGB, RGBA, palette), JPEG and DICOM. Other formats Pillow
  could open (GIF, TIFF, BMP, ...) are rejected as `unsupported_format`: nothing in MURA or a
  radiology export uses them, and the served SavedModel decodes PNG/JPEG only.
- Colour (RGB, palette, CMYK, ...) -> gray with Pillow's ITU-R 601 luma.
- Alpha (RGBA, LA, palette transparency) is dropped, not composited: the radiograph is in
  the colour channels, MURA's RGBA files are opaque, and compositing over black would
  darken any semi-transparent area arbitrarily. (The reference notebook, decoding with
  3 channels, also dropped it.)
- 16-bit and 32-bit PNGs are scaled to 0..255 by their real min..max range (a 12-bit
  X-ray stored in 16 bits would otherwise come out almost black).
- 1-bit images become 0/255.
- DICOM: Modality LUT / Rescale Slope+Intercept, then the VOI LUT or Window Center/Width
  when present, else the full stored range (Bits Stored, rescaled) -> 0..255; MONOCHROME1
  (white = low values) is inverted so bone is always bright. Multi-frame and colour DICOM
  are rejected rather than guessed at (which frame? which channel?).
"""

from __future__ import annotations

import io
import os
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

#: Resize modes: "pad" keeps the aspect ratio and pads with black (0), centred;
#: "stretch" squashes to a square like the reference notebook.
RESIZE_MODES: tuple[str, ...] = ("pad", "stretch")

#: Images narrower or lower than this (in source pixels) are rejected: an icon or a
#: thumbnail upscaled to the model's input carries no radiograph detail.
MIN_IMAGE_SIDE = 32

#: Decompression-bomb guard: images with more pixels are rejected before any pixel is
#: decoded. Pillow's own default (≈ 9459² px); the largest digital radiographs are
#: ≈ 4300 × 3500 = 15 Mpx.
MAX_IMAGE_PIXELS = 89_478_485

#: Pillow format names accepted (MPO is the multi-picture JPEG some cameras write).
SUPPORTED_PILLOW_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "MPO")

#: Why an image cannot be used; the codes of rejected.jsonl and of bonify-predict.
IMAGE_REJECTION_REASONS: dict[str, str] = {
    "empty_file": "the file has 0 bytes",
    "not_an_image": "the file is not in an image format Pillow knows (e.g. a macOS ._image1.png)",
    "unsupported_format": "an image format other than PNG, JPEG or DICOM (e.g. GIF, TIFF, BMP)",
    "truncated_image": "the image file ends early",
    "undecodable_image": "the image header is valid but the pixels cannot be decoded",
    "too_small": f"the image is under {MIN_IMAGE_SIDE} pixels on a side",
    "decompression_bomb": f"the image declares more than {MAX_IMAGE_PIXELS} pixels "
    "(a decompression bomb, or far larger than any radiograph)",
    "unsupported_dicom": "a DICOM file that cannot be read as one gray image: multi-frame, "
    "colour, no pixel data, or a compressed transfer syntax no installed handler decodes",
}

# Truncated files must be rejected, never silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"


class ImageRejected(Exception):
    """The bytes are not a usable image; `reason` is a key of IMAGE_REJECTION_REASONS and
    `detail` one line of specifics."""

    def __init__(self, reason: str, detail: str):
        detail = " ".join(str(detail).split())  # one line, whatever a library put in it
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Placement(NamedTuple):
    """Where the source image lands inside the S×S model input, in model-input pixels."""

    top: int
    left: int
    height: int
    width: int


def is_dicom(data: bytes, filename: str = "") -> bool:
    """True for DICOM Part 10 bytes (the `DICM` magic after the 128-byte preamble) or a
    `.dcm` file name (bare datasets without the preamble exist in the wild)."""
    magic_end = _DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC)
    if data[_DICOM_MAGIC_OFFSET:magic_end] == _DICOM_MAGIC:
        return True
    return os.path.splitext(filename)[1].lower() == ".dcm"


def decode_to_gray(data: bytes, filename: str = "") -> np.ndarray:
    """Decode image file bytes to a uint8 gray array of shape (height, width), source size.

    `filename` (optional) only helps recognise DICOM files that lack the preamble.
    Raises ImageRejected with a code of IMAGE_REJECTION_REASONS.
    """
    if not data:
        raise ImageRejected("empty_file", "0 bytes")
    gray = _decode_dicom(data) if is_dicom(data, filename) else _decode_pillow(data)
    if gray.ndim != 2 or gray.size == 0:
        raise ImageRejected("undecodable_image", f"decoded to shape {gray.shape}")
    _check_size(*gray.shape)
    return gray


def _check_size(height: int, width: int) -> None:
    if height * width > MAX_IMAGE_PIXELS:
        raise ImageRejected(
            "decompression_bomb",
            f"{width}x{height} = {width * height} pixels, more than {MAX_IMAGE_PIXELS}",
        )
    if min(height, width) < MIN_IMAGE_SIDE:
        raise ImageRejected(
            "too_small", f"{width}x{height} pixels, under {MIN_IMAGE_SIDE} on a side"
        )


def _decode_pillow(data: bytes) -> np.ndarray:
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image", f"{len(data)} bytes, no known image header") from None
    except Image.DecompressionBombError as error:
        raise ImageRejected("decompression_bomb", str(error)) from None
    except Exception as error:  # noqa: BLE001 - any header failure is a bad file, not a bug
        raise ImageRejected("undecodable_image", f"{type(error).__name__}: {error}") from None
    if image.format not in SUPPORTED_PILLOW_FORMATS:
        raise ImageRejected(
            "unsupported_format", f"{image.format} image; PNG, JPEG or DICOM expected"
        )
    # Before load(): the header's size alone decides, so a bomb never allocates its pixels.
    _check_size(image.height, image.width)
    try:
        image.load()
        return _to_gray(image)
    except Image.DecompressionBombError as error:
        raise ImageRejected("decompression_bomb", str(error)) from None
    except Exception as error:  # noqa: BLE001 - Pillow raises OSError/SyntaxError/ValueError/zlib.error
        message = f"{type(error).__name__}: {error}"
        truncated = "truncated" in message or isinstance(error, EOFError) or "EOF" in message
        raise ImageRejected(
            "truncated_image" if truncated else "undecodable_image", message
        ) from None


def _to_gray(image: Image.Image) -> np.ndarray:
    """Any Pillow image -> uint8 array (H, W)."""
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _scale_to_uint8(np.asarray(image).astype(np.float64))
    if mode == "LA":
        return np.asarray(image.getchannel("L"), dtype=np.uint8)
    if mode == "P":
        # Palette -> RGB(A) colours first; transparency, if any, is dropped below.
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "RGBA":
        image = image.convert("RGB")
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _scale_to_uint8(
    pixels: np.ndarray, low: float | None = None, high: float | None = None
) -> np.ndarray:
    """float pixels -> uint8: `low`..`high` (default: the pixels' own min..max) -> 0..255."""
    low = float(pixels.min()) if low is None else low
    high = float(pixels.max()) if high is None else high
    if high <= low:
        return np.zeros(pixels.shape, dtype=np.uint8)
    scaled = np.round((pixels - low) * (255.0 / (high - low)))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _read_dicom(data: bytes, stop_before_pixels: bool = False):
    import pydicom  # here: only DICOM inputs pay for the import

    try:
        return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=stop_before_pixels)
    except Exception as error:  # noqa: BLE001 - pydicom raises many types for a broken file
        raise ImageRejected(
            "undecodable_image", f"DICOM: {type(error).__name__}: {error}"
        ) from None


def _decode_dicom(data: bytes) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    dataset = _read_dicom(data)
    if "PixelData" not in dataset:
        raise ImageRejected("unsupported_dicom", "DICOM without Pixel Data (7FE0,0010)")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageRejected(
            "unsupported_dicom", f"multi-frame DICOM ({frames} frames); one image expected"
        )
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageRejected(
            "unsupported_dicom",
            f"colour DICOM (PhotometricInterpretation {photometric}, "
            f"{samples} samples per pixel); MONOCHROME1/2 expected",
        )
    _check_size(int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0))
    _check_transfer_syntax(dataset)
    try:
        stored = dataset.pixel_array
        values = apply_modality_lut(stored, dataset)
        low, high = _modality_range(dataset)
        if dataset.get("VOILUTSequence") or (
            "WindowCenter" in dataset and "WindowWidth" in dataset
        ):
            low, high = _voi_output_range(dataset, low, high)
            values = apply_voi_lut(values, dataset, index=0)
    except ImageRejected:
        raise
    except Exception as error:  # noqa: BLE001 - pydicom/NumPy raise many types for bad pixels
        raise ImageRejected(
            "undecodable_image", f"DICOM pixels: {type(error).__name__}: {error}"
        ) from None
    gray = _scale_to_uint8(np.asarray(values, dtype=np.float64), low, high)
    if photometric == "MONOCHROME1":
        gray = 255 - gray
    return gray


def _check_transfer_syntax(dataset) -> None:
    """Compressed pixel data whose decoder is not installed -> one line naming the syntax."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    file_meta = getattr(dataset, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if uid is None or not UID(uid).is_compressed:
        return
    uid = UID(uid)
    try:
        available = get_decoder(uid).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise ImageRejected(
            "unsupported_dicom",
            f"transfer syntax {uid} ({uid.name}) cannot be decoded by the installed "
            "handlers (pylibjpeg or GDCM would add it)",
        )


def _modality_range(dataset) -> tuple[float, float]:
    """The full range of the values after the Modality LUT / rescale (from Bits Stored,
    Pixel Representation, slope and intercept) — not the pixels' own min..max, so one
    study's images keep their relative brightness."""
    if dataset.get("ModalityLUTSequence"):
        bits = int(dataset.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    bits_stored = int(dataset.get("BitsStored", dataset.get("BitsAllocated", 8)))
    if int(dataset.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2**bits_stored - 1)
    else:
        low, high = float(-(2 ** (bits_stored - 1))), float(2 ** (bits_stored - 1) - 1)
    slope = dataset.get("RescaleSlope")
    intercept = dataset.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = (float(v) * float(slope) + float(intercept) for v in (low, high))
    return min(low, high), max(low, high)


def _voi_output_range(dataset, low: float, high: float) -> tuple[float, float]:
    """apply_voi_lut's output range: a VOI LUT's entries, or (windowing) the modality range."""
    if dataset.get("VOILUTSequence"):
        descriptor = dataset.VOILUTSequence[0].get("LUTDescriptor")
        if descriptor is not None:
            return 0.0, float(2 ** int(descriptor[2]) - 1)
    return low, high


def _pad_geometry(height: int, width: int, image_size: int) -> Placement:
    """The long side -> image_size, aspect kept, centred; the rounding resize_square uses."""
    scale = image_size / max(height, width)
    new_width = max(1, min(image_size, round(width * scale)))
    new_height = max(1, min(image_size, round(height * scale)))
    return Placement(
        top=(image_size - new_height) // 2,
        left=(image_size - new_width) // 2,
        height=new_height,
        width=new_width,
    )


def _check_resize(resize: str) -> None:
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")


def square_placement(height: int, width: int, image_size: int, resize: str = "pad") -> Placement:
    """Where a height×width source image lands inside the image_size² model input (e.g. to
    crop a Grad-CAM map back to the image): the whole square for "stretch"."""
    _check_resize(resize)
    if resize == "stretch":
        return Placement(0, 0, image_size, image_size)
    return _pad_geometry(height, width, image_size)


def resize_square(gray: np.ndarray, image_size: int, resize: str = "pad") -> np.ndarray:
    """Resize a uint8 (H, W) array to (image_size, image_size), bilinear with antialiasing.

    resize="pad": long side -> image_size, aspect kept, centred on black (0).
    resize="stretch": both sides -> image_size (aspect not kept).
    """
    _check_resize(resize)
    image = Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8))
    if resize == "stretch":
        return np.asarray(image.resize((image_size, image_size), Image.Resampling.BILINEAR))
    place = _pad_geometry(*gray.shape, image_size)
    resized = image.resize((place.width, place.height), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (image_size, image_size), 0)
    canvas.paste(resized, (place.left, place.top))
    return np.asarray(canvas)


def to_model_input(
    data: bytes, image_size: int, resize: str = "pad", filename: str = ""
) -> np.ndarray:
    """Source file bytes -> uint8 (image_size, image_size): exactly the pixels the Beam job
    stores for the same file. Raises ImageRejected for unusable bytes."""
    return resize_square(decode_to_gray(data, filename), image_size, resize)


def dicom_identifiers(data: bytes, filename: str = "") -> dict | None:
    """{"study": StudyInstanceUID, "patient": PatientID} of DICOM bytes (a value is None when
    the tag is absent); None when the bytes are not DICOM or cannot be parsed."""
    if not data or not is_dicom(data, filename):
        return None
    try:
        dataset = _read_dicom(data, stop_before_pixels=True)
    except ImageRejected:
        return None

    def text(keyword: str) -> str | None:
        value = str(dataset.get(keyword) or "").strip()
        return value or None

    return {"study": text("StudyInstanceUID"), "patient": text("PatientID")}
