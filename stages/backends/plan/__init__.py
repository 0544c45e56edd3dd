"""Planners: a layout request -> one box per concept, a paste order and a background.

Interface: `Backend(params[, templates_dir, cache_dir, root, device])` with
`plan_batch(requests) -> list[layout | ItemError]`. A request holds the item `id`, `seed`,
`canvas`, `concepts` (id, class noun, size, views with id and aspect) and `backgrounds` (id,
phrase, number of photos); a layout holds `background` {id, photo} and `objects` in paste
order (first = bottom), each {concept, cutout, box: [x, y, w, h]}.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def choose_views(request: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
    """One view (cut-out) per concept, drawn with the item's generator."""
    return [c["views"][int(rng.integers(len(c["views"])))] for c in request["concepts"]]


def choose_photo(background: dict[str, Any], rng: np.random.Generator) -> int | None:
    """A photo index for the chosen background; None when it has no photo (to be generated)."""
    return int(rng.integers(background["photos"])) if background["photos"] else None
