"""Per-composition and per-bin means of per-image metrics, beside Gen4Gen's Table 1.

The paper reports CP-CLIP and TI-CLIP per bin of <=3, 4 and 5 concepts. A bin's value is the
mean over every generated image of the bin's compositions (with the same number of prompts and
samples per composition, as in the paper's protocol, that equals the mean of the
compositions' means). Identity mixing is undefined for an image where no concept was found;
its means leave such images out and say how many were counted.
"""

from __future__ import annotations

from typing import Any, Iterable

METRICS = ("cp_clip", "cp_clip_assigned", "identity_mixing", "ti_clip")
BINS = ("<=3", "4", "5")

# Gen4Gen Table 1 (CP-CLIP, TI-CLIP) per bin for its three training settings.
PAPER_SETTINGS = {
    "source": "Custom Diffusion + source photos",
    "composed": "Custom Diffusion + composed dataset (MyCanvas)",
    "strategies": "+ prompting strategies",
}
PAPER_TABLE1 = {
    "source": {"<=3": (0.26, 0.16), "4": (0.21, 0.13), "5": (0.23, 0.17)},
    "composed": {"<=3": (0.41, 0.17), "4": (0.47, 0.17), "5": (0.50, 0.15)},
    "strategies": {"<=3": (0.51, 0.17), "4": (0.55, 0.16), "5": (0.57, 0.14)},
}


def concept_bin(count: int) -> str:
    """The paper's bins: <=3, 4 or 5 concepts."""
    return "<=3" if count <= 3 else str(count)


def paper_row(data: str | None, strategies: Iterable[str]) -> str:
    """Which of the paper's settings a training setup is: source photos, the composed dataset,
    or the composed dataset with prompting strategies."""
    if data == "source":
        return "source"
    return "strategies" if list(strategies) else "composed"


def means(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each metric over `rows` (each with the keys of METRICS), rounded to 4 places;
    None-valued entries (identity mixing without detections) are left out and counted."""
    summary: dict[str, Any] = {"images": len(rows)}
    for metric in METRICS:
        values = [row[metric] for row in rows if row.get(metric) is not None]
        summary[metric] = round(sum(values) / len(values), 4) if values else None
    summary["identity_mixing_images"] = sum(row.get("identity_mixing") is not None for row in rows)
    return summary


def summarize(rows: list[dict[str, Any]], bins_of: dict[str, str], setting: str | None = None) -> dict[str, Any]:
    """Per composition and per bin means of `rows` (each with `composition` and the metrics);
    `bins_of` maps each composition to its bin. Each bin carries the paper's CP-CLIP and
    TI-CLIP for `setting` (a key of PAPER_TABLE1) beside ours. Bins without images are left out."""
    by_composition: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_composition.setdefault(row["composition"], []).append(row)
    compositions = {comp: {"bin": bins_of[comp], **means(found)} for comp, found in sorted(by_composition.items())}
    bins = {}
    for bin_name in BINS:
        members = sorted(comp for comp in by_composition if bins_of[comp] == bin_name)
        if members:
            bins[bin_name] = {**means([row for comp in members for row in by_composition[comp]]),
                              "compositions": len(members)}
            if setting in PAPER_TABLE1:
                cp_clip, ti_clip = PAPER_TABLE1[setting][bin_name]
                bins[bin_name]["paper"] = {"cp_clip": cp_clip, "ti_clip": ti_clip}
    return {"bins": bins, "compositions": compositions}
