"""Reading photos with errors that name the file, and deterministic encoding."""

from __future__ import annotations

import io
import struct
import zlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from compiler.errors import ItemError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_image(path: Path, reference: str) -> Image.Image:
    """Decode a photo fully (EXIF orientation applied); a bad file raises ItemError naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise ItemError(f"{reference}: file not found ({path})") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as error:
        raise ItemError(f"{reference}: not a readable image ({type(error).__name__}: {error})") from None


def encode_png(image: Image.Image, level: int = 1) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def encode_mask(mask: Image.Image) -> bytes:
    """An 8-bit grayscale PNG with no row filter, deflated with zlib's run-length strategy.

    Masks are long constant runs: Pillow's per-row adaptive filtering gains nothing on them
    and costs most of the encode (1024x1024, measured here: 3.6 ms vs 4.0 ms for a concept
    mask, 4.2 ms vs 7.3 ms for a union mask). Any PNG reader decodes the result.
    """
    pixels = np.asarray(mask.convert("L") if mask.mode != "L" else mask)
    height, width = pixels.shape
    rows = np.zeros((height, width + 1), np.uint8)  # each row: filter type 0, then its pixels
    rows[:, 1:] = pixels
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    data = deflate.compress(rows.tobytes()) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_image(image: Image.Image, image_format: str, quality: int) -> bytes:
    """The composed image as `jpg` (quality), `png` (lossless) or `webp` (quality)."""
    if image_format == "png":
        return encode_png(image)
    if image_format == "webp":
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", quality=quality, method=4)
        return buffer.getvalue()
    return encode_jpeg(image, quality)
