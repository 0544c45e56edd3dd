"""Stage `plan`: lay out every image (boxes, paste order, background) with the plan backend.

Reads  build/compiled/plan.json (items + keys), build/cutouts.json (which views exist, their shape).
Writes build/layouts.json: per image `background` {id, photo index} and `objects` in paste
       order (first = bottom), each {concept, cutout, box: [x, y, w, h] in canvas pixels}.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stages import backends
from stages.runtime.files import read_json
from stages.runtime.runner import ItemOutput, each_item, finish, run_cli, run_items
from stages.runtime.settings import load_settings


@each_item
def plan_item(item: dict[str, Any], context: dict[str, Any]) -> ItemOutput:
    planner = backends.create("plan", context["backend"])
    layout = planner.plan(item["request"])
    record = {"composition": item["composition"], "index": item["index"], "seed": item["seed"],
              "canvas": item["request"]["canvas"], **layout}
    return record, {}


def requests(document: dict[str, Any], cutouts: list[dict[str, Any]]) -> tuple[list[dict], dict[str, str]]:
    """Attach each item's available views; items whose concept has no cut-out are skipped."""
    views: dict[str, list[dict[str, Any]]] = {}
    for cutout in cutouts:
        views.setdefault(cutout["concept"], []).append(
            {"id": cutout["id"], "aspect": cutout["size"][0] / cutout["size"][1]})
    items, skipped = [], {}
    for item in document["items"]:
        missing = [c["id"] for c in item["concepts"] if not views.get(c["id"])]
        if missing:
            skipped[item["id"]] = f"no usable cut-out of {', '.join(missing)} (see reports/extract.json)"
            continue
        concepts = [{"id": c["id"], "size": c["size"],
                     "views": [v for v in views[c["id"]] if v["id"] in c["cutouts"]]} for c in item["concepts"]]
        request = {"seed": item["seed"], "canvas": document["canvas"], "concepts": concepts,
                   "backgrounds": item["backgrounds"]}
        items.append({"id": item["id"], "key": item["key"], "composition": item["composition"],
                      "index": item["index"], "seed": item["seed"], "request": request})
    return items, skipped


def run(items_file: Path, cutouts_index: Path, out_file: Path) -> None:
    document = read_json(items_file)
    items, skipped = requests(document, read_json(cutouts_index)["cutouts"])
    result, _ = run_items("plan", items, plan_item, {"backend": document["backend"]}, load_settings(), skipped)
    layouts = result.entries()
    finish("plan", result, document["backend"]["name"], out_file, {"canvas": document["canvas"], "layouts": layouts})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=Path, default=Path("build/compiled/plan.json"))
    parser.add_argument("--cutouts", type=Path, default=Path("build/cutouts.json"))
    parser.add_argument("--out", type=Path, default=Path("build/layouts.json"))
    args = parser.parse_args()
    run_cli(lambda: run(args.items, args.cutouts, args.out))


if __name__ == "__main__":
    main()
