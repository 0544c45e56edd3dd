"""Where a concept can stand in a scene at its real size: one place tried (`stand_at`, what the
solver places by), a map of every place on a grid (`feet_map`, drawn by `g4g scene`) and why a
background cannot hold a concept at all (`cannot_hold`, a `g4g validate` warning and a line of
the plan report and the card).

A place fails, in this order, for being under the solver's `min_size`, too small for the score
stage's `min_area`, outside the canvas (taller or wider than the view), a view seen from above
where the camera is low, feet off its support (or in a hole), over a forbidden region, or hidden
behind occluders (the filter's `min_visible`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np

from stages.scene import BLOCK_LIMIT, CanvasScene, Support, contains

HIDDEN_MARGIN = 0.6  # an object's box share hidden by occluders stays under this fraction of 1 - min_visible
AREA_MARGIN = 1.1  # planned alpha area over the filter's min_area: room for a soft edge and small occlusions
MAP_STEP = 16  # canvas pixels between the foot points of a map
TALLER = "outside the canvas (taller or wider than the view there)"


def stand_at(scene: CanvasScene, concept: dict[str, Any], view: dict[str, Any], passes: dict[str, float],
             min_size: float, support: Support, foot: Sequence[float], factor: float = 1.0,
             on_support: bool = True) -> tuple[list[int], str, float] | str:
    """The box of `view` with its foot at `foot` on `support` at the perspective's size (times
    `factor`), its support's name and its depth (the ground row of its foot); what failed
    otherwise. `on_support` False: a `free` concept, sized as if standing there."""
    if scene.size_at(foot[1], support, concept["size_cm"]) * factor < min_size * scene.height:
        return f"shorter than backends.plan.min_size {min_size:g} of the canvas"
    box = scene.box_at(foot, support, concept["size_cm"], view["aspect"], factor)
    area = passes.get("min_area", 0.0)
    needed = area * AREA_MARGIN * scene.width * scene.height  # alpha pixels the filter's min_area asks for
    if box[2] * box[3] * view["fill"] < needed:
        return f"too small for the score stage's min_area {area:.2%}"
    if not scene.holds(box):
        return TALLER
    if not scene.camera_fits(view, box[1] + box[3]):
        return "seen from above where the camera is low"
    if on_support and scene.support_under(box, concept["placement"], concept["size_cm"], view=view) is not support:
        return "feet off its support (or in a hole)"
    if scene.blocked(box, support.height_cm) > BLOCK_LIMIT / 2:
        return "over a forbidden region"
    depth = scene.ground_row(box[1] + box[3], support.height_cm)
    if scene.occluders:  # behind a post or a fence is fine, as long as the filter keeps what shows
        hidden = scene.hidden(box, depth, support.name if on_support else None)
        if hidden > HIDDEN_MARGIN * (1 - passes.get("min_visible", 0.0)):
            return f"hidden behind occluders ({hidden:.0%} of its box)"
        if box[2] * box[3] * view["fill"] * (1 - hidden) < needed:
            return f"too small for the score stage's min_area {area:.2%} once occluded"
    return box, support.name if on_support else "free", depth


def feet_map(scene: CanvasScene, concept: dict[str, Any], views: list[dict[str, Any]], passes: dict[str, float],
             min_size: float, step: int = MAP_STEP, first: bool = False) -> tuple[list[tuple[float, float]], Counter[str]]:
    """The foot points, on a grid of `step` canvas pixels over the concept's supports, where
    some view of it stands at its real size (`first`: up to the first one); and, for the
    others, what failed (the first view's reason), with counts."""
    supports = scene.supports_for(concept["placement"], concept["size_cm"]) or [scene.supports[0]]
    xs, ys = np.meshgrid(np.arange(step / 2, scene.width, step), np.arange(step / 2, scene.height, step))
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
    good, failed = [], Counter()
    for support in supports:
        for foot in grid[contains(support.polygon, grid)].tolist():
            tries = [stand_at(scene, concept, view, passes, min_size, support, foot,
                              on_support=concept["placement"] != "free") for view in views]
            if any(not isinstance(t, str) for t in tries):
                good.append((foot[0], foot[1]))
                if first:
                    return good, failed
            else:
                failed[tries[0]] += 1
    return good, failed


def cannot_hold(scene: CanvasScene, concept: dict[str, Any], views: list[dict[str, Any]],
                passes: dict[str, float], min_size: float) -> str | None:
    """Why the scene holds the concept nowhere at its real size ("lion is taller than the view
    at 120 cm"), naming what failed with counts; None when it stands somewhere."""
    good, failed = feet_map(scene, concept, views, passes, min_size, first=True)
    if good:
        return None
    if not failed:
        return f"{concept['id']} has no place to stand (its support lies outside the view)"
    if failed.most_common(1)[0][0] == TALLER:
        head = f"{concept['id']} is taller or wider than the view at {concept['size_cm']:g} cm"
    else:
        head = f"{concept['id']} at {concept['size_cm']:g} cm stands nowhere"
    return f"{head} ({', '.join(f'{n} {why}' for why, n in failed.most_common())} of {sum(failed.values())} places)"
