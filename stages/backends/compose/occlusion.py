"""Occluders: what stands in the scene in front of the ground behind it (a post, a rope, a
trunk, a bench, a flower bed) hides the objects standing behind it.

Layered compositing, far to near: before an object is pasted, the occluders it stands in front
of (its foot's ground row at or below the occluder's `front`) are drawn back from the photo's
own pixels, through their soft mattes, over the objects already pasted behind them, so these
are partly hidden as in a photo; what is left is drawn after the last object. An occluder that
holds things (a bench's seat, `support`) never hides what stands on it. The visible masks of
the objects behind lose what the occluder covers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageChops, ImageOps


class Occlusion:
    """The occluders of one image (canvas row of their front, canvas-sized uint8 matte, the
    support they hold or None) and the depth (ground row of the foot) and support of each
    object, in paste order."""

    def __init__(self, occluders: Sequence[tuple[float, Image.Image | np.ndarray | None, str | None]],
                 depths: Sequence[float], supports: Sequence[str | None] | None = None):
        self.pending = [(front, index, matte if isinstance(matte, Image.Image) else Image.fromarray(matte, "L"), holds)
                        for index, (front, matte, holds) in enumerate(occluders) if matte is not None]
        self.depths = list(depths)
        self.supports = list(supports or [None] * len(self.depths))
        self.occluded = [0.0] * len(self.depths)

    def hides(self, occluder: tuple, index: int) -> bool:
        """Whether the occluder stands in front of object `index` (and does not hold it)."""
        front, _, _, holds = occluder
        return self.depths[index] < front and not (holds and self.supports[index] == holds)

    def before(self, index: int, canvas: Image.Image, photo: Image.Image, masks: list[Image.Image]) -> Image.Image:
        """Draw the occluders that object `index` (about to be pasted) and all nearer ones stand
        in front of (paste order is far to near)."""
        depth = self.depths[index]
        due = [entry for entry in self.pending if entry[0] <= depth]
        self.pending = [entry for entry in self.pending if entry[0] > depth]
        return self._draw(due, canvas, photo, masks)

    def after(self, canvas: Image.Image, photo: Image.Image, masks: list[Image.Image]) -> Image.Image:
        """Draw the occluders left."""
        due, self.pending = self.pending, []
        return self._draw(due, canvas, photo, masks)

    def _draw(self, due: list, canvas: Image.Image, photo: Image.Image, masks: list[Image.Image]) -> Image.Image:
        for occluder in sorted(due, key=lambda entry: entry[:2]):
            behind = [i for i in range(len(masks)) if self.hides(occluder, i)]
            if not behind:
                continue  # nothing pasted yet stands behind it: the canvas shows the photo there already
            box = occluder[2].getbbox()  # all the work happens within the occluder's extent
            if box is None:
                continue
            matte = occluder[2].crop(box)
            for i in range(len(masks)):  # objects pasted in front of it (or on it) keep their pixels
                if i not in behind:
                    matte = ImageChops.multiply(matte, ImageOps.invert(masks[i].crop(box)))
            canvas.paste(Image.composite(photo.crop(box), canvas.crop(box), matte), box[:2])
            shown = ImageOps.invert(matte)
            for i in behind:
                region = masks[i].crop(box)
                kept = ImageChops.multiply(region, shown)
                masks[i].paste(kept, box[:2])
                self.occluded[i] += _mass(region) - _mass(kept)
        return canvas


def _mass(mask: Image.Image) -> float:
    """Alpha mass in pixels (an opaque pixel counts 1)."""
    return float(np.asarray(mask, dtype=np.uint32).sum() / 255)
