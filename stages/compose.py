"""Stage `compose`: render every planned image with the compose backend.

Reads  build/compiled/compose.json, build/layouts.json, build/cutouts/ and build/cutouts.json,
       the background photos (and their scene template's light), templates/ (prompts of diffusion
       composers).
Writes build/images/<id>.jpg                 the composed image (.png / .webp: output.image_format)
       build/images/<id>.mask.png            union of the concepts' soft masks
       build/images/<id>.mask.<concept>.png  each concept's visible soft mask (after occlusion)
       build/images/<id>.unpasted.jpg        the repainted image before paste-back, if kept
       build/images.json                     per image: files, background and, per concept,
                                             alpha area in pixels: full (at box size),
                                             inside the canvas, visible
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from base import sources
from base.compiled import read_compiled
from base.errors import ItemError
from base.files import read_json
from base.keys import Pruned, without
from base.settings import load_settings
from stages import backends
from stages.backends.compose.paste import fit_background
from stages.runtime.images import encode_image, encode_mask, load_image
from stages.runtime.runner import ItemOutput, attach, finish, materialize, run_cli, run_items
from stages.scene import with_occluders
from stages.templating import keyed_templates


@functools.lru_cache(maxsize=64)
def _cutout(path: str, blake2b: str) -> Image.Image:
    """A cut-out, decoded from the bytes whose digest the image's key holds."""
    return load_image(Path(path), path, ("blake2b", blake2b))


@functools.lru_cache(maxsize=64)
def _mirrored(path: str, blake2b: str) -> Image.Image:
    """The cut-out flipped left-right, kept like the cut-out itself (the composer prepares each
    image object once per worker)."""
    return ImageOps.mirror(_cutout(path, blake2b))


@functools.lru_cache(maxsize=16)
def _background(path: str, reference: str, sha256: str, width: int, height: int,
                crop: tuple[int, ...] | None) -> Image.Image:
    return fit_background(load_image(Path(path), reference, ("sha256", sha256)), width, height, crop)


def job_for(item: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """What the composer needs for one image: boxes, cut-outs, background photo (or None)."""
    layout = item["layout"]
    width, height = context["canvas"]
    background = context["backgrounds"][layout["background"]["id"]]
    photo = None
    if layout["background"]["photo"] is not None:
        keyed = background["photos"][layout["background"]["photo"]]
        crop = layout["background"].get("crop")  # a scene template's view; default: the centre
        photo = _background(str(sources.resolve(keyed["source"], Path(context["root"]))), keyed["source"],
                            keyed["sha256"], width, height, tuple(crop) if crop else None)
    cutouts = [(_mirrored if o.get("mirrored") else _cutout)(str(Path(context["cutouts_dir"]) / f"{o['cutout']}.png"),
                                                             context["cutout_digests"][o["cutout"]])
               for o in layout["objects"]]
    job = {"boxes": [o["box"] for o in layout["objects"]], "phrase": background["phrase"], "cutouts": cutouts,
           "supports": [o.get("support") for o in layout["objects"]], "light": background.get("light"),
           "background": photo, "seed": item["seed"], "canvas": context["canvas"]}
    if photo is not None and "scene" in background:
        job.update(occlusion(background["scene"], layout, context))
    return job


def occlusion(entry: dict[str, Any], layout: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """The scene's occluders on the canvas (front row, matte) and each object's depth (the
    ground row of its foot), which decide what hides what."""
    scene = with_occluders(entry["template"], entry["sizes"][layout["background"]["photo"]], context["canvas"],
                           Path(context["root"]))
    depths = [scene.ground_row(o["box"][1] + o["box"][3], scene.height_of(o.get("support") or "free"))
              for o in layout["objects"]]
    return {"occluders": [(o.front, o.matte, o.support) for o in scene.occluders], "depths": depths}


def encode(item: dict[str, Any], result: dict[str, Any], context: dict[str, Any]) -> ItemOutput:
    """The image, its masks and the record describing them."""
    layout, item_id = item["layout"], item["id"]
    image_format, quality = context["image_format"], context["jpeg_quality"]
    files = {f"{item_id}.{image_format}": encode_image(result["image"], image_format, quality),
             f"{item_id}.mask.png": encode_mask(result["mask"])}
    concepts = []
    for obj, mask, stat in zip(layout["objects"], result["masks"], result["stats"]):
        name = f"{item_id}.mask.{obj['concept']}.png"
        files[name] = encode_mask(mask)
        concepts.append({"concept": obj["concept"], "mask": name, **stat})
    background = context["backgrounds"][layout["background"]["id"]]
    photo = layout["background"]["photo"]
    record = {"image": f"{item_id}.{image_format}", "mask": f"{item_id}.mask.png", "concepts": concepts,
              "background": {**layout["background"], "phrase": background["phrase"],
                             **(background["photos"][photo] if photo is not None else {"generated": True})}}
    if "unpasted" in result:
        record["unpasted"] = f"{item_id}.unpasted.{image_format}"
        files[record["unpasted"]] = encode_image(result["unpasted"], image_format, quality)
    return record, files


def cutout_digest(cutout: dict[str, Any]) -> str:
    """The blake2b of a cut-out's PNG, as extract's index records it."""
    return cutout["files"][cutout["file"]]["blake2b"]


def image_parts(item: dict[str, Any], document: dict[str, Any], cutouts: dict[str, dict[str, Any]],
                memo: Pruned | None = None) -> dict[str, Any]:
    """What an image is made of, by content: the layout, each cut-out's bytes, the background
    photo's bytes and phrase (less what the composer ignores; `memo` as `without`'s)."""
    layout = item["layout"]
    background = document["backgrounds"][layout["background"]["id"]]
    photo = layout["background"]["photo"]
    made_of = {
        "layout": {"background": layout["background"], "objects": layout["objects"]},
        "cutouts": {o["cutout"]: cutout_digest(cutouts[o["cutout"]]) for o in layout["objects"]},
        "background": {"phrase": background["phrase"],
                       "photo": background["photos"][photo]["sha256"] if photo is not None else None,
                       **({"light": background["light"]} if "light" in background else {}),
                       **({"scene": background["scene"]["template"]} if "scene" in background else {})},
    }
    return {**item["parts"], **without(made_of, document["ignores"], memo)}


def compose_batch(items: list[dict[str, Any]], context: dict[str, Any]) -> list[ItemOutput | ItemError]:
    composer = backends.create("compose", context["backend"], templates_dir=context["templates_dir"],
                               template_digests=context["template_digests"],
                               **context["runtime"])
    outputs: list[ItemOutput | ItemError | None] = [None] * len(items)
    ready = []
    for index, item in enumerate(items):
        try:
            ready.append((index, job_for(item, context)))
        except ItemError as error:
            outputs[index] = error
    results = composer.compose_batch([job for _, job in ready]) if ready else []
    for (index, _), result in zip(ready, results):
        outputs[index] = result if isinstance(result, ItemError) else encode(items[index], result, context)
    return outputs


def run(items_file: Path, layouts_file: Path, cutouts_dir: Path, out_dir: Path, index_file: Path,
        templates_dir: Path = Path("templates"), cutouts_index: Path = Path("build/cutouts.json")) -> None:
    document = read_compiled(items_file)
    settings = load_settings()
    items, skipped = attach(document["items"], read_json(layouts_file), "layouts", "layout", "plan")
    cutouts = {c["id"]: c for c in read_json(cutouts_index)["cutouts"]}
    pruned = Pruned()
    for item in items:
        item["parts"] = image_parts(item, document, cutouts, pruned)
    context = {"backend": document["backend"], "canvas": document["canvas"], "root": str(Path.cwd()),
               "image_format": document["image_format"], "jpeg_quality": document["jpeg_quality"],
               "backgrounds": document["backgrounds"],
               "cutouts_dir": str(cutouts_dir), "templates_dir": str(templates_dir),
               "template_digests": keyed_templates(document["items"]),
               "cutout_digests": {cid: cutout_digest(c) for cid, c in cutouts.items()},
               "runtime": {"device": settings.device, "precision": settings.precision,
                           "torch_compile": settings.torch_compile, "cpu_offload": settings.cpu_offload}}
    result, cache = run_items("compose", items, compose_batch, context, settings, skipped, outputs=out_dir)
    for record in result.records.values():  # the photo where it is now, not where it was when cached
        background = record["background"]
        if background.get("photo") is not None:
            background.update(document["backgrounds"][background["id"]]["photos"][background["photo"]])
    materialize(result, cache, out_dir)
    finish("compose", result, document["backend"]["name"], index_file, {"images": result.entries()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=Path, default=Path("build/compiled/compose.json"))
    parser.add_argument("--layouts", type=Path, default=Path("build/layouts.json"))
    parser.add_argument("--cutouts", type=Path, default=Path("build/cutouts"))
    parser.add_argument("--cutouts-index", type=Path, default=Path("build/cutouts.json"))
    parser.add_argument("--templates", type=Path, default=Path("templates"))
    parser.add_argument("--out", type=Path, default=Path("build/images"))
    parser.add_argument("--index", type=Path, default=Path("build/images.json"))
    args = parser.parse_args()
    run_cli(lambda: run(args.items, args.layouts, args.cutouts, args.out, args.index, args.templates,
                                  args.cutouts_index))


if __name__ == "__main__":
    main()
