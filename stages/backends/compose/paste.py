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
from PIL import Image, ImageChops, ImageFilter, ImageOps

from compiler.errors import ItemError

VERSION = "1"
IGNORES = ("phrase",)  # key parts it does not read: it pastes onto the photo
PREPARED_CACHE = 64  # cut-outs whose size levels and mean colour a worker keeps


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


class Backend:
    def __init__(self, params: Params):
        self.params = params
        self._prepared: dict[int, tuple[Image.Image, list[Image.Image], np.ndarray]] = {}

    def compose_batch(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any] | ItemError]:
        """Each job: `boxes`, `cutouts`, `background` (canvas-sized RGB, or None), `phrase`, `seed`."""
        return [ItemError(f"background '{job['phrase']}' has no photo; the paste composer needs one "
                          f"(or use compose: sdxl-inpaint, which generates it)") if job["background"] is None
                else self.compose(job["boxes"], job["cutouts"], job["background"]) for job in jobs]

    def compose(self, boxes: list[list[int]], cutouts: list[Image.Image], background: Image.Image) -> dict[str, Any]:
        """Paste `cutouts` (RGBA, paste order) into `boxes` on `background` (canvas-sized RGB).

        Returns `image` (RGB), `mask` (L, union), `masks` (L per object: its alpha where no
        later paste covers it) and `stats` per object: `full`, `inside` and `visible` alpha
        area in pixels. Works in 8 bits with Pillow, on the boxes only.
        """
        canvas = background.convert("RGB")
        union = Image.new("L", canvas.size, 0)
        visible: list[Image.Image] = []
        stats, regions = [], []
        for box, cutout in zip(boxes, cutouts):
            levels, mean_colour = self._prepare(cutout)
            piece = self._resize(levels, box[2], box[3])
            alpha = self._feather(piece.getchannel("A"))
            region = (box[0], box[1], box[0] + box[2], box[1] + box[3])
            canvas.paste(self._harmonize(piece, mean_colour, canvas.crop(region)), region[:2], alpha)
            hidden = ImageOps.invert(alpha)
            for earlier in visible:
                earlier.paste(ImageChops.multiply(earlier.crop(region), hidden), region[:2])
            union.paste(ImageChops.screen(union.crop(region), alpha), region[:2])
            mine = Image.new("L", canvas.size, 0)
            mine.paste(alpha, region[:2])
            visible.append(mine)
            stats.append({"full": _alpha_area(alpha), "inside": _alpha_area(mine, region)})
            regions.append(region)
        for stat, mask, region in zip(stats, visible, regions):
            stat["visible"] = _alpha_area(mask, region)
        return {"image": canvas, "mask": union, "masks": visible,
                "stats": [{k: round(v, 1) for k, v in s.items()} for s in stats]}

    def _prepare(self, cutout: Image.Image) -> tuple[list[Image.Image], np.ndarray]:
        """Half-size levels of a cut-out and its alpha-weighted mean colour, computed once per
        cut-out and worker (cut-outs are reused across many images)."""
        if id(cutout) not in self._prepared:
            if len(self._prepared) >= PREPARED_CACHE:
                self._prepared.clear()
            levels = [cutout if cutout.mode == "RGBA" else cutout.convert("RGBA")]
            while min(levels[-1].size) >= 128:
                levels.append(levels[-1].reduce(2))
            smallest = np.asarray(levels[-1], dtype=np.float64)
            weights = smallest[..., 3]
            mean = (smallest[..., :3] * weights[..., None]).sum(axis=(0, 1)) / max(weights.sum(), 1.0)
            self._prepared[id(cutout)] = (cutout, levels, mean)  # holding `cutout` keeps its id unique
        return self._prepared[id(cutout)][1:]

    def _resize(self, levels: list[Image.Image], width: int, height: int) -> Image.Image:
        """Area averaging from the smallest level still larger than the box, bicubic when enlarging."""
        source = next((level for level in reversed(levels) if level.width >= width and level.height >= height), None)
        if source is None:
            return levels[0].resize((width, height), Image.Resampling.BICUBIC)
        return source.resize((width, height), Image.Resampling.BOX)

    def _feather(self, alpha: Image.Image) -> Image.Image:
        """Box-blur the alpha as if the box were surrounded by transparency, so a cut-out that
        touches its box edge (a tight cut-out always does) gets a soft edge too."""
        radius = self.params.feather // 2
        if radius == 0:
            return alpha
        padded = ImageOps.expand(alpha, border=radius, fill=0).filter(ImageFilter.BoxBlur(radius))
        return padded.crop((radius, radius, radius + alpha.width, radius + alpha.height))

    def _harmonize(self, piece: Image.Image, own: np.ndarray, under: Image.Image) -> Image.Image:
        """Shift the cut-out's mean colour `own` part of the way toward the mean of the
        background beneath it (taken on a 4x-reduced copy), as a lookup table on RGB."""
        if self.params.harmonize == 0:
            return piece
        target = np.asarray(under.reduce(4), dtype=np.float64).reshape(-1, 3).mean(axis=0)
        shift = [int(v) for v in np.round(self.params.harmonize * (target - own))] + [0]
        return piece.point([min(255, max(0, value + offset)) for offset in shift for value in range(256)])


def _alpha_area(mask: Image.Image, region: tuple[int, int, int, int] | None = None) -> float:
    """Alpha mass in pixels (a fully opaque pixel counts 1), optionally within `region`."""
    if region is not None:
        mask = mask.crop(region)
    return float(np.asarray(mask, dtype=np.uint32).sum() / 255)
