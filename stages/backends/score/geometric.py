"""Geometric quality filter: is every concept visible enough and large enough?

Measures, per concept, the fraction of its cut-out still visible after occlusion by later
pastes and truncation by the canvas edge, and its visible area relative to the image. An
image is kept when every concept passes; each failed check is kept as a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VERSION = "1"
IGNORES = ("references", "phrases", "phrase", "cutouts")  # key parts it does not read


@dataclass
class Params:
    min_visible: float = 0.6  # visible alpha / full alpha, per concept
    min_area: float = 0.01  # visible alpha / canvas area, per concept

    def __post_init__(self) -> None:
        if not 0 <= self.min_visible <= 1 or not 0 <= self.min_area <= 1:
            raise ValueError("min_visible and min_area are fractions in [0, 1]")


def measure(stat: dict[str, float], canvas_area: float) -> dict[str, float]:
    """Occlusion, truncation and visibility fractions from alpha areas (full, inside, visible)."""
    full, inside, visible = stat["full"], stat["inside"], stat["visible"]
    return {
        "truncated": round(1 - inside / full, 4) if full else 1.0,
        "occluded": round(1 - visible / inside, 4) if inside else 1.0,
        "visible": round(visible / full, 4) if full else 0.0,
        "area": round(visible / canvas_area, 5),
    }


class Backend:
    def __init__(self, params: Params):
        self.params = params

    def score_batch(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.score(sample) for sample in samples]

    def score(self, sample: dict[str, Any]) -> dict[str, Any]:
        """`sample` holds `canvas` and `concepts` (each: concept id, full/inside/visible areas)."""
        width, height = sample["canvas"]
        concepts, reasons = {}, []
        for stat in sample["concepts"]:
            cid = stat["concept"]
            m = concepts[cid] = measure(stat, width * height)
            if m["visible"] < self.params.min_visible:
                reasons.append({"check": "visible", "concept": cid, "message": (
                    f"{cid}: {m['visible']:.0%} visible (occluded {m['occluded']:.0%}, truncated "
                    f"{m['truncated']:.0%}), below min_visible {self.params.min_visible:.0%}")})
            if m["area"] < self.params.min_area:
                reasons.append({"check": "area", "concept": cid, "message": (
                    f"{cid}: covers {m['area']:.2%} of the image, below min_area {self.params.min_area:.2%}")})
        return {"keep": not reasons, "reasons": reasons, "concepts": concepts}
