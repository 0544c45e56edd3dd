"""Reading photos with errors that name the file, and deterministic encoding."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps

from compiler.errors import ItemError


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


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image
