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
