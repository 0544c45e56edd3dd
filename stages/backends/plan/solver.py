"""A seeded layout solver: the embedded, LLM-free planner.

One box per concept with the chosen cut-out's aspect ratio, sizes from the concepts' relative
real-world sizes, Gen4Gen's minimum-area rule, boxes inside the canvas resting in the lower
part of the frame, pairwise overlap bounded, and Gen4Gen's paste order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler.errors import ItemError
from stages.backends.plan import choose_photo, choose_views
from stages.layout import minimum_side, overlap, paste_order_by_depth, paste_order_by_overlap

VERSION = "1"
IGNORES = ("class_noun", "phrase")  # request fields it does not read
PASTE_ORDERS = {"overlap": paste_order_by_overlap, "depth": paste_order_by_depth}


@dataclass
class Params:
    coverage: list[float] = field(default_factory=lambda: [0.2, 0.4])  # all boxes' area / canvas, sampled
    max_overlap: float = 0.15  # any pair: intersection / smaller box area
    ground: float = 0.5  # box bottoms lie below this fraction of the canvas height
    max_side: float = 0.9  # no box side exceeds this fraction of the canvas
    paste_order: str = "overlap"  # overlap: Gen4Gen's rule; depth: lower in frame = in front
    attempts: int = 200  # layouts tried before the item is reported as unplaceable

    def __post_init__(self) -> None:
        if len(self.coverage) != 2 or not 0 < self.coverage[0] <= self.coverage[1] <= 1:
            raise ValueError(f"coverage {self.coverage}: [low, high] with 0 < low <= high <= 1")
        if not 0 <= self.max_overlap <= 1:
            raise ValueError(f"max_overlap {self.max_overlap}: valid 0-1")
        if not 0 <= self.ground < 1 or not 0 < self.max_side <= 1:
            raise ValueError("ground must be in [0, 1) and max_side in (0, 1]")
        if self.paste_order not in PASTE_ORDERS:
            raise ValueError(f"paste_order '{self.paste_order}': valid {', '.join(PASTE_ORDERS)}")
        if self.attempts < 1:
            raise ValueError(f"attempts {self.attempts}: must be >= 1")


def box_sizes(aspects: list[float], sizes: list[float], coverage: float, width: int, height: int,
              max_side: float) -> list[tuple[int, int]]:
    """(w, h) per object: longer sides proportional to `sizes`, total area `coverage` of the canvas,
    each at least the minimum area (sides scaled by the square root of the area ratio)."""
    shape = [min(a, 1 / a) for a in aspects]  # shorter side / longer side
    scale = math.sqrt(coverage * width * height / sum(s * s * r for s, r in zip(sizes, shape)))
    floor = minimum_side(height, len(aspects)) ** 2
    limit = max_side * min(width, height)
    out = []
    for aspect, size, ratio in zip(aspects, sizes, shape):
        longer = scale * size
        if longer * longer * ratio < floor:
            longer *= math.sqrt(floor / (longer * longer * ratio))
        longer = min(longer, limit)
        w, h = (longer, longer / aspect) if aspect >= 1 else (longer * aspect, longer)
        out.append((max(1, round(w)), max(1, round(h))))
    return out


class Backend:
    def __init__(self, params: Params):
        self.params = params

    def plan_batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any] | ItemError]:
        outputs: list[dict[str, Any] | ItemError] = []
        for request in requests:
            try:
                outputs.append(self.plan(request))
            except ItemError as error:
                outputs.append(error)
        return outputs

    def plan(self, request: dict[str, Any]) -> dict[str, Any]:
        """Lay out one image (see the request format in `stages.backends.plan`)."""
        p = self.params
        rng = np.random.default_rng(request["seed"])
        width, height = request["canvas"]
        concepts = request["concepts"]
        views = choose_views(request, rng)
        background = request["backgrounds"][int(rng.integers(len(request["backgrounds"])))]
        photo = choose_photo(background, rng)
        aspects = [v["aspect"] for v in views]
        sizes = [c["size"] / max(c2["size"] for c2 in concepts) for c in concepts]
        for _ in range(p.attempts):
            dims = box_sizes(aspects, sizes, float(rng.uniform(*p.coverage)), width, height, p.max_side)
            boxes = self._place(dims, width, height, rng)
            if boxes is not None:
                break
        else:
            raise ItemError(
                f"cannot place {len(concepts)} concepts ({', '.join(c['id'] for c in concepts)}) on a "
                f"{width}x{height} canvas with coverage {p.coverage} and max_overlap {p.max_overlap} "
                f"after {p.attempts} attempts; lower backends.plan.coverage, raise max_overlap or ground, "
                f"or use fewer concepts"
            )
        order = PASTE_ORDERS[p.paste_order](boxes)
        return {
            "background": {"id": background["id"], "photo": photo},
            "objects": [{"concept": concepts[i]["id"], "cutout": views[i]["id"], "box": list(boxes[i])}
                        for i in order],
        }

    def _place(self, dims: list[tuple[int, int]], width: int, height: int, rng: np.random.Generator):
        """Drop boxes largest first at random spots until each respects max_overlap; None if stuck."""
        placed: dict[int, list[int]] = {}
        for index in sorted(range(len(dims)), key=lambda i: -dims[i][0] * dims[i][1]):
            w, h = dims[index]
            lowest_bottom = max(h, math.ceil(self.params.ground * height))
            for _ in range(50):
                x = int(rng.integers(0, width - w + 1))
                bottom = int(rng.integers(lowest_bottom, height + 1))
                box = [x, bottom - h, w, h]
                if all(overlap(box, other) <= self.params.max_overlap for other in placed.values()):
                    placed[index] = box
                    break
            else:
                return None
        return [placed[i] for i in range(len(dims))]
