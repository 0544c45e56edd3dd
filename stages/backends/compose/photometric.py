"""Photometric matching: the pasted concept takes the scene's brightness and contrast, never
its colour.

A personalised model learns a concept's identity from its pixels, and identity lives in
colour: a grey dog pulled toward the lawn's mean colour teaches a greenish dog. So only
lightness moves. In CIELAB, the object's L (alpha-weighted mean and spread, measured once per
cut-out) is moved part of the way toward the L of the background around it (its box grown by
half its size each way, on the canvas as composed so far), by at most 12 L units, and its
spread (contrast) is scaled within x0.85-x1.18; a* and b* of every pixel are kept exactly,
so hue and chroma stay the cut-out's up to 8-bit rounding. No white balance is estimated: a
grey-world estimate on a garden reads the grass as the illuminant.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

CONTRAST_RANGE = (0.85, 1.18)  # the most the object's lightness spread is scaled, either way
MAX_SHIFT = 12.0  # the most its mean lightness moves (CIELAB L, 0-100): the background's brightness is
#                   its own albedo as much as the light's, so a dark pot on pale gravel stays a dark pot
SURROUNDING = 0.5  # the background region: the box grown by this share of its size on each side


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (L 0-100, a*, b*) of 8-bit RGB pixels (OpenCV, D65, float32)."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)


def lightness_stats(rgba: Image.Image) -> tuple[float, float]:
    """Alpha-weighted mean and standard deviation of an RGBA image's CIELAB lightness."""
    pixels = np.asarray(rgba.convert("RGBA"))
    weights = pixels[..., 3].astype(np.float64)
    lightness = _lab(pixels[..., :3])[..., 0].astype(np.float64)
    total = max(weights.sum(), 1.0)
    mean = float((lightness * weights).sum() / total)
    spread = float(np.sqrt((((lightness - mean) ** 2) * weights).sum() / total))
    return mean, spread


def surroundings(canvas: Image.Image, box: list[int]) -> tuple[float, float]:
    """Mean and spread of the canvas's lightness around a box (grown by `SURROUNDING` of its size
    on each side, clipped to the canvas; read on a 4x-reduced copy)."""
    grow_x, grow_y = round(box[2] * SURROUNDING), round(box[3] * SURROUNDING)
    region = (max(0, box[0] - grow_x), max(0, box[1] - grow_y),
              min(canvas.width, box[0] + box[2] + grow_x), min(canvas.height, box[1] + box[3] + grow_y))
    if region[0] >= region[2] or region[1] >= region[3]:
        region = (0, 0, canvas.width, canvas.height)
    patch = canvas.crop(region)
    lightness = _lab(np.asarray(patch.reduce(4) if min(patch.size) >= 8 else patch))[..., 0]
    return float(lightness.mean()), float(lightness.std())


def match_lightness(piece: Image.Image, own: tuple[float, float], scene: tuple[float, float],
                    strength: float) -> Image.Image:
    """The RGBA `piece` with its lightness mean moved `strength` of the way from `own` to
    `scene`'s (at most `MAX_SHIFT`) and its spread scaled by (scene spread / own spread) **
    strength (within `CONTRAST_RANGE`); a* and b* and the alpha channel kept."""
    pixels = np.asarray(piece)
    lab = _lab(pixels[..., :3])
    (own_mean, own_spread), (scene_mean, scene_spread) = own, scene
    gain = float(np.clip((max(scene_spread, 1e-3) / max(own_spread, 1e-3)) ** strength, *CONTRAST_RANGE))
    target = own_mean + float(np.clip(strength * (scene_mean - own_mean), -MAX_SHIFT, MAX_SHIFT))
    lab[..., 0] = np.clip(target + (lab[..., 0] - own_mean) * gain, 0, 100)
    rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    out = pixels.copy()
    out[..., :3] = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGBA")
