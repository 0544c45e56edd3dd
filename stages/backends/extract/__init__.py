"""Extractors: photo -> soft foreground mask (uint8, 0-255, same size as the photo).

Interface: `Backend(params[, threads=...])` with `soft_mask(image: PIL.Image.Image) -> np.ndarray`;
a photo with nothing to cut out raises `ItemError`. Every extractor's `Params` extends
`CutoutParams`, the options the extract stage itself applies to the mask: the matte
(`matte.py`) and the bad-view check.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

MATTINGS = ("cf", "soft", "none")  # closed-form matting in the band; the mask's own values there; a hard edge
BAD_VIEW = ("warn", "refuse")
MATTE_OPTIONS = ("core", "band", "matting", "opening", "min_component", "min_hole", "hole_level", "decontaminate")


@dataclass
class CutoutParams:
    threshold: int = 70  # the paper's tight-box threshold on the 0-255 alpha
    max_side: int = 1024  # cut-outs are stored at most this large (the canvas side)
    matte: bool = True  # turn the soft mask into a matte (a clean core, then a narrow band); false: the mask as alpha
    refine_cutouts: bool = False  # also matte the alpha of photos already cut out (`cutout: true`)
    core: int = 140  # the core: soft mask >= this (0-255)
    band: float = 0.001  # the band matted around the core's edge, each side, x the object's size (>= 1 px)
    matting: str = "cf"  # cf: closed-form matting in the band; soft: the mask's own values; none: hard edge
    opening: float = 0.0  # cut strands thinner than 2x this x the object's size off the core (morphological opening)
    min_component: float = 0.05  # core components smaller than this x the largest are dropped (detached blobs)
    min_hole: float = 0.002  # a hole this large (x the object's area) where the mask is sure of background
    hole_level: int = 32  # (its mean <= this) stays a hole; other holes are filled
    decontaminate: bool = True  # re-estimate the edge's colours from the matte (pymatting)
    max_see_through: float = 0.05  # a view whose interior is more see-through than this is a bad view
    on_bad_view: str = "warn"  # warn: build on and report it; refuse: the view fails (reported), others go on

    def __post_init__(self) -> None:
        if not 0 <= self.threshold < 255:
            raise ValueError(f"threshold {self.threshold}: valid 0-254")
        if self.max_side < 16:
            raise ValueError(f"max_side {self.max_side}: must be >= 16")
        if not 0 < self.core < 256 or not 0 <= self.hole_level < 256:
            raise ValueError(f"core {self.core} and hole_level {self.hole_level}: valid 1-255 and 0-255")
        if not 0 <= self.band <= 0.1:
            raise ValueError(f"band {self.band}: valid 0-0.1 (a share of the object's size)")
        if self.matting not in MATTINGS:
            raise ValueError(f"matting '{self.matting}': valid {', '.join(MATTINGS)}")
        for name in ("opening", "min_component", "min_hole", "max_see_through"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} {getattr(self, name)}: valid 0-1")
        if self.on_bad_view not in BAD_VIEW:
            raise ValueError(f"on_bad_view '{self.on_bad_view}': valid {', '.join(BAD_VIEW)}")


def alpha_description(extract: dict[str, Any]) -> dict[str, Any]:
    """The `alpha` backend, with the options it shares with the recipe's extract backend: it
    runs for concepts whose photos are already cut out. Their alpha is trusted as given (no
    matte, and the matte's options stay out of their keys) unless `refine_cutouts` is set."""
    from stages import backends

    known = {f.name for f in fields(CutoutParams)}
    params = {k: v for k, v in extract["params"].items() if k in known}
    if not params.get("refine_cutouts", False):
        params = {k: v for k, v in params.items() if k not in MATTE_OPTIONS}
        params["matte"] = False
    return backends.describe("extract", "alpha", params)
