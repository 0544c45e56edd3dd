"""A cut-out's quality against a reference mask (the paper's IS-Net masks): the figures of
issue 32, shared by `bench/cutout_quality.py` and the tests.

- see-through: share of the reference's interior (eroded by 1% of the object's size) with alpha < 0.9;
- ghost: pixels with alpha > 0.1 outside the reference dilated the same, as a share of its area;
- IoU of alpha > 0.5 with the reference.
The object's size is the longer side of its box, as `size_cm` measures it (`by="side"`); the
stricter `by="area"` uses the square root of its area (a thinner tolerance on long thin objects).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from stages.backends.extract.matte import INTERIOR, OPAQUE, object_size

GHOST = 0.1


def against_reference(alpha: np.ndarray, reference: np.ndarray, by: str = "side") -> dict[str, float]:
    """`alpha` (uint8, the photo's size) against `reference` (bool, the object): see_through,
    ghost and iou, as shares (0-1)."""
    size = object_size(reference) if by == "side" else float(np.sqrt(reference.sum()))
    tolerance = INTERIOR * size
    interior = ndimage.distance_transform_edt(reference) > tolerance
    outside = ndimage.distance_transform_edt(~reference) > tolerance
    ours = alpha > 127
    return {"see_through": float((alpha[interior] < OPAQUE * 255).mean()),
            "ghost": float((alpha[outside] > GHOST * 255).sum() / reference.sum()),
            "iou": float((ours & reference).sum() / (ours | reference).sum())}


def in_photo(cutout_alpha: np.ndarray, box: list[int], shape: tuple[int, int]) -> np.ndarray:
    """A cut-out's alpha put back at its `box` ([left, top, right, bottom]) in a photo of `shape`."""
    alpha = np.zeros(shape, np.uint8)
    alpha[box[1]:box[3], box[0]:box[2]] = cutout_alpha
    return alpha
