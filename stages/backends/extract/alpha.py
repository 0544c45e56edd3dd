"""Already cut-out photos: the alpha channel is the mask (no model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from compiler.errors import ItemError

VERSION = "1"


@dataclass
class Params:
    threshold: int = 70  # tight box on the alpha channel, as for a predicted mask
    max_side: int = 1024

    def __post_init__(self) -> None:
        if not 0 <= self.threshold < 255:
            raise ValueError(f"threshold {self.threshold}: valid 0-254")
        if self.max_side < 16:
            raise ValueError(f"max_side {self.max_side}: must be >= 16")


class Backend:
    def __init__(self, params: Params, threads: int = 1):
        self.params = params

    def soft_mask(self, image: Image.Image) -> np.ndarray:
        if "A" not in image.getbands() and "transparency" not in image.info:
            raise ItemError(f"declared as a cut-out but has no alpha channel (mode {image.mode}); "
                            f"set `cutout: false` on the concept to segment it instead")
        return np.asarray(image.convert("RGBA").getchannel("A"), dtype=np.uint8)
