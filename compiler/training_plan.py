"""The train stage's build document: one training item per composition.

An item's parts cover everything that determines its weights and are known at compile time:
the backend (base model fingerprint, options, code, libraries), the training caption template
closure and the prompting strategies, the composition's concepts, tokens and background
phrases, its seed and step count, and in `source` mode the photos. The stage adds the rest:
the composition's packed shards (by digest) and its prior images (by key).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from base.keys import item_seed
from compiler.fingerprint import template_closure
from compiler.schema import Recipe
from stages.backends.train.common import PAPER_STEPS

STRATEGIES = ("global_token", "repeat_tokens", "background_prompt")


def global_token(recipe: Recipe, comp_id: str) -> str:
    """The composition's own token: declared, or `<id>`."""
    return recipe.compositions[comp_id].token or f"<{comp_id}>"


def training_document(recipe: Recipe, description: dict[str, Any], fingerprints: Any, templates_dir: Path,
                      photos: dict[str, list[dict[str, str]]]) -> dict[str, Any]:
    """`photos`: each concept's photos ({source, sha256}), the `source` mode's training data."""
    strategy = {name: getattr(recipe.strategy, name) for name in STRATEGIES}
    document = {"backend": description, "template": recipe.strategy.train_caption, "strategy": strategy,
                "token_style": recipe.strategy.token_style, "items": []}
    if description["name"] == "none":
        return document
    params = description["params"]
    shared = {**fingerprints.parts("train", "train", description),
              "templates": template_closure(templates_dir, [recipe.strategy.train_caption]),
              "strategy": strategy, "token_style": recipe.strategy.token_style}
    for comp_id in sorted(recipe.compositions):
        comp = recipe.compositions[comp_id]
        concepts = [{"id": cid, "token": recipe.concepts[cid].token, "class_noun": recipe.concepts[cid].class_noun}
                    for cid in comp.concepts]
        item = {
            "id": comp_id, "concepts": concepts,
            "global_token": global_token(recipe, comp_id) if strategy["global_token"] else "",
            "backgrounds": {bid: recipe.backgrounds[bid].phrase for bid in comp.backgrounds},
            "seed": item_seed(recipe.seed, comp_id, comp.seed, "train"),
            "steps": params["steps"] or PAPER_STEPS[len(concepts)],
            "photos": {cid: photos[cid] for cid in comp.concepts} if params["data"] == "source" else {},
        }
        item["parts"] = {**shared, **{k: v for k, v in item.items() if k != "photos"},
                         "photos": {cid: [p["sha256"] for p in found] for cid, found in item["photos"].items()}}
        document["items"].append(item)
    return document
