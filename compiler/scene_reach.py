"""`g4g validate`'s warning for a composition that cannot use one of its backgrounds: a scene
template that holds one of its concepts nowhere at its real size (the solver's `min_size`, the
filter's `min_area` and `min_visible`, the view, its supports and holes, occluders), so that
its images all go to the other backgrounds, or fail. Views are not known before extract: each
concept is tried as a square of its real size, as opaque as a cut-out can be."""

from __future__ import annotations

from collections import Counter
from typing import Any

from stages.backends.plan import scene_of
from stages.backends.plan.reach import cannot_hold

SQUARE = {"id": "square", "aspect": 1.0, "fill": 1.0}


def scene_warnings(documents: dict[str, Any]) -> list[str]:
    """One warning per (composition, background) whose scene cannot hold one of its concepts."""
    plan = documents["plan"]
    name = documents["pack"]["recipe"]["name"]
    min_size = plan["backend"].get("params", {}).get("min_size", 0.0)
    totals = Counter(item["composition"] for item in plan["items"])
    why: dict[tuple[str, str], str | None] = {}
    warnings = []
    for comp_id, total in sorted(totals.items()):
        composition = plan["compositions"][comp_id]
        for background in composition["backgrounds"]:
            if "scene" not in background or not background["photos"]:
                continue
            for concept in composition["concepts"]:
                key = (background["id"], concept["id"])
                if key not in why:
                    scene, _ = scene_of(background, 0, plan["canvas"])
                    why[key] = cannot_hold(scene, concept, [SQUARE], plan.get("filter", {}), min_size)
                if why[key]:
                    others = [b["id"] for b in composition["backgrounds"] if b["id"] != background["id"]]
                    warnings.append(f"warning: recipe '{name}': compositions.{comp_id}: background {background['id']} "
                                    f"cannot be used (0 of {total} images; they go to "
                                    f"{', '.join(others) or 'none: they fail'}): {why[key]}")
                    break
    return warnings
