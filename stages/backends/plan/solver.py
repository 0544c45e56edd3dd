"""A seeded layout solver: the embedded, LLM-free planner.

On a background with a scene template, every object stands where it can stand: its
silhouette's feet on the ground or on a surface that holds it (outside its holes), a view seen
from above only where the camera looks down enough (`stages.scene`), its size the perspective's for its real size
(within half the template's tolerance), clear of forbidden regions, pasted far to near. It
plans what the score stage keeps: each box is large enough, given its cut-out's fill, for the
filter's `min_area`; and each image draws which concept stands in front, so that near/far
order is not decided by which concept happens to be large enough. Without a template: one box
per concept with the chosen cut-out's aspect ratio, sizes from
the concepts' relative sizes, Gen4Gen's minimum-area rule, boxes resting in the lower part of
the frame, pairwise overlap bounded, and Gen4Gen's paste order.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from base.errors import ItemError
from stages.backends.plan import choose_photo, choose_views, placed, scene_of, views_for_scene
from stages.layout import minimum_side, overlap, paste_order_by_depth, paste_order_by_overlap
from stages.backends.plan.reach import stand_at
from stages.scene import CanvasScene, sample_point

VERSION = "1"
IGNORES = ("class_noun", "phrase")  # request fields it does not read
PASTE_ORDERS = {"overlap": paste_order_by_overlap, "depth": paste_order_by_depth}
LAYOUT_TRIES = 4  # layouts tried in the drawn depth order (attempts / 4 per object each), then
ANY_ORDER_TRIES = 2  # layouts in any order, largest first (attempts per object each)


@dataclass
class Params:
    coverage: list[float] = field(default_factory=lambda: [0.2, 0.4])  # all boxes' area / canvas, sampled
    max_overlap: float = 0.15  # any pair: intersection / smaller box area
    ground: float = 0.5  # box bottoms lie below this fraction of the canvas height
    max_side: float = 0.9  # no box side exceeds this fraction of the canvas
    paste_order: str = "overlap"  # overlap: Gen4Gen's rule; depth: lower in frame = in front
    attempts: int = 200  # layouts tried before the item is reported as unplaceable
    min_size: float = 0.12  # on a scene template: no object's longer side under this fraction of the canvas

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
        if not 0 <= self.min_size < 1:
            raise ValueError(f"min_size {self.min_size}: a fraction of the canvas in [0, 1)")


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
        rng = np.random.default_rng(request["seed"])
        views = choose_views(request, rng)
        candidates = request["backgrounds"]
        first = int(rng.integers(len(candidates)))
        background = candidates[first]
        photo = choose_photo(background, rng)
        if "scene" not in background:
            boxes = self._free_layout(request, views, rng)
            order = PASTE_ORDERS[self.params.paste_order](boxes)
            return layout(background, photo, request, views, boxes, order)
        problems = []
        for background in candidates[first:] + candidates[:first]:  # another scene when this one cannot hold them
            if "scene" not in background:
                continue
            if background is not candidates[first]:
                photo = choose_photo(background, rng)
            scene, crop = scene_of(background, photo, request["canvas"])
            shown = views_for_scene(request["concepts"], views, scene, rng)
            if isinstance(shown, str):
                problems.append(f"{background['id']}: {shown}")
                continue
            standing = self._scene_layout(scene, request["concepts"], shown, request.get("filter", {}), rng)
            if isinstance(standing, str):
                problems.append(f"{background['id']}: {standing}")
                continue
            boxes, supports = standing
            return layout(background, photo, request, shown, boxes, scene.far_to_near(boxes, supports), supports, crop)
        raise ItemError(f"cannot stand {', '.join(c['id'] for c in request['concepts'])} in any scene: "
                        f"{'; '.join(problems)}")

    def _free_layout(self, request: dict[str, Any], views: list[dict[str, Any]], rng: np.random.Generator):
        p = self.params
        width, height = request["canvas"]
        concepts = request["concepts"]
        aspects = [v["aspect"] for v in views]
        sizes = [c["size"] / max(c2["size"] for c2 in concepts) for c in concepts]
        for _ in range(p.attempts):
            dims = box_sizes(aspects, sizes, float(rng.uniform(*p.coverage)), width, height, p.max_side)
            boxes = self._place(dims, width, height, rng)
            if boxes is not None:
                return boxes
        raise ItemError(
            f"cannot place {len(concepts)} concepts ({', '.join(c['id'] for c in concepts)}) on a "
            f"{width}x{height} canvas with coverage {p.coverage} and max_overlap {p.max_overlap} "
            f"after {p.attempts} attempts; lower backends.plan.coverage, raise max_overlap or ground, "
            f"or use fewer concepts"
        )

    def _scene_layout(self, scene: CanvasScene, concepts: list[dict[str, Any]], views: list[dict[str, Any]],
                      passes: dict[str, float], rng: np.random.Generator) -> tuple[list[list[int]], list[str]] | str:
        """Boxes standing on the template's supports, in a depth order drawn per image (far to
        near), so that of two concepts each is in front about as often as the other wherever
        both orders fit (where the drawn one does not, largest real size first, in any order);
        each box big enough for the score stage to keep it. A reason naming the constraints
        that failed, with counts, when no layout is found."""
        drawn = [int(i) for i in rng.permutation(len(concepts))]  # far to near
        largest_first = sorted(range(len(concepts)), key=lambda i: (-concepts[i]["size_cm"], i))
        failed: dict[int, Counter[str]] = {i: Counter() for i in range(len(concepts))}
        tries = self.params.attempts // LAYOUT_TRIES  # per object and layout in the drawn order: the same budget
        for order, in_depth_order, layouts, attempts in ((drawn, True, LAYOUT_TRIES, max(1, tries)),
                                                         (largest_first, False, ANY_ORDER_TRIES, self.params.attempts)):
            for _ in range(layouts):
                spots: dict[int, tuple[list[int], str, float]] = {}
                for index in order:
                    spot = self._spot(scene, concepts[index], views[index], passes, spots, in_depth_order,
                                      attempts, failed[index], rng)
                    if spot is None:
                        stuck = index
                        break
                    spots[index] = spot
                else:
                    return [spots[i][0] for i in range(len(concepts))], [spots[i][1] for i in range(len(concepts))]
        concept = concepts[stuck]  # the object the last layout could not place, with every failure it met
        counts = ", ".join(f"{n} {why}" for why, n in failed[stuck].most_common())
        return f"no place for {concept['id']} ({concept['size_cm']:g} cm, {concept['placement']}): {counts}"

    def _spot(self, scene: CanvasScene, concept: dict[str, Any], view: dict[str, Any], passes: dict[str, float],
              spots: dict[int, tuple[list[int], str, float]], in_depth_order: bool, attempts: int,
              failed: Counter[str], rng: np.random.Generator) -> tuple[list[int], str, float] | None:
        """A place for one concept overlapping no placed one too much (and, `in_depth_order`,
        nearer than all of them)."""
        for _ in range(attempts):
            spot = self._stand(scene, concept, view, passes, rng)
            if isinstance(spot, str):
                failed[spot] += 1
            elif any(overlap(spot[0], other) > self.params.max_overlap for other, _, _ in spots.values()):
                failed["overlapping another object"] += 1
            elif in_depth_order and spots and spot[2] <= max(depth for _, _, depth in spots.values()):
                failed["not in front of the objects behind it"] += 1
            else:
                return spot
        return None

    def _stand(self, scene: CanvasScene, concept: dict[str, Any], view: dict[str, Any], passes: dict[str, float],
               rng: np.random.Generator) -> tuple[list[int], str, float] | str:
        """One try: a foot point on a support, the perspective's size there, and its depth (the
        ground row of its foot); what failed otherwise (`stand_at`)."""
        supports = scene.supports_for(concept["placement"], concept["size_cm"])
        if supports:
            support = supports[int(rng.integers(len(supports)))]
            foot = sample_point(support.polygon, rng)
        else:  # free: anywhere below the horizon, sized as if standing there
            support = scene.supports[0]
            foot = (float(rng.uniform(0, scene.width)), float(rng.uniform(scene.horizon, scene.height)))
        if foot is None:
            return "no point found on its support"
        spread = math.log1p(scene.size_tolerance / 2)
        factor = math.exp(rng.uniform(-spread, spread))
        return stand_at(scene, concept, view, passes, self.params.min_size, support, foot, factor, bool(supports))

    def _place(self, dims: list[tuple[int, int]], width: int, height: int, rng: np.random.Generator):
        """Drop boxes largest first at random spots until each respects max_overlap; None if stuck."""
        spots: dict[int, list[int]] = {}
        for index in sorted(range(len(dims)), key=lambda i: -dims[i][0] * dims[i][1]):
            w, h = dims[index]
            lowest_bottom = max(h, math.ceil(self.params.ground * height))
            for _ in range(50):
                x = int(rng.integers(0, width - w + 1))
                bottom = int(rng.integers(lowest_bottom, height + 1))
                box = [x, bottom - h, w, h]
                if all(overlap(box, other) <= self.params.max_overlap for other in spots.values()):
                    spots[index] = box
                    break
            else:
                return None
        return [spots[i] for i in range(len(dims))]


def layout(background: dict[str, Any], photo: int | None, request: dict[str, Any], views: list[dict[str, Any]],
           boxes: list[list[int]], order: list[int], supports: list[str] | None = None,
           crop: list[int] | None = None) -> dict[str, Any]:
    """The layout record: background (with the photo crop of a scene's view) and objects in
    paste order (with what each stands on)."""
    concepts = request["concepts"]
    objects = []
    for i in order:
        entry = placed(concepts[i]["id"], views[i], boxes[i])
        if supports:
            entry["support"] = supports[i]
        objects.append(entry)
    return {"background": {"id": background["id"], "photo": photo, **({"crop": crop} if crop else {})},
            "objects": objects}
