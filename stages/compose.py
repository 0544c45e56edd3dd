"""Stage `compose`: render every planned image with the compose backend.

Reads  build/compiled/compose.json, build/layouts.json, build/cutouts/ (+ build/cutouts.json),
       the background photos.
Writes build/images/<id>.jpg            the composed image
       build/images/<id>.mask.png       union of the concepts' soft masks
       build/images/<id>.mask.<concept>.png  each concept's visible soft mask (after occlusion)
       build/images.json                per image: files and, per concept, alpha area in
                                        pixels: full (at box size), inside the canvas, visible
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from PIL import Image

from compiler import sources
from stages import backends
from stages.backends.compose.paste import fit_background
from stages.runtime.files import read_json
from stages.runtime.images import encode_jpeg, encode_mask, load_image
from stages.runtime.runner import ItemOutput, attach, each_item, finish, materialize, run_cli, run_items
from stages.runtime.settings import load_settings


@functools.lru_cache(maxsize=64)
def _cutout(path: str) -> Image.Image:
    return load_image(Path(path), path)


@functools.lru_cache(maxsize=16)
def _background(path: str, reference: str, width: int, height: int) -> Image.Image:
    return fit_background(load_image(Path(path), reference), width, height)


@each_item
def compose_item(item: dict[str, Any], context: dict[str, Any]) -> ItemOutput:
    layout = item["layout"]
    width, height = context["canvas"]
    composer = backends.create("compose", context["backend"])
    photo = context["backgrounds"][layout["background"]["id"]]["photos"][layout["background"]["photo"]]
    background = _background(str(sources.resolve(photo["source"], Path(context["root"]))),
                             photo["source"], width, height)
    cutouts = [_cutout(str(Path(context["cutouts_dir"]) / f"{o['cutout']}.png")) for o in layout["objects"]]
    result = composer.compose([o["box"] for o in layout["objects"]], cutouts, background)
    item_id = item["id"]
    files = {f"{item_id}.jpg": encode_jpeg(result["image"], context["jpeg_quality"]),
             f"{item_id}.mask.png": encode_mask(result["mask"])}
    concepts = []
    for obj, mask, stat in zip(layout["objects"], result["masks"], result["stats"]):
        name = f"{item_id}.mask.{obj['concept']}.png"
        files[name] = encode_mask(mask)
        concepts.append({"concept": obj["concept"], "mask": name, **stat})
    record = {"image": f"{item_id}.jpg", "mask": f"{item_id}.mask.png", "concepts": concepts,
              "background": {**layout["background"], **photo}}
    return record, files


def run(items_file: Path, layouts_file: Path, cutouts_dir: Path, out_dir: Path, index_file: Path) -> None:
    document = read_json(items_file)
    layouts = read_json(layouts_file)
    items, skipped = attach(document["items"], layouts, "layouts", "layout", "plan")
    context = {"backend": document["backend"], "canvas": document["canvas"], "root": str(Path.cwd()),
               "jpeg_quality": document["jpeg_quality"], "backgrounds": document["backgrounds"],
               "cutouts_dir": str(cutouts_dir)}
    result, cache = run_items("compose", items, compose_item, context, load_settings(), skipped)
    materialize(result, cache, out_dir)
    images = result.entries()
    finish("compose", result, document["backend"]["name"], index_file, {"images": images})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=Path, default=Path("build/compiled/compose.json"))
    parser.add_argument("--layouts", type=Path, default=Path("build/layouts.json"))
    parser.add_argument("--cutouts", type=Path, default=Path("build/cutouts"))
    parser.add_argument("--out", type=Path, default=Path("build/images"))
    parser.add_argument("--index", type=Path, default=Path("build/images.json"))
    args = parser.parse_args()
    run_cli(lambda: run(args.items, args.layouts, args.cutouts, args.out, args.index))


if __name__ == "__main__":
    main()
