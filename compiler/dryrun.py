"""What a build would recompute and what it would reuse, without building anything.

`g4g validate` compiles the recipe, which gives every item the parts of its key that are known
before anything runs (code, environment, backend, weights, templates, seed, and for a cut-out
its photo's bytes). A cut-out's key is then complete: it is reused exactly when the item cache
holds it. The later stages add parts made by the stage before (a layout's cut-out shapes, an
image's layout and pixels): when everything an item is made from is reused, those parts are the
last build's (`.g4g/keys/<stage>.sqlite` keeps every part's value), so its key is exact again and
the cache answers (a reverted edit finds its old entries). An item whose inputs are recomputed
is counted as recomputed, with the parts that changed: `new` for an item the last build did not
have, `upstream` for recomputed inputs, `cache` for an entry no longer there. Counts after
extract are therefore upper bounds: an input recomputed to the same bytes lets the items made
from it reuse theirs (early cutoff).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from base.keys import content_key
from stages import backends
from stages.runtime import explain
from stages.runtime.cache import ItemCache

STAGES = ("extract", "plan", "compose", "caption", "score")
MADE_FROM = {"plan": (), "compose": ("plan",), "caption": ("plan",), "score": ("plan", "compose")}


def made_from(stage: str, documents: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """The stages whose outputs an item of `stage` reads: a captioner that looks at the composed
    images (`READS_IMAGES`) reads compose's too."""
    if stage == "caption":
        captioner = backends.module("caption", documents["caption"]["backend"]["name"])
        if getattr(captioner, "READS_IMAGES", False):
            return MADE_FROM[stage] + ("compose",)
    return MADE_FROM[stage]


@dataclass
class Forecast:
    """One stage's items: how many a build would reuse and recompute, and why."""

    stage: str
    reused: set[str] = field(default_factory=set)
    recomputed: int = 0
    because: Counter[str] = field(default_factory=Counter)


def changed(item: dict[str, Any], last: dict[str, Any] | None) -> list[str]:
    """The item's compile-time parts whose digest differs from the last build's (`new` if it had none)."""
    if last is None:
        return ["new"]
    return sorted(name for name, value in item["parts"].items() if content_key(value) != last["parts"].get(name))


def forecast(documents: dict[str, dict[str, Any]], cache_dir: Path,
             state_dir: Path = explain.STATE_DIR) -> list[Forecast]:
    """Per stage, what the next build of the compiled `documents` would reuse from `cache_dir`."""
    plan = documents["plan"]
    cutouts = {item["id"]: [c for concept in plan["compositions"][item["composition"]]["concepts"]
                            for c in concept["cutouts"]] for item in plan["items"]}
    done: dict[str, Forecast] = {}
    for stage in STAGES:
        cache, last_build = ItemCache(cache_dir, stage), explain.load(stage, state_dir)
        result = done[stage] = Forecast(stage)
        for item in documents[stage]["items"]:
            last = last_build["items"].get(item["id"])
            upstream, key = False, None
            if stage == "extract":  # every part is known: the key is exact
                key = content_key(stage, item["parts"])
            elif last is not None and (all(c in done["extract"].reused for c in cutouts.get(item["id"], ()))
                                       and all(item["id"] in done[made].reused for made in made_from(stage, documents))):
                # Its inputs are reused, so the parts made from them are the last build's.
                made_parts = {name: last_build["values"].get(digest) for name, digest in last["parts"].items()
                              if name not in item["parts"]}
                key = content_key(stage, {**made_parts, **item["parts"]})
            elif last is not None:
                upstream = True
            if key is not None and cache.has(key):  # a damaged entry is found (and recomputed) by the stage
                result.reused.add(item["id"])
                continue
            result.recomputed += 1
            result.because.update(changed(item, last) + ["upstream"] * upstream or ["cache"])
    return list(done.values())


def describe(forecasts: list[Forecast]) -> list[str]:
    """Lines for the terminal: per stage, reused and recomputed items and why."""
    lines = ["a build now would (from the item cache; recomputed counts after extract are upper bounds):"]
    for result in forecasts:
        why = ", ".join(f"{name} {count}" for name, count in sorted(result.because.items(), key=lambda p: (-p[1], p[0])))
        lines.append(f"  {result.stage:8s} reuse {len(result.reused):6d}  recompute {result.recomputed:6d}"
                     + (f"  ({why})" if why else ""))
    return lines
