"""Per-image work: source bytes -> the model's S×S gray array (bonify.images) -> encoded.

Decoding, gray conversion, resizing and the rejection codes live in `bonify.images`, the one
image path that bonify-predict and the served model share with this job; this module only
encodes the array for a record. Unusable bytes raise `ImageRejected` with a code of
`bonify.images.IMAGE_REJECTION_REASONS` (part of `beam_preprocess.index.REASONS`).
"""

from __future__ import annotations

import hashlib
import io
from typing import NamedTuple

import numpy as np
from PIL import Image

from bonify.images import (  # noqa: F401 - re-exported: the job's names for the image path
    RESIZE_MODES,
    ImageRejected,
    decode_to_gray,
    resize_square,
)

#: JPEG quality for --encoding jpeg.
JPEG_QUALITY = 95


class ProcessedImage(NamedTuple):
    """An image ready to be written."""

    encoded: bytes  # PNG, JPEG or raw uint8 row-major bytes of shape (height, width)
    height: int  # stored height in pixels (= image_size)
    width: int  # stored width in pixels (= image_size)
    original_height: int  # source height in pixels
    original_width: int  # source width in pixels
    sha256: str  # hex sha256 of the source file bytes


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def encode(gray: np.ndarray, encoding: str) -> bytes:
    """Encode a uint8 (H, W) array as 1-channel "png", "jpeg" (quality 95) or "raw" bytes."""
    if encoding == "raw":
        return np.ascontiguousarray(gray, dtype=np.uint8).tobytes()
    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8))
    if encoding == "png":
        image.save(buffer, format="PNG")
    elif encoding == "jpeg":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        raise ValueError(f"unknown encoding {encoding!r}")
    return buffer.getvalue()


def process_image(data: bytes, image_size: int, resize: str, encoding: str) -> ProcessedImage:
    """Source file bytes -> ProcessedImage. Raises ImageRejected for unusable bytes."""
    gray = decode_to_gray(data)
    square = resize_square(gray, image_size, resize)  # = bonify.images.to_model_input
    return ProcessedImage(
        encoded=encode(square, encoding),
        height=image_size,
        width=image_size,
        original_height=int(gray.shape[0]),
        original_width=int(gray.shape[1]),
        sha256=sha256_hex(data),
    )
