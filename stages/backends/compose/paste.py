"""Copy-paste composition: cut-outs pasted on a real background photo with a soft alpha.

The embedded composer (no diffusion): the background photo is centre-cropped and resized to
the canvas, each cut-out is resized into its box, its alpha softened with the paper's 5x5 box
blur and its colours pulled slightly toward the background under it. Besides the image it
returns the union mask and each concept's visible (occlusion-aware) soft mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

VERSION = "1"


@dataclass
class Params:
    feather: int = 5  # box-blur kernel on the alpha (the paper's 5x5); 1 = hard edge
    harmonize: float = 0.25  # 0 = paste as is; 1 = match the background's mean colour

    def __post_init__(self) -> None:
        if self.feather < 1 or self.feather % 2 == 0:
            raise ValueError(f"feather {self.feather}: an odd kernel size >= 1")
        if not 0 <= self.harmonize <= 1:
            raise ValueError(f"harmonize {self.harmonize}: valid 0-1")


def fit_background(photo: Image.Image, width: int, height: int) -> Image.Image:
    """Centre-crop `photo` to the canvas aspect ratio and resize it to the canvas."""
    photo = photo.convert("RGB")
    scale = max(width / photo.width, height / photo.height)
    crop_w, crop_h = round(width / scale), round(height / scale)
    left, top = (photo.width - crop_w) // 2, (photo.height - crop_h) // 2
    return photo.resize((width, height), Image.Resampling.LANCZOS, box=(left, top, left + crop_w, top + crop_h))


def _clip(box: list[int], width: int, height: int) -> tuple[int, int, int, int] | None:
    """The part of `box` inside the canvas as (x0, y0, x1, y1), or None."""
    x0, y0 = max(0, box[0]), max(0, box[1])
    x1, y1 = min(width, box[0] + box[2]), min(height, box[1] + box[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


class Backend:
    def __init__(self, params: Params):
        self.params = params

    def compose(self, boxes: list[list[int]], cutouts: list[Image.Image], background: Image.Image) -> dict[str, Any]:
        """Paste `cutouts` (RGBA, paste order) into `boxes` on `background` (canvas-sized RGB).

        Returns `image` (RGB), `mask` (L, union), `masks` (L per object: visible alpha) and
        `stats` per object: `full`, `inside` and `visible` alpha area in pixels.
        """
        width, height = background.size
        canvas = np.array(background, dtype=np.float32)
        visible = [np.zeros((height, width), dtype=np.float32) for _ in boxes]
        stats = []
        for index, (box, cutout) in enumerate(zip(boxes, cutouts)):
            piece = cutout.convert("RGBA").resize((box[2], box[3]), Image.Resampling.LANCZOS)
            alpha_image = piece.getchannel("A")
            if self.params.feather > 1:
                alpha_image = alpha_image.filter(ImageFilter.BoxBlur(self.params.feather // 2))
            alpha_full = np.asarray(alpha_image, dtype=np.float32) / 255.0
            region = _clip(box, width, height)
            inside = 0.0
            if region is not None:
                x0, y0, x1, y1 = region
                sx, sy = x0 - box[0], y0 - box[1]
                alpha = alpha_full[sy:sy + y1 - y0, sx:sx + x1 - x0]
                rgb = np.asarray(piece.convert("RGB"), dtype=np.float32)[sy:sy + y1 - y0, sx:sx + x1 - x0]
                under = canvas[y0:y1, x0:x1]
                rgb = self._harmonize(rgb, alpha, under)
                a = alpha[..., None]
                canvas[y0:y1, x0:x1] = rgb * a + under * (1 - a)
                for earlier in visible[:index]:
                    earlier[y0:y1, x0:x1] *= 1 - alpha
                visible[index][y0:y1, x0:x1] = alpha
                inside = float(alpha.sum())
            stats.append({"full": float(alpha_full.sum()), "inside": inside})
        union = np.zeros((height, width), dtype=np.float32)
        for mask in visible:
            union += mask
        for stat, mask in zip(stats, visible):
            stat["visible"] = float(mask.sum())
        return {
            "image": Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8)),
            "mask": _to_l(union),
            "masks": [_to_l(mask) for mask in visible],
            "stats": [{k: round(v, 1) for k, v in s.items()} for s in stats],
        }

    def _harmonize(self, rgb: np.ndarray, alpha: np.ndarray, under: np.ndarray) -> np.ndarray:
        """Shift the cut-out's mean colour part of the way toward the background beneath it."""
        weight = alpha.sum()
        if self.params.harmonize == 0 or weight < 1:
            return rgb
        own = (rgb * alpha[..., None]).sum(axis=(0, 1)) / weight
        shift = self.params.harmonize * (under.reshape(-1, 3).mean(axis=0) - own)
        return np.clip(rgb + shift, 0, 255)


def _to_l(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(mask * 255 + 0.5, 0, 255).astype(np.uint8))
