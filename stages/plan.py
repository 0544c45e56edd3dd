"""Stage `plan`: lay out every image (boxes, paste order, background) with the plan backend.

Reads  build/compiled/plan.json (items + keys), build/cutouts.json (which views exist, their shape
       and foot profile).
Writes build/layouts.json: per image `background` {id, photo index} and `objects` in paste
       order (first = bottom), each {concept, cutout, box: [x, y, w, h] in canvas pixels, and
       `mirrored: true` when the view is drawn mirrored (concepts with `mirror`)};
       LLM planners add `llm.attempts` (each request's key, raw reply and verdict).
       This file is also what the `replay` planner reads back.
       reports/plan.json's `unused_backgrounds` (also printed): each background of a composition
       that none of its layouts uses, and why (`stages.backends.plan.reach.cannot_hold`).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from base.compiled import read_compiled
from base.errors import ItemError
from base.files import read_json
from base.keys import without
from base.settings import load_settings
from base.untrusted import escape_controls
from stages import backends
from stages.backends.plan import scene_of
from stages.backends.plan.reach import cannot_hold
from stages.runtime.runner import ItemOutput, finish, run_cli, run_items
from stages.templating import keyed_templates


def plan_batch(items: list[dict[str, Any]], context: dict[str, Any]) -> list[ItemOutput | ItemError]:
    planner = backends.create("plan", context["backend"], templates_dir=context["templates_dir"],
                              template_digests=context["template_digests"],
                              cache_dir=context["cache_dir"], root=context["root"], device=context["device"])
    outputs: list[ItemOutput | ItemError] = []
    for item, layout in zip(items, planner.plan_batch([item["request"] for item in items])):
        if isinstance(layout, ItemError):
            outputs.append(layout)
            continue
        outputs.append(({"composition": item["composition"], "index": item["index"], "seed": item["seed"],
                         "canvas": item["request"]["canvas"], **layout}, {}))
    return outputs


def requests(document: dict[str, Any], cutouts: list[dict[str, Any]]) -> tuple[list[dict], dict[str, str]]:
    """Attach each item's available views (each also mirrored, for a concept with `mirror`), with
    their foot profile and the camera elevation the recipe gives them; items whose concept has
    no cut-out are skipped.

    The request, less what the planner does not read and what the item's key already holds
    (its id, seed and canvas), joins the item's key: a re-extracted cut-out of the same shape
    plans nothing again, and the items of a composition share one request value in the key
    record (`.g4g/keys/plan.sqlite`)."""
    views: dict[str, list[dict[str, Any]]] = {}
    for cutout in cutouts:
        views.setdefault(cutout["concept"], []).append(
            {"id": cutout["id"], "aspect": cutout["size"][0] / cutout["size"][1], "fill": cutout["fill"],
             **({"foot": cutout["foot"]} if cutout.get("foot") else {})})
    items, skipped = [], {}
    shared: dict[str, tuple[list[str], dict[str, Any], dict[str, Any]]] = {}
    for item in document["items"]:
        composition = item["composition"]
        if composition not in shared:
            shared[composition] = composition_request(document, composition, views)
        missing, values, keyed = shared[composition]
        if missing:
            skipped[item["id"]] = f"no usable cut-out of {', '.join(missing)} (see reports/extract.json)"
            continue
        own = {"id": item["id"], "seed": item["seed"], "canvas": document["canvas"]}
        keyed_own = {name: value for name, value in own.items()  # in the item's key already, as a rule
                     if name not in document["ignores"] and name not in item["parts"]}
        if keyed_own or keyed.keys() & item["parts"].keys():
            keyed = {**{k: v for k, v in keyed.items() if k not in item["parts"]}, **keyed_own}
        items.append({"id": item["id"], "composition": composition, "index": item["index"],
                      "seed": item["seed"], "request": {**own, **values},
                      "parts": {**item["parts"], "request": keyed}})  # one object per composition, as a rule
    return items, skipped


def composition_request(document: dict[str, Any], composition: str, views: dict[str, list[dict[str, Any]]]
                        ) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """What every request of a composition holds (its concepts with their views, its
    backgrounds, the filter), that again less what the planner does not read (for the key),
    and its concepts without a cut-out: made once per composition, not walked per item (at
    20,000 items that took seconds)."""
    entry = document["compositions"][composition]
    missing = [c["id"] for c in entry["concepts"] if not views.get(c["id"])]
    concepts = [{**{k: v for k, v in c.items() if k not in ("cutouts", "elevations")},
                 "views": with_mirrored([with_camera(v, c.get("elevations", {})) for v in views.get(c["id"], [])
                                         if v["id"] in c["cutouts"]], c.get("mirror"))}
                for c in entry["concepts"]]
    values = {"concepts": concepts, "backgrounds": entry["backgrounds"], "filter": document.get("filter", {})}
    return missing, values, {name: without(value, document["ignores"]) for name, value in values.items()
                             if name not in document["ignores"]}


def with_camera(view: dict[str, Any], elevations: dict[str, float]) -> dict[str, Any]:
    """The view with `elevation_deg` when the recipe says it was photographed from above."""
    return {**view, "elevation_deg": elevations[view["id"]]} if elevations.get(view["id"]) else view


def with_mirrored(views: list[dict[str, Any]], mirror: bool | None) -> list[dict[str, Any]]:
    """The views, then (when the concept may be mirrored) each again with `mirrored: true`: a
    mirrored view is a pose of its own, drawn like any other."""
    return views + [{**view, "mirrored": True} for view in views] if mirror else views


def rejections(layouts: list[dict[str, Any]], failures: dict[str, str]) -> dict[str, int]:
    """Rejected LLM replies by reason: retried ones of planned items and those that failed items."""
    kinds = Counter(a["rejected"] for layout in layouts for a in layout.get("llm", {}).get("attempts", [])
                    if a["rejected"])
    for reason in failures.values():
        kinds.update(re.findall(r"\[(\w+)\]", reason))
    return dict(sorted(kinds.items()))


def unused_backgrounds(items: list[dict[str, Any]], layouts: list[dict[str, Any]], min_size: float) -> list[str]:
    """"cat_lion: bench: 0 of 80 images: lion is taller or wider than the view at 120 cm (...)"
    for each background of a composition that none of its layouts uses: why its scene holds a
    concept nowhere at its real size, or that no layout happened to be placed there."""
    used = {(layout["composition"], layout["background"]["id"]) for layout in layouts}
    first: dict[str, dict[str, Any]] = {}
    totals: Counter[str] = Counter()
    for item in items:
        first.setdefault(item["composition"], item)
        totals[item["composition"]] += 1
    lines = []
    for composition, item in sorted(first.items()):
        request = item["request"]
        for background in request["backgrounds"]:
            if (composition, background["id"]) in used:
                continue
            why = None
            if "scene" in background and background["photos"]:
                scene, _ = scene_of(background, 0, request["canvas"])
                why = next(filter(None, (cannot_hold(scene, concept, concept["views"], request["filter"], min_size)
                                         for concept in request["concepts"])), None)
            lines.append(f"{composition}: {background['id']}: 0 of {totals[composition]} images: "
                         f"{why or 'no layout was placed there (see the failed items)'}")
    return lines


def run(items_file: Path, cutouts_index: Path, out_file: Path, templates_dir: Path = Path("templates")) -> None:
    document = read_compiled(items_file)
    settings = load_settings()
    items, skipped = requests(document, read_json(cutouts_index)["cutouts"])
    context = {"backend": document["backend"], "templates_dir": str(templates_dir), "cache_dir": settings.cache_dir,
               "template_digests": keyed_templates(document["items"]),
               "root": str(Path.cwd()), "device": settings.device}
    result, _ = run_items("plan", items, plan_batch, context, settings, skipped)
    layouts = result.entries()
    unused = unused_backgrounds(items, layouts, document["backend"].get("params", {}).get("min_size", 0.0))
    finish("plan", result, document["backend"]["name"], out_file, {"canvas": document["canvas"], "layouts": layouts},
           rejections_by_reason=rejections(layouts, result.failures), unused_backgrounds=unused)
    for line in unused:
        print(escape_controls(f"  warning: background unused: {line}"), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=Path, default=Path("build/compiled/plan.json"))
    parser.add_argument("--cutouts", type=Path, default=Path("build/cutouts.json"))
    parser.add_argument("--templates", type=Path, default=Path("templates"))
    parser.add_argument("--out", type=Path, default=Path("build/layouts.json"))
    args = parser.parse_args()
    run_cli(lambda: run(args.items, args.cutouts, args.out, args.templates))


if __name__ == "__main__":
    main()
