"""How images reach the metric models: alpha flattened one way, crops kept inside the image."""

from __future__ import annotations

from PIL import Image

FLATTEN_GREY = (128, 128, 128)


def flatten_alpha(image: Image.Image) -> Image.Image:
    """RGB; an image with transparency is composited on neutral grey, so a reference photo,
    a cut-out and a crop of the same pixels give the same input (transparent parts carry no
    background, and not whatever colour happens to sit under alpha 0)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*FLATTEN_GREY, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def crop_box(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """A box rounded to pixels and clamped inside a width x height image, at least 1x1,
    so a detection at (or past) an edge still crops image pixels."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0 = min(max(0, x0), width - 1), min(max(0, y0), height - 1)
    x1, y1 = min(max(x0 + 1, x1), width), min(max(y0 + 1, y1), height)
    return x0, y0, x1, y1


def crop(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    return image.crop(crop_box(box, image.width, image.height))
