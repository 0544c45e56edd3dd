"""Expand a validated recipe into the build plan: one document per stage listing every work
item with the parts of its content key known before the build.

Parts cover everything that determines the item's output: code, libraries, weights and
templates (see `compiler.fingerprint`), the backend's name, version and options, the item's
own inputs. So editing one composition changes only its own keys, and every other item is
reused.
"""

from __future__ import annotations

import dataclasses
from importlib import metadata
from pathlib import Path
from typing import Any

from PIL import Image

from base import sources
from base.compiled import COMMON
from base.errors import RecipeError
from base.keys import canonical_json, content_key, item_seed, without
from base.untrusted import escape_controls
from compiler import __version__
from compiler.fingerprint import FileMemo, code_and_environment, template_closure, weights_fingerprint
from compiler.schema import DATASET_KINDS, Recipe
from compiler.evaluation_plan import evaluation_document
from compiler.training_plan import STRATEGIES, training_document
from stages import backends
from stages.backends.extract import alpha_description

EXIF_ORIENTATION = 0x0112
SOFTWARE = ("numpy", "pillow", "rembg", "onnxruntime", "webdataset", "jinja2")


def _hash_files(references: list[str], root: Path, hashes: dict[str, str], memo: FileMemo) -> list[dict[str, str]]:
    out = []
    for ref in references:
        if ref not in hashes:
            hashes[ref] = memo.sha256(sources.resolve(ref, root))
        out.append({"source": ref, "sha256": hashes[ref]})
    return out


def _expand_all(patterns: list[str], root: Path, where: str) -> list[str]:
    found: list[str] = []
    for index, pattern in enumerate(patterns):
        for ref in sources.expand(pattern, root, f"{where}[{index}]"):
            if ref not in found:
                found.append(ref)
    return found


def _unique_ids(prefix: str, references: list[str]) -> list[str]:
    """`concept/stem` ids, one per reference: a stem seen again gets the first free `-2`, `-3`,
    ... that is no other photo's stem (`x.jpg`, `x.png`, `x-2.jpg` -> x, x-3, x-2), in
    reference order. Control characters in a name are escaped (`\\x1b`): ids reach terminals."""
    stems = [escape_controls(Path(ref).stem.replace(".", "_")) for ref in references]
    natural, used, ids = set(stems), set(), []
    for stem in stems:
        name, number = stem, 1
        while name in used or (number > 1 and name in natural):
            number += 1
            name = f"{stem}-{number}"
        used.add(name)
        ids.append(f"{prefix}/{name}")
    return ids


FILTER_CHECKS = ("min_area", "min_visible")  # the score stage's checks a planner can plan for


def scene_entry(background: Any, photos: list[dict[str, str]], root: Path) -> dict[str, Any]:
    """A background's scene template with the pixel size of each of its photos, which the
    template's photo fractions are mapped through onto the canvas."""
    sizes = []
    for photo in photos:
        with Image.open(sources.resolve(photo["source"], root)) as image:  # reads the header only
            turned = image.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # shown rotated by 90 degrees
            sizes.append(list(reversed(image.size)) if turned else list(image.size))
    template = {key: value for key, value in dataclasses.asdict(background.scene).items() if key != "light"}
    for key in ("occluders", "holes", "fov_deg"):
        if template[key] in ([], None):
            del template[key]  # a template without them is keyed as before they existed
    return {"template": template, "sizes": sizes}  # the light is compose's alone (`scene_light`)


def view_geometry(cid: str, concept: Any) -> dict[str, Any]:
    """What a scene template places a concept by: its real size, its placement and (when the
    recipe gives any) the camera elevation of its views, by cut-out id."""
    elevations = {f"{cid}/{stem}": view.elevation_deg for stem, view in sorted(concept.views.items())
                  if view.elevation_deg}
    return {"size_cm": concept.size_cm, "placement": concept.placement,
            **({"elevations": elevations} if elevations else {})}


def hash_masks(template: dict[str, Any], bid: str, root: Path, hashes: dict[str, str],
               memo: FileMemo) -> dict[str, Any]:
    """The template with each occluder's mask PNG named by its source and content digest, so
    that the items on its background (plan, compose) are keyed by the mask's bytes."""
    occluders = []
    for index, occluder in enumerate(template.get("occluders", [])):
        if occluder.get("mask"):
            where = f"backgrounds.{bid}.scene.occluders[{index}].mask"
            refs = sources.expand(occluder["mask"], root, where)
            if len(refs) != 1:
                raise RecipeError(f"{where}: '{occluder['mask']}' matches {len(refs)} files; valid: one PNG", key=where)
            occluder = {**occluder, "mask": _hash_files(refs, root, hashes, memo)[0]}
        occluders.append(occluder)
    return {**template, "occluders": occluders} if occluders else template


def scene_light(background: Any) -> dict[str, Any]:
    """`{"light": ...}` of a background whose scene template declares one, else nothing: a
    background without a light composes (and is keyed) as before lights existed."""
    light = background.scene.light if background.scene is not None else None
    return {"light": dataclasses.asdict(light)} if light is not None else {}


MODEL_FIELDS = {"strategy": ("train_caption", *STRATEGIES), "compositions": ("token", "eval_prompts")}


def dataset_recipe(recipe: Recipe, backends_config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The recipe as the dataset records it: without what only training and evaluation read, or
    what only changes how fast a backend runs, so that changing those neither re-packs the
    dataset nor retrains from it."""
    values = dataclasses.asdict(recipe)
    values["backends"] = {kind: {option: value for option, value in values["backends"][kind].items()
                                 if option not in backends.throughput_options(kind, backends_config[kind]["name"])}
                          for kind in DATASET_KINDS}
    for name in MODEL_FIELDS["strategy"]:
        del values["strategy"][name]
    for composition in values["compositions"].values():
        for name in MODEL_FIELDS["compositions"]:
            del composition[name]
    return values


def software_versions() -> dict[str, str]:
    versions = {"g4g": __version__}
    for package in SOFTWARE:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


class Fingerprints:
    """What each (stage, backend) pair runs, computed once per compile: code, environment,
    weights and templates, as key parts."""

    def __init__(self, root: Path, templates_dir: Path, memo: FileMemo):
        self.root, self.templates_dir, self.memo = root, templates_dir, memo
        self._done: dict[str, dict[str, Any]] = {}

    def parts(self, stage: str, kind: str | None = None, description: dict[str, Any] | None = None) -> dict[str, Any]:
        """The key parts shared by every item of `stage` run by the backend `description`."""
        memo = canonical_json([stage, kind, description])
        if memo in self._done:
            return self._done[memo]
        modules, libraries = [f"stages.{stage}"], ()
        parts: dict[str, Any] = {}
        if kind is not None and description is not None:
            module = backends.module(kind, description["name"])
            modules.append(module.__name__)
            libraries = getattr(module, "LIBRARIES", ())
            parts["backend"] = backends.keyed(kind, description)
            params = description["params"]
            if hasattr(module, "weights"):
                parts["weights"] = {ref: weights_fingerprint(ref, self.memo, self.root)
                                    for ref in module.weights(params)}
            templates = [params[o] for o, folder in backends.file_options(kind, description["name"]).items()
                         if folder == "templates" and params[o]]
            if templates:
                parts["templates"] = template_closure(self.templates_dir, templates)
        self._done[memo] = {**code_and_environment(modules, libraries, self.memo), **parts}
        return self._done[memo]


def build(
    recipe: Recipe,
    backends_config: dict[str, dict[str, Any]],
    root: Path,
    templates_dir: Path,
    memo: FileMemo | None = None,
) -> dict[str, dict[str, Any]]:
    """The per-stage build documents for `recipe` (keys: extract, plan, compose, caption, score, pack,
    train, evaluate).

    Every item carries `parts`: what is known now of everything that determines it; what the
    items of a composition have in common is written once (`base.compiled`). Stages add
    what upstream produced (the layout, the image, a cut-out's digest) before keying, so an
    upstream recompute that gives the same output stops there (early cutoff). Parts a backend
    does not read (its module's `IGNORES`) are left out, so changing them recomputes nothing.
    """
    memo = memo or FileMemo(None)
    fingerprints = Fingerprints(root, templates_dir, memo)
    hashes: dict[str, str] = {}
    canvas = [recipe.output.resolution, recipe.output.resolution]
    ignores = {kind: frozenset(getattr(backends.module(kind, d["name"]), "IGNORES", ()))
               for kind, d in backends_config.items()}

    extract_items, cutouts_of = [], {}
    for cid in sorted(recipe.concepts):
        concept = recipe.concepts[cid]
        refs = _expand_all(concept.images, root, f"concepts.{cid}.images")
        files = _hash_files(refs, root, hashes, memo)
        description = alpha_description(backends_config["extract"]) if concept.cutout else backends_config["extract"]
        shared = fingerprints.parts("extract", "extract", description)
        cutouts_of[cid] = []
        ids = _unique_ids(cid, refs)
        unknown = sorted(set(concept.views) - {i.split("/", 1)[1] for i in ids})
        if unknown:
            where = f"concepts.{cid}.views.{unknown[0]}"
            raise RecipeError(f"{where}: no photo of {cid} is named '{unknown[0]}'; valid: "
                              f"{', '.join(i.split('/', 1)[1] for i in ids)} (a photo's file name without its "
                              f"extension)", key=where)
        for item_id, file in zip(ids, files):
            extract_items.append({"id": item_id, "concept": cid, "cutout": concept.cutout, **file,
                                  "parts": {**shared, "id": item_id, "photo": file["sha256"]}})
            cutouts_of[cid].append(item_id)

    background_photos = {
        bid: _hash_files(_expand_all(bg.images, root, f"backgrounds.{bid}.images"), root, hashes, memo)
        for bid, bg in sorted(recipe.backgrounds.items())
    }
    scenes = {bid: scene_entry(bg, background_photos[bid], root)
              for bid, bg in sorted(recipe.backgrounds.items()) if bg.scene is not None}
    for bid, entry in scenes.items():
        entry["template"] = hash_masks(entry["template"], bid, root, hashes, memo)
    templates = {role: getattr(recipe.strategy, f"{role}_caption") for role in ("short", "detailed")}
    caption_parts = fingerprints.parts("caption", "caption", backends_config["caption"])
    stage_parts = {
        "plan": fingerprints.parts("plan", "plan", backends_config["plan"]),
        "compose": fingerprints.parts("compose", "compose", backends_config["compose"]),
        "caption": {**caption_parts, "templates": {**caption_parts.get("templates", {}),  # + a VLM's instruction
                                                   **template_closure(templates_dir, templates.values())},
                    "token_style": recipe.strategy.token_style},
        "score": fingerprints.parts("score", "score", backends_config["score"]),
    }
    image_format = {"image_format": recipe.output.image_format}
    if recipe.output.image_format != "png":
        image_format["quality"] = recipe.output.jpeg_quality

    plan_items, compose_items, caption_items, score_items, pack_items = [], [], [], [], []
    plan_compositions = {}  # what the plan items of a composition share, written once
    common: dict[str, dict[str, Any]] = {"plan": {}, "compose": {}, "caption": {}, "score": {}}  # base.compiled
    for comp_id in sorted(recipe.compositions):
        comp = recipe.compositions[comp_id]
        comp_scenes = {bid: scenes[bid] for bid in comp.backgrounds if bid in scenes}
        geometry = {cid: view_geometry(cid, recipe.concepts[cid]) for cid in comp.concepts} if comp_scenes else {}
        concepts = [
            {"id": cid, "class_noun": recipe.concepts[cid].class_noun, "size": recipe.concepts[cid].size,
             **geometry.get(cid, {}), "cutouts": cutouts_of[cid],
             **({"mirror": True} if recipe.concepts[cid].mirror else {})}
            for cid in comp.concepts
        ]
        allowed = [{"id": bid, "phrase": recipe.backgrounds[bid].phrase, "photos": len(background_photos[bid]),
                    **({"scene": comp_scenes[bid]} if bid in comp_scenes else {})}
                   for bid in comp.backgrounds]
        plan_compositions[comp_id] = {"concepts": concepts, "backgrounds": allowed}
        placed = {"geometry": geometry} if comp_scenes else {}  # the score stage adds its image's scene
        words = {cid: {"token": recipe.concepts[cid].token, "class_noun": recipe.concepts[cid].class_noun,
                       "aliases": list(recipe.concepts[cid].aliases)} for cid in comp.concepts}
        looks = {cid: {"class_noun": recipe.concepts[cid].class_noun,
                       "references": [e["sha256"] for e in extract_items if e["concept"] == cid]}
                 for cid in comp.concepts}
        phrases = {bid: recipe.backgrounds[bid].phrase for bid in comp.backgrounds}
        # What every item of the composition has in common, less what the backend ignores,
        # written once (`base.compiled`): a stage merges each item's own parts (below) over it.
        common["plan"][comp_id] = {**stage_parts["plan"], "canvas": canvas, "composition": comp_id}
        common["compose"][comp_id] = {**stage_parts["compose"], "canvas": canvas, "format": image_format}
        common["caption"][comp_id] = without({**stage_parts["caption"], "concepts": words, "phrases": phrases},
                                             ignores["caption"])
        common["score"][comp_id] = without({**stage_parts["score"], "references": looks, "phrases": phrases,
                                            "canvas": canvas, **placed}, ignores["score"])
        for index in range(comp.num_images):
            item_id = f"{comp_id}-{index:05d}"
            seed = item_seed(recipe.seed, comp_id, comp.seed, index)
            own = {"id": item_id, "seed": seed}
            plan_items.append({"id": item_id, "composition": comp_id, "index": index, "seed": seed,
                               "common": comp_id, "parts": {**own, "index": index}})
            compose_items.append({"id": item_id, "seed": seed, "common": comp_id, "parts": own})
            caption_items.append({"id": item_id, "seed": seed, "common": comp_id,
                                  "parts": without(own, ignores["caption"])})
            score_items.append({"id": item_id, "common": comp_id, "parts": without(own, ignores["score"])})
            pack_items.append({"id": item_id})

    recipe_dict = dataset_recipe(recipe, backends_config)
    concepts_public = {
        cid: {"token": c.token, "class_noun": c.class_noun} for cid, c in sorted(recipe.concepts.items())
    }
    return {
        "extract": {"backend": backends_config["extract"], "items": extract_items},
        "plan": {"backend": backends_config["plan"], "canvas": canvas, "ignores": sorted(ignores["plan"]),
                 "filter": {k: v for k, v in backends_config["score"]["params"].items() if k in FILTER_CHECKS},
                 "compositions": plan_compositions, COMMON: common["plan"], "items": plan_items},
        "compose": {
            "backend": backends_config["compose"], "canvas": canvas, "image_format": recipe.output.image_format,
            "jpeg_quality": recipe.output.jpeg_quality, "ignores": sorted(ignores["compose"]),
            "backgrounds": {bid: {"phrase": recipe.backgrounds[bid].phrase, "photos": photos,
                                  **scene_light(recipe.backgrounds[bid]),
                                  **({"scene": scenes[bid]} if "occluders" in scenes.get(bid, {}).get("template", {})
                                     else {})}
                            for bid, photos in background_photos.items()},
            COMMON: common["compose"], "items": compose_items,
        },
        "caption": {
            "backend": backends_config["caption"], "templates": templates,
            "token_style": recipe.strategy.token_style,
            "concepts": {cid: {"token": c.token, "class_noun": c.class_noun, "aliases": list(c.aliases)}
                         for cid, c in sorted(recipe.concepts.items())},
            "backgrounds": {bid: bg.phrase for bid, bg in sorted(recipe.backgrounds.items())},
            COMMON: common["caption"], "items": caption_items,
        },
        "score": {
            "backend": backends_config["score"], "canvas": canvas, "ignores": sorted(ignores["score"]),
            "concepts": {cid: {"class_noun": recipe.concepts[cid].class_noun,
                               "references": [item["source"] for item in extract_items if item["concept"] == cid]}
                         for cid in sorted(recipe.concepts)},
            "backgrounds": {bid: bg.phrase for bid, bg in sorted(recipe.backgrounds.items())},
            "scenes": scenes,
            "geometry": {cid: view_geometry(cid, c) for cid, c in sorted(recipe.concepts.items())},
            COMMON: common["score"], "items": score_items,
        },
        "pack": {
            "name": recipe.name, "recipe": recipe_dict, "recipe_key": content_key(recipe_dict),
            "shard_size": recipe.output.shard_size,
            "backends": {kind: backends.keyed(kind, d) for kind, d in backends_config.items() if kind in DATASET_KINDS},
            "concepts": concepts_public, "software": software_versions(),
            "fingerprint": fingerprints.parts("pack"), "items": pack_items,
        },
        "train": training_document(recipe, backends_config["train"], fingerprints, templates_dir, {
            cid: [{"source": e["source"], "sha256": e["sha256"]} for e in extract_items if e["concept"] == cid]
            for cid in recipe.concepts}),
        "evaluate": evaluation_document(recipe, backends_config, fingerprints, templates_dir),
    }
