"""Stage `caption`: describe every laid-out image in words.

Reads  build/compiled/caption.json (templates, tokens, phrases), build/layouts.json.
Writes build/captions.json: per image `short` (the paper's "<cat1> and <dog1> in the garden")
       and `detailed` (where each concept is: left/right, in front of/behind, relative size).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stages import backends
from stages.layout import area, horizontal_position, intersection
from stages.runtime.files import read_json
from stages.runtime.runner import ItemOutput, attach, each_item, finish, run_cli, run_items
from stages.runtime.settings import load_settings


def concept_name(token: str, class_noun: str, token_style: str) -> str:
    return token if token_style == "token" else f"{token} {class_noun}"


def describe_scene(layout: dict[str, Any], concepts: dict[str, dict[str, str]], phrase: str,
                   token_style: str) -> dict[str, Any]:
    """What a caption template sees: the background phrase and, left to right, each concept
    with its name, horizontal position, the concepts it stands in front of / behind, and
    whether it is the largest or smallest."""
    objects = layout["objects"]  # paste order: later ones are in front
    width = layout["canvas"][0]
    names = [concept_name(concepts[o["concept"]]["token"], concepts[o["concept"]]["class_noun"], token_style)
             for o in objects]
    areas = [area(o["box"]) for o in objects]
    described = []
    for i, obj in enumerate(objects):
        touching = [j for j in range(len(objects)) if j != i and intersection(obj["box"], objects[j]["box"]) > 0]
        described.append({
            "id": obj["concept"],
            "name": names[i],
            "token": concepts[obj["concept"]]["token"],
            "class_noun": concepts[obj["concept"]]["class_noun"],
            "position": horizontal_position(obj["box"], width),
            "in_front_of": [names[j] for j in touching if j < i],
            "behind": [names[j] for j in touching if j > i],
            "size": ("largest" if areas[i] == max(areas) else "smallest" if areas[i] == min(areas) else "")
            if max(areas) > min(areas) else "",
            "x": obj["box"][0] + obj["box"][2] / 2,
        })
    described.sort(key=lambda c: (c["x"], c["id"]))
    for concept in described:
        del concept["x"]
    return {"background": phrase, "concepts": described}


@each_item
def caption_item(item: dict[str, Any], context: dict[str, Any]) -> ItemOutput:
    captioner = backends.create("caption", context["backend"], templates_dir=context["templates_dir"],
                                templates=context["templates"])
    layout = item["layout"]
    scene = describe_scene(layout, context["concepts"], context["backgrounds"][layout["background"]["id"]],
                           context["token_style"])
    return captioner.caption(scene), {}


def run(items_file: Path, layouts_file: Path, templates_dir: Path, out_file: Path) -> None:
    document = read_json(items_file)
    layouts = read_json(layouts_file)
    items, skipped = attach(document["items"], layouts, "layouts", "layout", "plan")
    for item in items:  # what a caption reads of the layout: who stands where, on which background
        layout = item["layout"]
        item["parts"] = {**item["parts"], "layout": {
            "canvas": layout["canvas"], "background": layout["background"]["id"],
            "objects": [{"concept": o["concept"], "box": o["box"]} for o in layout["objects"]]}}
    context = {"backend": document["backend"], "templates_dir": str(templates_dir),
               "templates": document["templates"],
               "concepts": document["concepts"], "backgrounds": document["backgrounds"],
               "token_style": document["token_style"]}
    result, _ = run_items("caption", items, caption_item, context, load_settings(), skipped)
    captions = result.entries()
    finish("caption", result, document["backend"]["name"], out_file, {"captions": captions})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=Path, default=Path("build/compiled/caption.json"))
    parser.add_argument("--layouts", type=Path, default=Path("build/layouts.json"))
    parser.add_argument("--templates", type=Path, default=Path("templates"))
    parser.add_argument("--out", type=Path, default=Path("build/captions.json"))
    args = parser.parse_args()
    run_cli(lambda: run(args.items, args.layouts, args.templates, args.out))


if __name__ == "__main__":
    main()
