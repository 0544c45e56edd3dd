"""Occluders: what stands in the scene in front of the ground behind it (a post, a rope, a
trunk, a bench, a flower bed) hides the objects standing behind it.

Layered compositing, far to near: before an object is pasted, every occluder it stands in
front of (its foot's ground row at or below the occluder's `front`) that hides an object
already pasted is drawn back from the photo's own pixels, through its soft matte, so the
object behind is partly hidden as in a photo; what is left is drawn after the last object.
The visible masks of the objects behind lose what the occluder covers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageChops, ImageOps


class Occlusion:
    """The occluders of one image (canvas row of their front, canvas-sized uint8 matte) and the
    depth (ground row of the foot) of each object, in paste order."""

    def __init__(self, occluders: Sequence[tuple[float, np.ndarray | None]], depths: Sequence[float]):
        self.pending = sorted((front, index, Image.fromarray(matte, "L"))
                              for index, (front, matte) in enumerate(occluders) if matte is not None)
        self.depths = list(depths)
        self.occluded = [0.0] * len(self.depths)

    def before(self, index: int, canvas: Image.Image, photo: Image.Image, masks: list[Image.Image]) -> Image.Image:
        """Draw the occluders that object `index` (about to be pasted) stands in front of."""
        depth = self.depths[index]
        due = [entry for entry in self.pending if entry[0] <= depth]
        self.pending = [entry for entry in self.pending if entry[0] > depth]
        return self._draw(due, canvas, photo, masks)

    def after(self, canvas: Image.Image, photo: Image.Image, masks: list[Image.Image]) -> Image.Image:
        """Draw the occluders no object stands in front of."""
        due, self.pending = self.pending, []
        return self._draw(due, canvas, photo, masks)

    def _draw(self, due: list, canvas: Image.Image, photo: Image.Image, masks: list[Image.Image]) -> Image.Image:
        for front, _, matte in due:
            behind = [i for i in range(len(masks)) if self.depths[i] < front]
            if not behind:
                continue  # nothing pasted yet stands behind it: the canvas shows the photo there already
            canvas = Image.composite(photo, canvas, matte)
            shown = ImageOps.invert(matte)
            for i in behind:
                before = _mass(masks[i])
                masks[i] = ImageChops.multiply(masks[i], shown)
                self.occluded[i] += before - _mass(masks[i])
        return canvas


def _mass(mask: Image.Image) -> float:
    """Alpha mass in pixels (an opaque pixel counts 1)."""
    return float(np.asarray(mask, dtype=np.uint32).sum() / 255)
