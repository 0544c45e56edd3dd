"""Stage `score`: the automatic quality filter that replaces the paper's manual 1-5 rating.

Reads  build/compiled/score.json, build/layouts.json, build/images.json (+ build/images/,
       build/cutouts/ and the concepts' reference photos for model-based scorers).
Writes build/scores.json: per image `keep`, `reasons` (each failed check: check, concept,
       message) and per-concept measurements (and image metrics for model-based scorers).
       On a background with a scene template every scorer also checks the geometry: `floating`
       (the silhouette's feet off its ground or surface, or in a hole: the cut-out's foot
       profile from build/cutouts.json), `scale` (size off the perspective's), `blocked`,
       `camera` (a view seen from above where the camera is low).
       The report gives keep rates per number of concepts beside the paper's manual rates.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from base import sources
from base.compiled import read_compiled
from base.errors import ItemError
from base.files import read_json
from base.keys import Pruned, without
from base.settings import load_settings
from stages import backends
from stages.runtime.runner import ItemOutput, attach, finish, run_cli, run_items
from stages.scene import judge, on_canvas

PAPER_KEEP_RATES = {"<=3": 0.53, "4": 0.32, "5": 0.22}  # Gen4Gen's manual rating, 4-5 of 5 kept


def concept_bin(count: int) -> str:
    return "<=3" if count <= 3 else str(count)


def sample_for(item: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Everything a scorer may look at for one image, with file paths resolved."""
    layout = item["layout"]
    cutouts = {o["concept"]: o["cutout"] for o in layout["objects"]}
    concepts = []
    for stat in item["image"]["concepts"]:
        info = context["concepts"][stat["concept"]]
        concepts.append({
            **stat, "class_noun": info["class_noun"], "references": info["references"],
            "cutout": str(Path(context["cutouts_dir"]) / f"{cutouts[stat['concept']]}.png"),
        })
    return {"image": str(Path(context["images_dir"]) / item["image"]["image"]), "canvas": context["canvas"],
            "background": context["backgrounds"][layout["background"]["id"]], "concepts": concepts}


def score_parts(item: dict[str, Any], cutouts: dict[str, dict[str, Any]], ignores: list[str],
                scenes: dict[str, Any], memo: Pruned | None = None) -> dict[str, Any]:
    """What a score reads, by content: the layout, the composed image (its files' digests and
    measurements), the pasted cut-outs (less what the scorer ignores) and the scene template
    of its background, if it has one (so editing a template re-scores that background only;
    `memo` as `without`'s: a template is pruned once, not per image)."""
    layout = item["layout"]
    scene = scenes.get(layout["background"]["id"])
    made_of = {
        **({"scene": scene} if scene else {}),
        "layout": {"background": layout["background"]["id"], "objects": layout["objects"]},
        "image": {k: v for k, v in item["image"].items() if k not in ("id", "key")},
        "cutouts": {o["cutout"]: cutouts[o["cutout"]]["files"][cutouts[o["cutout"]]["file"]]["blake2b"]
                    for o in layout["objects"]},
    }
    return {**item["parts"], **without(made_of, ignores, memo)}


def geometry_reasons(layout: dict[str, Any], context: dict[str, Any]) -> list[dict[str, str]]:
    """Failed scene-template checks (floating, scale, blocked, camera) of a layout on a templated
    background, each object judged by its pasted view (foot profile, mirrored, elevation)."""
    background = layout["background"]
    entry = context["scenes"].get(background["id"])
    if entry is None or background["photo"] is None:
        return []
    memo = context.setdefault("canvas_scenes", {})  # one mapping per photo, not per image
    key = (background["id"], background["photo"])
    if key not in memo:
        memo[key] = on_canvas(entry["template"], entry["sizes"][background["photo"]], context["canvas"])
    scene, reasons = memo[key], []
    for placed in layout["objects"]:
        concept = context["geometry"][placed["concept"]]
        cutout = placed.get("cutout")
        view = {**context.get("views", {}).get(cutout, {}), "mirrored": placed.get("mirrored", False),
                **({"elevation_deg": concept["elevations"][cutout]} if cutout in concept.get("elevations", {}) else {})}
        for check, problem in judge(scene, placed["box"], concept["placement"], concept["size_cm"], view):
            reasons.append({"check": check, "concept": placed["concept"], "message": f"{placed['concept']}: {problem}"})
    return reasons


def score_batch(items: list[dict[str, Any]], context: dict[str, Any]) -> list[ItemOutput | ItemError]:
    scorer = backends.create("score", context["backend"], device=context["device"])
    outputs: list[ItemOutput | ItemError] = []
    for item, result in zip(items, scorer.score_batch([sample_for(item, context) for item in items])):
        reasons = result["reasons"] + geometry_reasons(item["layout"], context)
        outputs.append(({**result, "keep": not reasons, "reasons": reasons}, {}))
    return outputs


def keep_rates(scores: list[dict[str, Any]]) -> dict[str, Any]:
    """Keep rate overall and per concept-count bin, with the paper's manual rates beside them."""
    bins: dict[str, list[bool]] = {}
    for score in scores:
        bins.setdefault(concept_bin(len(score["concepts"])), []).append(score["keep"])
    kept = sum(s["keep"] for s in scores)
    return {
        "kept": kept,
        "rejected": len(scores) - kept,
        "keep_rate": round(kept / len(scores), 4) if scores else None,
        "keep_rate_by_concepts": {b: {"images": len(v), "keep_rate": round(sum(v) / len(v), 4),
                                      "paper_manual": PAPER_KEEP_RATES.get(b)} for b, v in sorted(bins.items())},
        "rejections_by_check": dict(sorted(Counter(r["check"] for s in scores for r in s["reasons"]).items())),
    }


def run(items_file: Path, layouts_file: Path, images_file: Path, out_file: Path,
        images_dir: Path = Path("build/images"), cutouts_dir: Path = Path("build/cutouts"),
        cutouts_index: Path = Path("build/cutouts.json")) -> None:
    document = read_compiled(items_file)
    settings = load_settings()
    items, skipped = attach(document["items"], read_json(layouts_file), "layouts", "layout", "plan")
    items, skipped_images = attach(items, read_json(images_file), "images", "image", "compose")
    cutouts = {c["id"]: c for c in read_json(cutouts_index)["cutouts"]}
    pruned = Pruned()
    for item in items:
        item["parts"] = score_parts(item, cutouts, document["ignores"], document.get("scenes", {}), pruned)
    concepts = {cid: {**info, "references": [str(sources.resolve(ref, Path.cwd())) for ref in info["references"]]}
                for cid, info in document["concepts"].items()}  # resolved once, not per image
    context = {"backend": document["backend"], "canvas": document["canvas"], "concepts": concepts,
               "backgrounds": document["backgrounds"], "device": settings.device,
               "scenes": document.get("scenes", {}), "geometry": document.get("geometry", {}),
               "views": {cid: {"foot": c["foot"]} for cid, c in cutouts.items() if c.get("foot")},
               "images_dir": str(images_dir), "cutouts_dir": str(cutouts_dir)}
    result, _ = run_items("score", items, score_batch, context, settings, {**skipped, **skipped_images})
    scores = result.entries()
    finish("score", result, document["backend"]["name"], out_file, {"scores": scores}, **keep_rates(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=Path, default=Path("build/compiled/score.json"))
    parser.add_argument("--layouts", type=Path, default=Path("build/layouts.json"))
    parser.add_argument("--images", type=Path, default=Path("build/images.json"))
    parser.add_argument("--images-dir", type=Path, default=Path("build/images"))
    parser.add_argument("--cutouts", type=Path, default=Path("build/cutouts"))
    parser.add_argument("--cutouts-index", type=Path, default=Path("build/cutouts.json"))
    parser.add_argument("--out", type=Path, default=Path("build/scores.json"))
    args = parser.parse_args()
    run_cli(lambda: run(args.items, args.layouts, args.images, args.out, args.images_dir, args.cutouts,
                                  args.cutouts_index))


if __name__ == "__main__":
    main()
