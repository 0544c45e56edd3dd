"""Expand a validated recipe into the build plan: one document per stage listing every work
item with its content key.

A key covers everything that determines the item's output: input bytes, upstream keys, the
backend's name, version and parameters, the canvas. So editing one composition changes only
its own keys, and every other item is reused.
"""

from __future__ import annotations

import dataclasses
from importlib import metadata
from pathlib import Path
from typing import Any

from compiler import __version__, sources
from compiler.keys import content_key, file_sha256, item_seed
from compiler.schema import Recipe

SOFTWARE = ("numpy", "pillow", "rembg", "onnxruntime", "webdataset", "jinja2")


def _hash_files(references: list[str], root: Path, memo: dict[str, str]) -> list[dict[str, str]]:
    out = []
    for ref in references:
        if ref not in memo:
            memo[ref] = file_sha256(sources.resolve(ref, root))
        out.append({"source": ref, "sha256": memo[ref]})
    return out


def _expand_all(patterns: list[str], root: Path, where: str) -> list[str]:
    found: list[str] = []
    for index, pattern in enumerate(patterns):
        for ref in sources.expand(pattern, root, f"{where}[{index}]"):
            if ref not in found:
                found.append(ref)
    return found


def _unique_ids(prefix: str, references: list[str]) -> list[str]:
    """`concept/stem` ids; a stem seen twice gets `-2`, `-3`, ... in reference order."""
    ids, seen = [], {}
    for ref in references:
        stem = Path(ref).stem.replace(".", "_")
        seen[stem] = seen.get(stem, 0) + 1
        ids.append(f"{prefix}/{stem}" if seen[stem] == 1 else f"{prefix}/{stem}-{seen[stem]}")
    return ids


def software_versions() -> dict[str, str]:
    versions = {"g4g": __version__}
    for package in SOFTWARE:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def build(
    recipe: Recipe,
    backends: dict[str, dict[str, Any]],
    root: Path,
    templates_dir: Path,
) -> dict[str, dict[str, Any]]:
    """The per-stage build documents for `recipe` (keys: extract, plan, compose, caption, score, pack)."""
    memo: dict[str, str] = {}
    canvas = [recipe.output.resolution, recipe.output.resolution]

    extract_items, cutouts_of = [], {}
    for cid in sorted(recipe.concepts):
        concept = recipe.concepts[cid]
        refs = _expand_all(concept.images, root, f"concepts.{cid}.images")
        files = _hash_files(refs, root, memo)
        cutouts_of[cid] = []
        for item_id, file in zip(_unique_ids(cid, refs), files):
            key = content_key("extract", item_id, file["sha256"], concept.cutout, backends["extract"])
            extract_items.append({"id": item_id, "key": key, "concept": cid, "cutout": concept.cutout, **file})
            cutouts_of[cid].append({"id": item_id, "key": key})

    background_photos = {
        bid: _hash_files(_expand_all(bg.images, root, f"backgrounds.{bid}.images"), root, memo)
        for bid, bg in sorted(recipe.backgrounds.items())
    }
    templates = {
        role: {"path": getattr(recipe.strategy, f"{role}_caption"),
               "sha256": file_sha256(templates_dir / getattr(recipe.strategy, f"{role}_caption"))}
        for role in ("short", "detailed")
    }

    plan_items, compose_items, caption_items, score_items, pack_items = [], [], [], [], []
    for comp_id in sorted(recipe.compositions):
        comp = recipe.compositions[comp_id]
        concepts = [
            {"id": cid, "class_noun": recipe.concepts[cid].class_noun, "size": recipe.concepts[cid].size,
             "cutouts": cutouts_of[cid]}
            for cid in comp.concepts
        ]
        allowed = [{"id": bid, "phrase": recipe.backgrounds[bid].phrase, "photos": len(background_photos[bid])}
                   for bid in comp.backgrounds]
        photo_hashes = {bid: [p["sha256"] for p in background_photos[bid]] for bid in comp.backgrounds}
        words = {cid: [recipe.concepts[cid].token, recipe.concepts[cid].class_noun] for cid in comp.concepts}
        references = {cid: [v["key"] for v in cutouts_of[cid]] for cid in comp.concepts}
        phrases = {bid: recipe.backgrounds[bid].phrase for bid in comp.backgrounds}
        for index in range(comp.num_images):
            item_id = f"{comp_id}-{index:05d}"
            seed = item_seed(recipe.seed, comp_id, comp.seed, index)
            plan_key = content_key("plan", item_id, seed, concepts, allowed, backends["plan"], canvas)
            image_key = content_key("compose", plan_key, photo_hashes, phrases, backends["compose"], canvas,
                                    recipe.output.image_format, recipe.output.jpeg_quality)
            # Template captions read the layout, not the pixels; a captioner that looks at the
            # image will have to add `image_key` here.
            caption_key = content_key("caption", plan_key, words, phrases, templates,
                                      recipe.strategy.token_style, backends["caption"])
            score_key = content_key("score", plan_key, image_key, backends["score"], canvas, words, phrases,
                                    references)
            plan_items.append({
                "id": item_id, "key": plan_key, "composition": comp_id, "index": index, "seed": seed,
                "concepts": [{"id": c["id"], "class_noun": c["class_noun"], "size": c["size"],
                              "cutouts": [v["id"] for v in c["cutouts"]]} for c in concepts],
                "backgrounds": allowed,
            })
            compose_items.append({"id": item_id, "key": image_key, "seed": seed})
            caption_items.append({"id": item_id, "key": caption_key})
            score_items.append({"id": item_id, "key": score_key})
            pack_items.append({"id": item_id, "keys": {"plan": plan_key, "compose": image_key,
                                                       "caption": caption_key, "score": score_key}})

    recipe_dict = dataclasses.asdict(recipe)
    concepts_public = {
        cid: {"token": c.token, "class_noun": c.class_noun} for cid, c in sorted(recipe.concepts.items())
    }
    return {
        "extract": {"backend": backends["extract"], "items": extract_items},
        "plan": {"backend": backends["plan"], "canvas": canvas, "items": plan_items},
        "compose": {
            "backend": backends["compose"], "canvas": canvas, "image_format": recipe.output.image_format,
            "jpeg_quality": recipe.output.jpeg_quality,
            "backgrounds": {bid: {"phrase": recipe.backgrounds[bid].phrase, "photos": photos}
                            for bid, photos in background_photos.items()},
            "items": compose_items,
        },
        "caption": {
            "backend": backends["caption"], "templates": templates,
            "token_style": recipe.strategy.token_style, "concepts": concepts_public,
            "backgrounds": {bid: bg.phrase for bid, bg in sorted(recipe.backgrounds.items())},
            "items": caption_items,
        },
        "score": {
            "backend": backends["score"], "canvas": canvas,
            "concepts": {cid: {"class_noun": recipe.concepts[cid].class_noun,
                               "references": [item["source"] for item in extract_items if item["concept"] == cid]}
                         for cid in sorted(recipe.concepts)},
            "backgrounds": {bid: bg.phrase for bid, bg in sorted(recipe.backgrounds.items())},
            "items": score_items,
        },
        "pack": {
            "name": recipe.name, "recipe": recipe_dict, "recipe_key": content_key(recipe_dict),
            "shard_size": recipe.output.shard_size, "backends": backends,
            "concepts": concepts_public, "software": software_versions(), "items": pack_items,
        },
    }
