"""Extractors: photo -> soft foreground mask (uint8, 0-255, same size as the photo).

Interface: `Backend(params[, threads=...])` with `soft_mask(image: PIL.Image.Image) -> np.ndarray`;
a photo with nothing to cut out raises `ItemError`. Every extractor's `Params` extends
`CutoutParams`, the options the extract stage itself applies to the mask.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class CutoutParams:
    threshold: int = 70  # the paper's tight-box threshold on the 0-255 soft mask
    max_side: int = 1024  # cut-outs are stored at most this large (the canvas side)

    def __post_init__(self) -> None:
        if not 0 <= self.threshold < 255:
            raise ValueError(f"threshold {self.threshold}: valid 0-254")
        if self.max_side < 16:
            raise ValueError(f"max_side {self.max_side}: must be >= 16")


def alpha_description(extract: dict[str, Any]) -> dict[str, Any]:
    """The `alpha` backend, with the options it shares with the recipe's extract backend: it
    runs for concepts whose photos are already cut out."""
    from stages import backends

    known = {f.name for f in fields(CutoutParams)}
    return backends.describe("extract", "alpha", {k: v for k, v in extract["params"].items() if k in known})
