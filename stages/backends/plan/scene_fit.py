"""LLM layouts on a background with a scene template: repair, or reject, what breaks it.

Rules (`off_scene: repair`, the default), per object, largest real size first:
1. rescale: the box takes the perspective's size at its foot (box bottom centre), about the
   foot, keeping the cut-out's shape;
2. snap: if its silhouette's feet are then off every support the concept may use (or in a
   hole), or its view is seen from above where the camera is low, the foot moves to the
   nearest row of the nearest such support where it stands and reads right (first straight
   down or up, then sideways toward the support's middle), and the box is rescaled there;
3. what still lies outside the canvas, or covers a forbidden region it stands behind, rejects
   the layout with that reason.
`off_scene: reject` rejects any layout with an object off the template. Either way the paste
order becomes far to near, like the solver's.
"""

from __future__ import annotations

from typing import Any, Sequence

from stages.backends.plan.reply import ReplyRejected
from stages.scene import BLOCK_LIMIT, FOOT_TOLERANCE, CanvasScene, Support, judge

ROW_STEP = 4  # pixels between the rows tried when snapping a foot
SIDE_STEPS = 6  # sideways positions tried, from the box's own toward the support's middle
OFF_SCENE = ("repair", "reject")
EDGE = 1.0  # a foot on a support's outline (a box resting on the canvas bottom) stands on it


def stand(scene: CanvasScene, box: Sequence[int], concept: dict[str, Any],
          view: dict[str, Any]) -> tuple[list[int], str, list[str]]:
    """The repaired box, the support it stands on and the rules applied ([] when none was needed)."""
    size_cm, placement, aspect = concept["size_cm"], concept["placement"], view["aspect"]
    if placement == "free":
        return list(box), "free", []
    if not judge(scene, box, placement, size_cm, view):  # already stands where it can, at a size it can have
        return list(box), scene.support_under(box, placement, size_cm, FOOT_TOLERANCE * scene.height, view).name, []

    def stands(moved: list[int], support: Support) -> bool:
        return (scene.holds(moved) and scene.camera_fits(view, moved[1] + moved[3])
                and scene.support_under(moved, placement, size_cm, EDGE, view) is support)

    foot = (box[0] + box[2] / 2, box[1] + box[3])
    supports = scene.supports_for(placement, size_cm)
    for support in supports:  # rule 1: the box's own foot, at the perspective's size
        resized = scene.box_at(foot, support, size_cm, aspect)
        if stands(resized, support):
            return resized, support.name, ["rescaled"]
    for support in supports:  # rule 2: the nearest place on a support
        low, high = support.polygon[:, 1].min(), support.polygon[:, 1].max()
        middle = float(support.polygon[:, 0].mean())
        rows = sorted(range(int(low), int(high) + 1, ROW_STEP), key=lambda y: abs(y - foot[1]))
        for step in range(SIDE_STEPS):
            x = foot[0] + (middle - foot[0]) * step / (SIDE_STEPS - 1)
            for y in rows:
                moved = scene.box_at((x, y), support, size_cm, aspect)
                if stands(moved, support):
                    return moved, support.name, ["snapped", "rescaled"]
    allowed = " or ".join(s.name for s in supports)
    raise ReplyRejected("off_scene", f"{concept['id']}: no place on the {allowed} where a {size_cm:g} cm object "
                                     f"fits inside the canvas, its feet on it and its view's camera right")


def fit_to_scene(scene: CanvasScene, boxes: list[list[int]], concepts: list[dict[str, Any]],
                 views: list[dict[str, Any]], mode: str) -> tuple[list[list[int]], list[str], list[list[str]], list[int]]:
    """(boxes, supports, rules applied per object, paste order far to near); ReplyRejected
    names the first object the template refuses."""
    if mode == "reject":
        for box, concept, view in zip(boxes, concepts, views):
            problems = judge(scene, box, concept["placement"], concept["size_cm"], view)
            if problems:
                raise ReplyRejected(problems[0][0], f"{concept['id']}: {problems[0][1]} (off_scene: reject)")
    fitted = [stand(scene, box, concept, view) for box, concept, view in zip(boxes, concepts, views)]
    for (box, support, _), concept in zip(fitted, concepts):
        if scene.blocked(box, scene.height_of(support)) > BLOCK_LIMIT:
            raise ReplyRejected("blocked", f"{concept['id']}: its box {box} covers a forbidden region of the scene")
    boxes, supports = [f[0] for f in fitted], [f[1] for f in fitted]
    return boxes, supports, [f[2] for f in fitted], scene.far_to_near(boxes, supports)
