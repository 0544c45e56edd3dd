"""Already cut-out photos: the alpha channel is the mask (no model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from base.errors import ItemError
from stages.backends.extract import CutoutParams

VERSION = "2"


@dataclass
class Params(CutoutParams):
    pass


def transparent(image: Image.Image) -> bool:
    """Whether the image has an alpha channel (or a transparent palette entry) with any pixel
    below fully opaque: an already cut-out photo."""
    if "A" not in image.getbands() and "transparency" not in image.info:
        return False
    return np.asarray(image.convert("RGBA").getchannel("A")).min() < 255


class Backend:
    def __init__(self, params: Params):
        self.params = params

    def soft_mask(self, image: Image.Image) -> np.ndarray:
        if "A" not in image.getbands() and "transparency" not in image.info:
            raise ItemError(f"declared as a cut-out but has no alpha channel (mode {image.mode}); "
                            f"set `cutout: false` on the concept to segment it instead")
        return np.asarray(image.convert("RGBA").getchannel("A"), dtype=np.uint8)
