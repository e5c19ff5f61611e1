"""Per-image work: decode any MURA PNG to 8-bit gray, resize to a square, encode.

Pure functions of bytes and arrays (Pillow + NumPy, no TensorFlow). Undecodable input
raises `ImageRejected` with a reason code of `beam_preprocess.index.REASONS`.

Decisions:
- Colour (RGB, palette, CMYK, ...) -> gray with Pillow's ITU-R 601 luma.
- Alpha (RGBA, LA, palette transparency) is dropped, not composited: the radiograph is in
  the colour channels, MURA's RGBA files are opaque, and compositing over black would
  darken any semi-transparent area arbitrarily. (The reference notebook, decoding with
  3 channels, also dropped it.)
- 16-bit and 32-bit images are scaled to 0..255 by their real min..max range (a 12-bit
  X-ray stored in 16 bits would otherwise come out almost black).
- 1-bit images become 0/255.
"""

from __future__ import annotations

import hashlib
import io
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

#: Resize modes: "pad" keeps the aspect ratio and pads with black (0), centred;
#: "stretch" squashes to a square like the reference notebook.
RESIZE_MODES: tuple[str, ...] = ("pad", "stretch")

#: JPEG quality for --encoding jpeg.
JPEG_QUALITY = 95

# Truncated files must be rejected, never silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageRejected(Exception):
    """The bytes are not a usable image; `reason` is a code of index.REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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


def _to_gray(image: Image.Image) -> np.ndarray:
    """Any Pillow image -> uint8 array (H, W)."""
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        pixels = np.asarray(image).astype(np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        if high <= low:
            return np.zeros(pixels.shape, dtype=np.uint8)
        return np.round((pixels - low) * (255.0 / (high - low))).astype(np.uint8)
    if mode == "LA":
        return np.asarray(image.getchannel("L"), dtype=np.uint8)
    if mode == "P":
        # Palette -> RGB(A) colours first; transparency, if any, is dropped below.
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode == "RGBA":
        image = image.convert("RGB")
    return np.asarray(image.convert("L"), dtype=np.uint8)


def decode_to_gray(data: bytes) -> np.ndarray:
    """Decode image file bytes to a uint8 gray array of shape (height, width).

    Raises ImageRejected("empty_file" | "not_an_image" | "truncated_image" |
    "undecodable_image", detail).
    """
    if not data:
        raise ImageRejected("empty_file", "0 bytes")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected("not_an_image", f"{len(data)} bytes, no known image header") from None
    except Exception as error:  # noqa: BLE001 - any header failure is a bad file, not a bug
        raise ImageRejected("undecodable_image", f"{type(error).__name__}: {error}") from None
    try:
        image.load()
        gray = _to_gray(image)
    except Exception as error:  # noqa: BLE001 - Pillow raises OSError/SyntaxError/ValueError/zlib.error
        message = f"{type(error).__name__}: {error}"
        truncated = "truncated" in message or isinstance(error, EOFError) or "EOF" in message
        raise ImageRejected(
            "truncated_image" if truncated else "undecodable_image", message
        ) from None
    if gray.ndim != 2 or gray.size == 0:
        raise ImageRejected("undecodable_image", f"decoded to shape {gray.shape}")
    return gray


def resize_square(gray: np.ndarray, image_size: int, resize: str = "pad") -> np.ndarray:
    """Resize a uint8 (H, W) array to (image_size, image_size), bilinear with antialiasing.

    resize="pad": long side -> image_size, aspect kept, centred on black (0).
    resize="stretch": both sides -> image_size (aspect not kept).
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    image = Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8))
    if resize == "stretch":
        return np.asarray(image.resize((image_size, image_size), Image.Resampling.BILINEAR))
    height, width = gray.shape
    scale = image_size / max(height, width)
    new_width = max(1, min(image_size, round(width * scale)))
    new_height = max(1, min(image_size, round(height * scale)))
    resized = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    canvas = Image.new("L", (image_size, image_size), 0)
    canvas.paste(resized, ((image_size - new_width) // 2, (image_size - new_height) // 2))
    return np.asarray(canvas)


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
    square = resize_square(gray, image_size, resize)
    return ProcessedImage(
        encoded=encode(square, encoding),
        height=image_size,
        width=image_size,
        original_height=int(gray.shape[0]),
        original_width=int(gray.shape[1]),
        sha256=sha256_hex(data),
    )
