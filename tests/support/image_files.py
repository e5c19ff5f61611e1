"""Source image files for tests of the image path: smooth pixels, PNG bytes, a PNG bomb."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def smooth(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 (H, W) with structure in both directions and mild noise, so resize rounding and
    placement errors show (a flat image would hide them)."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, height)[:, None]
    cols = np.linspace(0, 1, width)[None, :]
    base = 128 + 100 * np.sin(6 * rows + 3 * cols) * np.cos(5 * cols)
    return np.clip(base + rng.normal(0, 12, (height, width)), 0, 255).astype(np.uint8)


def png_bytes(image: Image.Image | np.ndarray, **save_options) -> bytes:
    """PNG file bytes of a Pillow image or a NumPy array (mode from its dtype/shape)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save_options)
    return buffer.getvalue()


def encoded_bytes(image: Image.Image, format: str, **save_options) -> bytes:
    """File bytes of a Pillow image in any format Pillow writes (JPEG, GIF, TIFF, ...)."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **save_options)
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A small PNG whose header declares width × height 8-bit gray pixels, with one row of
    data: the shape of a decompression bomb (decoding it would allocate the declared size)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        checksum = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", checksum)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    one_row = zlib.compress(b"\x00" * (width + 1))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", one_row)
        + chunk(b"IEND", b"")
    )
