"""Planners: a layout request -> one box per concept, a paste order and a background.

Interface: `Backend(params[, templates_dir, cache_dir, root, device])` with
`plan_batch(requests) -> list[layout | ItemError]`. A request holds the item `id`, `seed`,
`canvas`, `concepts` (id, class noun, size, views with id, aspect, fill (the cut-out's mean
alpha), `foot` (its foot profile, extract's), `elevation_deg` when photographed from above
and `mirrored` when the view is drawn mirrored; on templated backgrounds also size_cm and
placement), `backgrounds` (id, phrase, number of photos, and `scene`: template and photo sizes,
when it has one) and `filter` (the score stage's min_area and min_visible, for planners that
plan what it keeps); a layout holds `background` {id, photo, and the
photo `crop` on templated backgrounds} and `objects` in paste order (first = bottom), each
{concept, cutout, box: [x, y, w, h], `support` on templated backgrounds and `mirrored: true`
for a mirrored view (`placed` writes those two)}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from stages.scene import CanvasScene, centre_crop, on_canvas, with_occluders


def choose_views(request: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
    """One view (cut-out) per concept, drawn with the item's generator."""
    return [c["views"][int(rng.integers(len(c["views"])))] for c in request["concepts"]]


def views_for_scene(concepts: list[dict[str, Any]], views: list[dict[str, Any]], scene: CanvasScene,
                    rng: np.random.Generator) -> list[dict[str, Any]] | str:
    """The drawn views, each one the scene's camera cannot show anywhere (seen from above where
    the camera is low even at the canvas bottom) drawn again among the concept's views it can
    show; why not, when a concept has none."""
    shown = []
    for concept, view in zip(concepts, views):
        if not scene.camera_fits(view, scene.height):
            fitting = [v for v in concept["views"] if scene.camera_fits(v, scene.height)]
            if not fitting:
                return (f"every view of {concept['id']} is seen from above and the camera looks down at "
                        f"{scene.looks_down(scene.height):.0f} degrees at most")
            view = fitting[int(rng.integers(len(fitting)))]
        shown.append(view)
    return shown


def placed(concept: str, view: dict[str, Any], box: list[int]) -> dict[str, Any]:
    """A layout object: the concept, its view's cut-out (and `mirrored` when drawn so), its box."""
    return {"concept": concept, "cutout": view["id"], **({"mirrored": True} if view.get("mirrored") else {}),
            "box": list(box)}


def choose_photo(background: dict[str, Any], rng: np.random.Generator) -> int | None:
    """A photo index for the chosen background; None when it has no photo (to be generated)."""
    return int(rng.integers(background["photos"])) if background["photos"] else None


def scene_of(background: dict[str, Any], photo: int | None, canvas: list[int]) -> tuple[CanvasScene, list[int]] | None:
    """The background's scene template on the canvas and the photo crop it shows, or None
    when the background has no template (or no photo)."""
    if "scene" not in background or photo is None:
        return None
    template, size = background["scene"]["template"], background["scene"]["sizes"][photo]
    scene = (with_occluders(template, size, canvas, Path.cwd()) if template.get("occluders")
             else on_canvas(template, size, canvas))
    return scene, list(centre_crop(size, canvas, template.get("view")))
