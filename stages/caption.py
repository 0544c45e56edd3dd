"""Stage `caption`: describe every laid-out image in words.

Reads  build/compiled/caption.json (templates, tokens, phrases), build/layouts.json, and for a
       backend that looks at the images (`vlm`, `vlm-openai`) build/images.json + build/images/.
Writes build/captions.json: per image `short` (the paper's "<cat1> and <dog1> in the garden")
       and `detailed` (where each concept is: left/right, in front of/behind, relative size);
       VLM backends add `vlm` (the model's description, tokens substituted) and `recaption`
       (raw reply, request key, concepts not mentioned, cut, rejected replies).
       The report adds caption lengths beside the paper's.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path
from typing import Any

from base.compiled import read_compiled
from base.errors import ItemError
from base.files import read_json
from base.settings import load_settings
from stages import backends
from stages.templating import keyed_templates
from stages.layout import area, horizontal_position, intersection
from stages.runtime.runner import ItemOutput, attach, finish, run_cli, run_items

PAPER_CAPTION_WORDS = {"mean_words": 17.7, "over_20_words": 0.30}  # Gen4Gen's captions (LLaVA-1.5)
EXAMPLES = 5  # captions shown per kind of problem in the report


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


def caption_batch(items: list[dict[str, Any]], context: dict[str, Any]) -> list[ItemOutput | ItemError]:
    """Caption a batch at once (a VLM runs it as one model batch)."""
    captioner = backends.create("caption", context["backend"], templates_dir=context["templates_dir"],
                                template_digests=context["template_digests"],
                                templates=context["templates"], cache_dir=context["cache_dir"], root=context["root"],
                                device=context["device"], precision=context["precision"],
                                fingerprint=context["weights"])
    aliases = {cid: info["aliases"] for cid, info in context["concepts"].items()}
    samples = []
    for item in items:
        layout = item["layout"]
        sample = {"id": item["id"], "seed": item["seed"], "aliases": aliases,
                  "scene": describe_scene(layout, context["concepts"],
                                          context["backgrounds"][layout["background"]["id"]], context["token_style"])}
        if "image" in item:
            sample.update(image=str(Path(context["images_dir"]) / item["image"]["image"]), files=item["image"]["files"])
        samples.append(sample)
    return [output if isinstance(output, ItemError) else (output, {}) for output in captioner.caption_batch(samples)]


def statistics(captions: list[dict[str, Any]], failures: dict[str, str], recaptioning: bool) -> dict[str, Any]:
    """Caption lengths beside the paper's; for VLM captions, concepts the model did not
    mention, captions cut to fit CLIP, and rejected replies by reason."""
    lengths = {}
    for role in ("short", "detailed", "vlm"):
        words = [len(c[role].split()) for c in captions if role in c]
        if words:
            lengths[role] = {"captions": len(words), "mean_words": round(sum(words) / len(words), 2),
                             "over_20_words": round(sum(w > 20 for w in words) / len(words), 3)}
    out: dict[str, Any] = {"caption_words": lengths, "paper_caption_words": PAPER_CAPTION_WORDS}
    recaptioned = [c for c in captions if "recaption" in c]
    if recaptioning:
        missing = [c for c in recaptioned if c["recaption"]["not_mentioned"]]
        rejected = Counter(r["rejected"] for c in recaptioned for r in c["recaption"]["rejected"])
        for reason in failures.values():
            rejected.update(re.findall(r"\[(\w+)\]", reason))
        out["recaption"] = {
            "concepts_not_mentioned": sum(len(c["recaption"]["not_mentioned"]) for c in missing),
            "captions_missing_a_concept": len(missing),
            "not_mentioned_examples": [{"id": c["id"], "not_mentioned": c["recaption"]["not_mentioned"],
                                        "reply": c["recaption"]["reply"][:300], "vlm": c["vlm"]}
                                       for c in missing[:EXAMPLES]],
            "cut_to_fit_clip": sum(c["recaption"]["cut"] for c in recaptioned),
            "ambiguous_mentions": sum(c["recaption"]["ambiguous"] for c in recaptioned),
            "max_clip_tokens": max((c["recaption"]["clip_tokens"] for c in recaptioned), default=0),
            "rejected_replies": dict(sorted(rejected.items())),
        }
    return out


def run(items_file: Path, layouts_file: Path, templates_dir: Path, out_file: Path,
        images_file: Path = Path("build/images.json"), images_dir: Path = Path("build/images")) -> None:
    document = read_compiled(items_file)
    settings = load_settings()
    items, skipped = attach(document["items"], read_json(layouts_file), "layouts", "layout", "plan")
    reads_images = getattr(backends.module("caption", document["backend"]["name"]), "READS_IMAGES", False)
    if reads_images:
        items, skipped_images = attach(items, read_json(images_file), "images", "image", "compose")
        skipped = {**skipped, **skipped_images}
    for item in items:  # what a caption reads of the layout: who stands where, on which background
        layout = item["layout"]
        item["parts"] = {**item["parts"], "layout": {
            "canvas": layout["canvas"], "background": layout["background"]["id"],
            "objects": [{"concept": o["concept"], "box": o["box"]} for o in layout["objects"]]}}
        if reads_images:  # and the pixels it looks at: a recomputed image recaptions
            item["parts"]["image"] = item["image"]["files"][item["image"]["image"]]["blake2b"]
    context = {"backend": document["backend"], "templates_dir": str(templates_dir),
               "template_digests": keyed_templates(document["items"]),
               "templates": document["templates"],
               "concepts": document["concepts"], "backgrounds": document["backgrounds"],
               "token_style": document["token_style"], "images_dir": str(images_dir),
               "cache_dir": settings.cache_dir, "root": str(Path.cwd()), "device": settings.device,
               "precision": settings.precision,
               "weights": document["items"][0]["parts"].get("weights", {}) if document["items"] else {}}
    result, _ = run_items("caption", items, caption_batch, context, settings, skipped)
    captions = result.entries()
    finish("caption", result, document["backend"]["name"], out_file, {"captions": captions},
           **statistics(captions, result.failures, reads_images))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=Path, default=Path("build/compiled/caption.json"))
    parser.add_argument("--layouts", type=Path, default=Path("build/layouts.json"))
    parser.add_argument("--templates", type=Path, default=Path("templates"))
    parser.add_argument("--images", type=Path, default=Path("build/images.json"),
                        help="read only by backends that look at the images (vlm, vlm-openai)")
    parser.add_argument("--images-dir", type=Path, default=Path("build/images"))
    parser.add_argument("--out", type=Path, default=Path("build/captions.json"))
    args = parser.parse_args()
    run_cli(lambda: run(args.items, args.layouts, args.templates, args.out, args.images, args.images_dir))


if __name__ == "__main__":
    main()
