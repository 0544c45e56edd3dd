"""Shadows under pasted objects: a soft contact shadow, and a shadow cast along the scene's light.

Both darken the canvas multiplicatively before the object is pasted over them, and touch only
their own region, so the rest of the canvas keeps its bytes. The cast shadow is the object's
own silhouette laid on its ground plane: one affine map anchored at the contact line (a pixel
`h` rows above the foot lands where the light's shadow vector for height `h` points: a shear
and a vertical squash, or a flip when the light is behind the scene), then blurred and faded
with the distance from the contact: sharp and dark at the feet, softer and lighter far away,
more so under a soft light (stages.scene.Light).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

from stages.scene import Light

MIN_DEPTH = 0.15  # a body has depth: its cast shadow spans at least this share of its height vertically
FADE = 0.5  # how much lighter a shadow's far end is than its foot
SHARP = 0.004  # blur at the feet, a share of the object's height (x (1 + 4 softness))
PENUMBRA = (0.01, 0.06)  # blur at the far end, a share of the shadow's length: hard sun, + x softness
OVERCAST = 0.6  # the most a fully soft light lightens the cast shadow


def contact_shadow(canvas: Image.Image, box: list[int], alpha: Image.Image, darkness: float,
                   flatness: float) -> Image.Image:
    """Darken a soft ellipse under the object's footprint: as wide as its alpha's lowest tenth,
    `flatness` times as high, blurred by a quarter of its width."""
    rows = np.asarray(alpha)[-max(1, alpha.height // 10):]
    columns = np.nonzero(rows.max(axis=0) > 127)[0]
    if columns.size == 0:
        return canvas
    width = max(4.0, float(columns[-1] - columns[0] + 1) * 1.15)
    centre_x, foot_y = box[0] + float(columns[0] + columns[-1] + 1) / 2, box[1] + box[3]
    height, blur = max(2.0, width * flatness), width / 4
    pad = int(blur * 2 + 2)
    left, top = int(centre_x - width / 2) - pad, int(foot_y - height * 0.6) - pad
    size = (int(width) + 2 * pad, int(height) + 2 * pad)
    ellipse = Image.new("L", size, 0)
    ImageDraw.Draw(ellipse).ellipse((pad, pad, pad + width, pad + height), fill=round(255 * darkness))
    ellipse = ellipse.filter(ImageFilter.GaussianBlur(blur / 2))
    return _darken(canvas, ellipse, (left, top))


def cast_shadow(canvas: Image.Image, box: list[int], alpha: Image.Image, light: Light, darkness: float) -> Image.Image:
    """Darken the canvas where the object's silhouette (`alpha`, box-sized) falls along `light`,
    anchored at its lowest opaque row; `darkness` at the feet."""
    opaque = np.nonzero(np.asarray(alpha).max(axis=1) > 127)[0]
    if opaque.size == 0 or darkness == 0 or light.length == 0:
        return canvas
    foot = box[1] + int(opaque[-1]) + 1  # the contact line, canvas row
    tall = float(opaque[-1] - opaque[0] + 1)
    dx, dy = light.shadow_of(1.0)
    depth = max(abs(dy), MIN_DEPTH) * (1.0 if dy > 0 else -1.0)  # rows of shadow per row of height
    length = tall * math.hypot(dx, depth)
    sharp = max(1.0, SHARP * tall * (1 + 4 * light.softness))
    soft = max(sharp + 1, (PENUMBRA[0] + PENUMBRA[1] * light.softness) * length)  # grows with the distance
    pad = int(math.ceil(2 * soft)) + 2
    corners = [(box[0] + x + dx * (foot - y), foot + depth * (foot - y))
               for x in (0, box[2]) for y in (box[1], foot)]
    left, top = int(min(x for x, _ in corners)) - pad, int(min(y for _, y in corners)) - pad
    size = (int(max(x for x, _ in corners)) + pad - left, int(max(y for _, y in corners)) + pad - top)
    # output (u, v) in the region -> input (x, y) in the box: the inverse of
    # X' = X + dx (foot - Y), Y' = foot + depth (foot - Y)
    coefficients = (1.0, -dx / depth, left - box[0] - dx * (top - foot) / depth,
                    0.0, -1.0 / depth, foot - box[1] - (top - foot) / depth)
    projected = alpha.transform(size, Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR)
    near, far = (np.asarray(projected.filter(ImageFilter.GaussianBlur(radius)), np.float32) for radius in (sharp, soft))
    rows = np.arange(size[1], dtype=np.float32)[:, None] + top
    distance = np.clip((rows - foot) / (depth * tall), 0, 1)  # 0 at the contact, 1 at the shadow of the top
    shade = (near * (1 - distance) + far * distance) * (1 - FADE * distance)
    shade *= darkness * (1 - OVERCAST * light.softness)
    return _darken(canvas, Image.fromarray(np.clip(np.rint(shade), 0, 255).astype(np.uint8), "L"), (left, top))


def _darken(canvas: Image.Image, shade: Image.Image, at: tuple[int, int]) -> Image.Image:
    """Multiply the canvas by (1 - shade / 255) where `shade` (L) lies with its corner at `at`."""
    left, top = at
    region = (max(0, left), max(0, top), min(canvas.width, left + shade.width), min(canvas.height, top + shade.height))
    if region[0] >= region[2] or region[1] >= region[3]:
        return canvas
    light = ImageOps.invert(shade.crop((region[0] - left, region[1] - top, region[2] - left, region[3] - top)))
    canvas.paste(ImageChops.multiply(canvas.crop(region), light.convert("RGB")), region[:2])
    return canvas
