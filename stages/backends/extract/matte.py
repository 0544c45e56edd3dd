"""Soft mask -> matte: a clean binary core first, then alpha matting in a narrow band only.

A salient-object model's soft mask is leaky: mid values inside the body (see-through patches)
and beside it (ghosts of the old background). Matting in a trimap drawn from it widens both
(docs/pipeline.md has the measurements), so the order here is: threshold the mask at `core`,
keep the object's connected component(s) (detached blobs dropped), fill interior holes unless
they are real holes, and only then solve alpha in a band `band` x the object's size wide
around the core's edge (pymatting's closed-form matting), and re-estimate the foreground
colours there (no rim of the old background).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

INTERIOR = 0.01  # the interior whose see-through share is reported: the core eroded by 1% of the object's size
OPAQUE = 0.9  # alpha below this inside the interior is see-through


@dataclass
class Core:
    """The object's binary core and what cleaning it did."""

    mask: np.ndarray  # bool, the photo's size
    dropped: int  # detached components removed
    holes_filled: int
    holes_kept: int


def object_size(mask: np.ndarray) -> int:
    """The object's size: the longer side of its tight box, as `size_cm` measures it (0 if empty)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return 0 if rows.size == 0 else int(max(rows[-1] - rows[0], cols[-1] - cols[0])) + 1


def disk(radius: int) -> np.ndarray:
    rows, cols = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return rows * rows + cols * cols <= radius * radius


def clean_core(soft: np.ndarray, level: int, min_component: float, min_hole: float, hole_level: int,
               opening: float = 0.0) -> Core:
    """`soft >= level`, with components under `min_component` x the largest one's area dropped
    and every hole filled except the real ones: a hole is kept when its area is at least
    `min_hole` x the object's and the soft mask's mean there is at most `hole_level` (the model
    is sure it sees background, as between a cat's legs), since a small or unsure hole is the
    model missing part of the body (a paw, a patch of fur in shadow)."""
    core = soft >= level
    radius = int(round(opening * object_size(core)))
    if radius:
        core = ndimage.binary_opening(core, disk(radius))
    labels, count = ndimage.label(core)
    if count == 0:
        return Core(core, 0, 0, 0)
    areas = ndimage.sum_labels(core, labels, np.arange(1, count + 1))
    kept = 1 + np.flatnonzero(areas >= min_component * areas.max())
    core = np.isin(labels, kept)
    holes, count_holes = ndimage.label(ndimage.binary_fill_holes(core) & ~core)
    filled = kept_holes = 0
    if count_holes:
        hole_areas = ndimage.sum_labels(np.ones_like(core), holes, np.arange(1, count_holes + 1))
        hole_means = ndimage.mean(soft, holes, np.arange(1, count_holes + 1))
        real = (hole_areas >= min_hole * (core.sum() + hole_areas.sum())) & (hole_means <= hole_level)
        core |= np.isin(holes, 1 + np.flatnonzero(~real))
        kept_holes, filled = int(real.sum()), int((~real).sum())
    return Core(core, count - kept.size, filled, kept_holes)


def band_width(core: np.ndarray, band: float) -> float:
    """The unknown band's half-width in pixels: `band` x the object's size, at least one pixel."""
    return max(1.0, band * object_size(core))


def band_matte(rgb: np.ndarray, core: np.ndarray, soft: np.ndarray, width: float, matting: str) -> np.ndarray:
    """Alpha (float 0-1): 1 deeper than `width` inside the core, 0 farther than `width` outside
    it, and in between solved by `matting` from the photo's colours (`rgb`, uint8). An object
    thinner than the band everywhere keeps a hard edge: nothing of it is sure enough to solve from."""
    inside = ndimage.distance_transform_edt(core) > width
    outside = ndimage.distance_transform_edt(~core) > width
    if matting == "none" or not inside.any():
        return core.astype(np.float64)
    alpha = inside.astype(np.float64)
    band = ~inside & ~outside
    if matting == "soft":
        alpha[band] = soft[band] / 255.0
        return alpha
    from pymatting import estimate_alpha_cf

    rows, cols = np.flatnonzero((~outside).any(axis=1)), np.flatnonzero((~outside).any(axis=0))
    top, left = max(0, rows[0] - 2), max(0, cols[0] - 2)
    bottom, right = rows[-1] + 3, cols[-1] + 3
    trimap = np.where(inside, 1.0, np.where(outside, 0.0, 0.5))[top:bottom, left:right]
    solved = estimate_alpha_cf(rgb[top:bottom, left:right] / 255.0, trimap)
    alpha[top:bottom, left:right] = np.where(band[top:bottom, left:right], solved, trimap)
    return np.clip(alpha, 0.0, 1.0)


def decontaminate(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The foreground colours under a soft edge (pymatting's multi-level estimation), uint8."""
    from pymatting import estimate_foreground_ml

    foreground = estimate_foreground_ml(rgb / 255.0, alpha)
    return np.clip(np.rint(foreground * 255), 0, 255).astype(np.uint8)


def see_through(alpha: np.ndarray, core: np.ndarray, depth: float = 0.0) -> float:
    """The share of the core's interior (eroded by 1% of its size, and at least `depth`: the
    matted band's width) whose alpha (0-255) is below 0.9."""
    interior = ndimage.distance_transform_edt(core) > max(INTERIOR * object_size(core), depth)
    return float((alpha[interior] < OPAQUE * 255).mean()) if interior.any() else 0.0
