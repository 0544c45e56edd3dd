"""metrics/dataset.json: the packed dataset's figures for `dvc metrics` and `dvc exp show`.

Results only (no timings, no counters of the run): samples, keep rate per bin of concepts
beside Gen4Gen's human keep rate, rejections by reason, which concept of each pair stands in
front how often, mean caption lengths beside the paper's detailed captions. Stage reports (reports/<stage>.json) hold the run's counters.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import combinations
from typing import Any

from stages.card.page import PAPER_CAPTION_WORDS, paper_keep_rate

REASON = re.compile(r"\b(min_[a-z_]+|max_[a-z_]+|detection_threshold|floating|scale|blocked)\b")


def concept_bin(concepts: int) -> str:
    """Gen4Gen's bins: up to 3 concepts, 4, 5."""
    return "<=3" if concepts <= 3 else str(concepts)


def reason_key(stage: str, reason: str) -> str:
    """The option or check a rejection reason names (`min_area`), else the stage that failed."""
    found = REASON.search(reason)
    return found.group(1) if found else f"{stage}_failed"


def in_front_shares(layouts: list[dict[str, Any]]) -> dict[str, float]:
    """For each pair of concepts that share images: the share of those images in which the
    first (by name) stands in front of the second (objects are in paste order, far to near).
    Near 0.5 when neither is favoured; a planner that only keeps near cats shows it here."""
    front: Counter[str] = Counter()
    shared: Counter[str] = Counter()
    for layout in layouts:
        depth = {o["concept"]: rank for rank, o in enumerate(layout["objects"])}
        for first, second in combinations(sorted(depth), 2):
            pair = f"{first}_in_front_of_{second}"
            shared[pair] += 1
            front[pair] += depth[first] > depth[second]
    return {pair: round(front[pair] / shared[pair], 4) for pair in sorted(shared)}


def dataset_metrics(summary: dict[str, Any], rejected: list[dict[str, Any]],
                    layouts: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of `summary` (stages.card.page.summarize), the rows of rejected.jsonl and the
    kept samples' layouts."""
    images: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    words: dict[str, list[int]] = {"short": [], "detailed": []}
    for composition in summary["compositions"].values():
        name = concept_bin(len(composition["concepts"]))
        images[name] += composition["images"]
        kept[name] += composition["kept"]
        for kind in words:
            words[kind] += composition["words"][kind]
    keep_rate = {name: {"ours": round(kept[name] / images[name], 4), "paper": paper_keep_rate(int(name.strip("<=")))}
                 for name in sorted(images) if images[name]}
    reasons = Counter(reason_key(row["stage"], reason) for row in rejected for reason in row["reasons"] or [""])
    return {"samples": sum(kept.values()), "keep_rate": keep_rate, "rejected": dict(sorted(reasons.items())),
            "in_front": in_front_shares(layouts),
            "caption_words": {kind: round(sum(found) / len(found), 2) if found else None
                              for kind, found in words.items()} | {"paper_detailed": PAPER_CAPTION_WORDS}}
