"""Copy-paste composition: cut-outs pasted on a real background photo with a soft alpha.

The embedded composer (no diffusion): the background photo is cropped and resized to the
canvas; each cut-out's edge colours are decontaminated (foreground colour estimation, so no
rim of its old background survives), it is resized into its box, its alpha softened with the
paper's 5x5 box blur and its lightness moved part of the way toward the background's around
it, its chroma kept (photometric.py). An object standing on something casts a soft contact
shadow first, and a shadow along the scene's light when its template declares one
(shadow.py). Poisson blending (OpenCV) is an option. Besides the image it returns the union
mask and each concept's visible (occlusion-aware) soft mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageChops, ImageFilter, ImageOps

from base.errors import ItemError
from stages.backends.compose.photometric import lightness_stats, match_lightness, surroundings
from stages.backends.compose.occlusion import Occlusion
from stages.backends.compose.shadow import cast_shadow, contact_shadow
from stages.scene import Light, centre_crop, light_of

VERSION = "3"
IGNORES = ("phrase",)  # key parts it does not read: it pastes onto the photo
PREPARED_CACHE = 64  # cut-outs whose size levels and lightness statistics a worker keeps
BLENDS = ("alpha", "poisson")
UNSUPPORTED = (None, "free")  # layout supports under which no shadow falls
POISSON_MARGIN = 3  # pixels of background around an object that Poisson blending solves over


@dataclass
class Params:
    feather: int = 5  # box-blur kernel on the alpha (the paper's 5x5); 1 = hard edge
    harmonize: float = 0.3  # 0 = paste as is; 1 = the object's lightness mean (by at most 12 L) and contrast
    #                         move all the way to the background's around it (chroma never moves: photometric.py)
    decontaminate: bool = True  # re-estimate edge colours (pymatting), so no rim of the old background shows
    shadow: float = 0.45  # contact shadow darkness under objects standing on a scene's support; 0 = off
    shadow_height: float = 0.25  # the shadow ellipse's height / its width (flatter = lower camera)
    cast_shadow: float = 0.6  # darkness at the feet of the shadow cast along a scene template's light; 0 = off
    blend: str = "alpha"  # alpha: soft-alpha paste; poisson: OpenCV seamless cloning (shifts object colours)

    def __post_init__(self) -> None:
        if self.feather < 1 or self.feather % 2 == 0:
            raise ValueError(f"feather {self.feather}: an odd kernel size >= 1")
        if not 0 <= self.harmonize <= 1:
            raise ValueError(f"harmonize {self.harmonize}: valid 0-1")
        if not 0 <= self.cast_shadow <= 1:
            raise ValueError(f"cast_shadow {self.cast_shadow}: valid 0-1")
        if not 0 <= self.shadow <= 1 or not 0 < self.shadow_height <= 1:
            raise ValueError(f"shadow {self.shadow} and shadow_height {self.shadow_height}: valid 0-1 (height > 0)")
        if self.blend not in BLENDS:
            raise ValueError(f"blend '{self.blend}': valid {', '.join(BLENDS)}")


def fit_background(photo: Image.Image, width: int, height: int, crop: Sequence[int] | None = None) -> Image.Image:
    """The photo's region `crop` ([left, top, width, height] in pixels; default: the centred
    region of the canvas's shape) resized to the canvas."""
    photo = photo.convert("RGB")
    left, top, crop_w, crop_h = crop or centre_crop(photo.size, (width, height))
    return photo.resize((width, height), Image.Resampling.LANCZOS, box=(left, top, left + crop_w, top + crop_h))


class Backend:
    def __init__(self, params: Params):
        self.params = params
        self._prepared: dict[int, tuple[Image.Image, list[Image.Image], np.ndarray]] = {}

    def compose_batch(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any] | ItemError]:
        """Each job: `boxes`, `cutouts`, `background` (canvas-sized RGB, or None), `phrase`, `seed`."""
        return [ItemError(f"background '{job['phrase']}' has no photo; the paste composer needs one "
                          f"(or use compose: sdxl-inpaint, which generates it)") if job["background"] is None
                else self.compose(job["boxes"], job["cutouts"], job["background"], job.get("supports"),
                                  light_of(job), occlusion_of(job))
                for job in jobs]

    def compose(self, boxes: list[list[int]], cutouts: list[Image.Image], background: Image.Image,
                supports: list[str | None] | None = None, light: Light | None = None,
                occlusion: Occlusion | None = None) -> dict[str, Any]:
        """Paste `cutouts` (RGBA, paste order) into `boxes` on `background` (canvas-sized RGB);
        objects whose `supports` entry names a support cast a contact shadow, and a shadow along
        the scene's `light` when there is one. `occlusion` draws the scene's occluders back
        over the objects behind them (occlusion.py).

        Returns `image` (RGB), `mask` (L, union), `masks` (L per object: its alpha where no
        later paste covers it) and `stats` per object: `full`, `inside` and `visible` alpha
        area in pixels. Works in 8 bits with Pillow, on the boxes only.
        """
        canvas = background.convert("RGB")
        photo = canvas.copy() if occlusion is not None else None  # the occluders' own pixels
        union = Image.new("L", canvas.size, 0)
        visible: list[Image.Image] = []
        stats, regions = [], []
        for index, (box, cutout, support) in enumerate(zip(boxes, cutouts, supports or [None] * len(boxes))):
            if occlusion is not None:
                canvas = occlusion.before(index, canvas, photo, visible)
            levels, lightness = self._prepare(cutout)
            piece = self._resize(levels, box[2], box[3])
            alpha = self._feather(piece.getchannel("A"))
            piece = fringe_colours(piece, self.params.feather // 2)
            region = (box[0], box[1], box[0] + box[2], box[1] + box[3])
            if light is not None and self.params.cast_shadow and support not in UNSUPPORTED:
                canvas = cast_shadow(canvas, box, piece.getchannel("A"), light, self.params.cast_shadow)
            if self.params.shadow and support not in UNSUPPORTED:
                canvas = contact_shadow(canvas, box, piece.getchannel("A"), self.params.shadow,
                                        self.params.shadow_height)
            if self.params.harmonize:
                piece = match_lightness(piece, lightness, surroundings(canvas, box), self.params.harmonize)
            if self.params.blend == "poisson":
                canvas = poisson_paste(canvas, piece, alpha, region)
            else:
                canvas.paste(piece, region[:2], alpha)
            hidden = ImageOps.invert(alpha)
            for earlier in visible:
                earlier.paste(ImageChops.multiply(earlier.crop(region), hidden), region[:2])
            union.paste(ImageChops.screen(union.crop(region), alpha), region[:2])
            mine = Image.new("L", canvas.size, 0)
            mine.paste(alpha, region[:2])
            visible.append(mine)
            stats.append({"full": _alpha_area(alpha), "inside": _alpha_area(mine, region)})
            regions.append(region)
        if occlusion is not None:
            canvas = occlusion.after(canvas, photo, visible)
            union = Image.new("L", canvas.size, 0)  # what shows of the objects, less what the occluders hide
            for mask in visible:
                union = ImageChops.screen(union, mask)
        for index, (stat, mask, region) in enumerate(zip(stats, visible, regions)):
            stat["visible"] = _alpha_area(mask, region)
            if occlusion is not None:
                stat["behind_occluders"] = occlusion.occluded[index]
        return {"image": canvas, "mask": union, "masks": visible,
                "stats": [{k: round(v, 1) for k, v in s.items()} for s in stats]}

    def _prepare(self, cutout: Image.Image) -> tuple[list[Image.Image], tuple[float, float]]:
        """Half-size levels of a cut-out and its alpha-weighted lightness mean and spread,
        computed once per cut-out and worker (cut-outs are reused across many images)."""
        if id(cutout) not in self._prepared:
            if len(self._prepared) >= PREPARED_CACHE:
                self._prepared.clear()
            rgba = cutout if cutout.mode == "RGBA" else cutout.convert("RGBA")
            levels = [decontaminate(rgba) if self.params.decontaminate else rgba]
            while min(levels[-1].size) >= 128:
                levels.append(levels[-1].reduce(2))
            # holding `cutout` keeps its id unique while it is cached
            self._prepared[id(cutout)] = (cutout, levels, lightness_stats(levels[-1]))
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


def fringe_colours(piece: Image.Image, radius: int) -> Image.Image:
    """The piece with colours for the transparent pixels its feathered alpha reaches: the mean
    colour of the object's own pixels within `radius` (alpha-weighted, as the box blur weighs
    them). A resized RGBA piece has black under alpha 0 (Pillow resamples premultiplied), so a
    feathered edge would otherwise draw a dark rim around every object."""
    if radius == 0:
        return piece
    import cv2

    pixels = np.asarray(piece, dtype=np.float32)
    alpha = pixels[..., 3:] / 255
    kernel, border = (2 * radius + 1, 2 * radius + 1), cv2.BORDER_CONSTANT
    weight = cv2.blur(alpha, kernel, borderType=border)[..., None]
    colour = cv2.blur(pixels[..., :3] * alpha, kernel, borderType=border)
    reached = (alpha[..., 0] == 0) & (weight[..., 0] > 0)
    out = np.asarray(piece).copy()
    out[reached, :3] = np.clip(np.round(colour[reached] / weight[reached]), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGBA")


def occlusion_of(job: dict[str, Any]) -> Occlusion | None:
    """The job's occluders and object depths (a scene template's `occluders`), or None."""
    return Occlusion(job["occluders"], job["depths"], job.get("supports")) if job.get("occluders") else None


def decontaminate(cutout: Image.Image) -> Image.Image:
    """The cut-out with the colours of its partly transparent pixels replaced by estimated
    foreground colours (pymatting's multilevel estimator), so that blending it over a new
    background leaves no trace of the old one. Opaque and transparent pixels keep their bytes."""
    from pymatting import estimate_foreground_ml  # numba's threading layer: see stages/__init__.py

    pixels = np.asarray(cutout)
    alpha = pixels[..., 3]
    soft = (alpha > 0) & (alpha < 255)
    if not soft.any():
        return cutout
    foreground = estimate_foreground_ml(pixels[..., :3] / 255.0, alpha / 255.0)
    out = pixels.copy()
    out[soft, :3] = np.clip(np.round(foreground[soft] * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGBA")


def poisson_paste(canvas: Image.Image, piece: Image.Image, alpha: Image.Image, region: tuple[int, ...]) -> Image.Image:
    """Seamless cloning (Perez et al. 2003, OpenCV) of the alpha-pasted piece into the canvas,
    over the object dilated by a few pixels so that its own outline keeps its contrast; the
    plain alpha paste where the region touches the canvas edge (OpenCV needs a margin)."""
    import cv2

    pasted = canvas.copy()
    pasted.paste(piece, region[:2], alpha)
    margin = POISSON_MARGIN + 1
    inside = (region[0] >= margin and region[1] >= margin and region[2] <= canvas.width - margin
              and region[3] <= canvas.height - margin)
    if not inside or not np.asarray(alpha).any():
        return pasted
    mask = np.zeros((canvas.height, canvas.width), np.uint8)
    mask[region[1]:region[3], region[0]:region[2]] = (np.asarray(alpha) > 0).astype(np.uint8) * 255
    mask = cv2.dilate(mask, np.ones((2 * POISSON_MARGIN + 1,) * 2, np.uint8))
    ys, xs = np.nonzero(mask)
    centre = (int((xs.min() + xs.max() + 1) // 2), int((ys.min() + ys.max() + 1) // 2))
    blended = cv2.seamlessClone(np.asarray(pasted), np.asarray(canvas), mask, centre, cv2.NORMAL_CLONE)
    return Image.fromarray(blended)


def _alpha_area(mask: Image.Image, region: tuple[int, int, int, int] | None = None) -> float:
    """Alpha mass in pixels (a fully opaque pixel counts 1), optionally within `region`."""
    if region is not None:
        mask = mask.crop(region)
    return float(np.asarray(mask, dtype=np.uint32).sum() / 255)
