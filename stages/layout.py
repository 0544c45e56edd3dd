"""Box geometry shared by planning, captioning and scoring.

A box is `[x, y, w, h]` in canvas pixels (top-left corner, width, height), as in the paper.
"""

from __future__ import annotations

from typing import Sequence

Box = Sequence[float]


def area(box: Box) -> float:
    return max(0.0, box[2]) * max(0.0, box[3])


def intersection(a: Box, b: Box) -> float:
    width = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    height = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0.0, width) * max(0.0, height)


def iou(a: Box, b: Box) -> float:
    shared = intersection(a, b)
    union = area(a) + area(b) - shared
    return shared / union if union > 0 else 0.0


def overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box: 1.0 when one box hides inside the other."""
    smaller = min(area(a), area(b))
    return intersection(a, b) / smaller if smaller > 0 else 0.0


def minimum_side(canvas_height: float, count: int) -> float:
    """Gen4Gen's minimum box area is (H/5)^2 for <=3 objects, (H/6)^2 for 4, (H/8)^2 for 5+;
    this is the side of that square."""
    return canvas_height / (5 if count <= 3 else 6 if count == 4 else 8)


def scale_about_centre(box: Box, factor: float) -> list[float]:
    x, y, w, h = box
    return [x + w / 2 - w * factor / 2, y + h / 2 - h * factor / 2, w * factor, h * factor]


def resize_about_centre(box: Box, width: float, height: float) -> list[float]:
    """The box with a new size and the same centre."""
    x, y, w, h = box
    return [x + (w - width) / 2, y + (h - height) / 2, width, height]


def clamp(box: Box, width: float, height: float) -> list[float]:
    """Shift (and if needed shrink) a box so it lies inside the canvas."""
    w, h = min(box[2], width), min(box[3], height)
    return [min(max(box[0], 0), width - w), min(max(box[1], 0), height - h), w, h]


def fit_aspect(box: Box, aspect: float) -> list[float]:
    """The paper's fit: the cut-out's longer side gets min(box w, box h); centred in the box
    (the paper's code leaves it at the box's top-left corner, though it meant to re-centre)."""
    side = min(box[2], box[3])
    w, h = (side, side / aspect) if aspect >= 1 else (side * aspect, side)
    return [box[0] + (box[2] - w) / 2, box[1] + (box[3] - h) / 2, w, h]


def fitted_area(box: Box, aspect: float) -> float:
    """The area `fit_aspect` leaves of `box` for a cut-out of that aspect (what is pasted)."""
    side = min(box[2], box[3])
    return side * side * min(aspect, 1 / aspect)


def to_pixels(box: Box, width: int, height: int) -> list[int]:
    """Whole pixels for a box inside the canvas: corner and size rounded, at least 1 pixel
    wide and high, shifted back inside the canvas where rounding pushed it out."""
    w, h = max(1, round(box[2])), max(1, round(box[3]))
    return [min(max(round(box[0]), 0), width - w), min(max(round(box[1]), 0), height - h), w, h]


def horizontal_position(box: Box, canvas_width: float) -> str:
    centre = (box[0] + box[2] / 2) / canvas_width
    return "left" if centre < 1 / 3 else "right" if centre > 2 / 3 else "center"


def paste_order_by_overlap(boxes: list[Box]) -> list[int]:
    """Gen4Gen's rule: most-overlapped box first (it ends up underneath); ties: farther first."""
    summed = [sum(iou(b, other) for j, other in enumerate(boxes) if j != i) for i, b in enumerate(boxes)]
    return sorted(range(len(boxes)), key=lambda i: (-round(summed[i], 9), boxes[i][1] + boxes[i][3], i))


def paste_order_by_depth(boxes: list[Box]) -> list[int]:
    """Objects standing lower in the frame are nearer the camera, so they are pasted last."""
    return sorted(range(len(boxes)), key=lambda i: (boxes[i][1] + boxes[i][3], i))
