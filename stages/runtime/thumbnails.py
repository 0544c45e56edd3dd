"""Small images for pages people look at (the dataset card, the diff page) and DVC image plots.

Thumbnails are JPEGs and figures PNGs, inlined as base64 data URIs, so a page opens anywhere
(a browser, a CI artifact, an e-mail) without the dataset beside it. Encoding is byte-stable:
the same image gives the same URI.
"""

from __future__ import annotations

import base64
import io

from PIL import Image

THUMBNAIL = 256  # longer side, pixels


def shrink(data: bytes, side: int = THUMBNAIL) -> Image.Image:
    """The encoded image `data` as RGB, at most `side` pixels on its longer side. A JPEG is
    decoded at a reduced scale no smaller than twice that (what `Image.thumbnail` does on an
    unconverted image), so a 1024-pixel image costs a fraction of a full decode."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (2 * side, 2 * side))
    image = image.convert("RGB")
    image.thumbnail((side, side))
    return image


def jpeg_uri(image: Image.Image, quality: int = 85) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=9)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail(data: bytes, side: int = THUMBNAIL) -> str:
    """A data URI of the image as a JPEG at most `side` pixels on its longer side."""
    return jpeg_uri(shrink(data, side))
