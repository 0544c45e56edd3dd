"""The `evaluate` stage's build document: what to generate and how to measure it.

Per composition: its concepts (token, class noun, reference photos by sha256), its bin (<=3,
4, 5 concepts), the evaluation prompts rendered now (Jinja in the sandbox; each sets the
`background` that TI-CLIP compares with), and one item per (prompt, sample) with its seed.
The stage adds the trained model (its content key and checkpoint) to each item's parts, so
images are keyed on model, checkpoint, prompt, seed and sampler options only, and their
measurements on the image bytes, concepts and metric options only: changing a metric option
re-measures without painting anything again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from base import sources
from base.errors import RecipeError
from base.keys import item_seed
from compiler.fingerprint import code_and_environment, weights_fingerprint
from compiler.schema import Recipe
from compiler.training_plan import STRATEGIES, global_token
from stages import backends
from stages.backends.evaluate import sampling
from stages.caption import concept_name
from stages.metrics.aggregate import concept_bin, paper_row
from stages.templating import Templates

DEFAULT_PROMPT = "prompts/evaluate.j2"
GENERATION_MODULES = ("stages.evaluate", "stages.backends.evaluate.sampling")


def training_setting(recipe: Recipe, backends_config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """How the models were trained and measured, and which row of the paper's Table 1 that is
    (only a Custom Diffusion training has one). Strings only: `dvc metrics show` and
    `dvc exp show` drop lists."""
    train = backends_config["train"]
    data = train["params"].get("data")
    strategies = [name for name in STRATEGIES if getattr(recipe.strategy, name)]
    evaluate = backends_config["evaluate"]["params"]
    return {"train": train["name"], "data": data, "strategies": "+".join(strategies) or "none",
            "paper_row": paper_row(data, strategies) if train["name"] == "custom-diffusion" else "",
            "checkpoints": evaluate.get("checkpoints", ""), "protocol": protocol(evaluate)}


def protocol(params: dict[str, Any]) -> str:
    """The sampling and metric options in one line: rows that differ in it are not comparable."""
    if "detector" not in params:
        return ""
    return (f"{params['sampler']} {params['steps']} steps, guidance {params['guidance_scale']}, eta {params['eta']}, "
            f"{params['resolution']}px; {params['detector']} threshold {params['detection_threshold']}; "
            f"{params['embedder']} ({params['embedder_weights']})")


def render_prompts(recipe: Recipe, comp_id: str, templates: Templates) -> list[dict[str, str]]:
    """The composition's evaluation prompts, each {text, background, baseline}, in the sandbox.
    `baseline` is the same prompt with class nouns in place of the tokens and no composition
    token: what the untrained base model paints, the same in every experiment on the recipe."""
    comp = recipe.compositions[comp_id]
    style = recipe.strategy.token_style
    concepts = [{"id": cid, "token": recipe.concepts[cid].token, "class_noun": recipe.concepts[cid].class_noun,
                 "name": concept_name(recipe.concepts[cid].token, recipe.concepts[cid].class_noun, style)}
                for cid in comp.concepts]
    context = {
        "composition": comp_id,
        "seed": item_seed(recipe.seed, "evaluate-prompt", comp_id, comp.seed),
        "concepts": concepts,
        "global_token": global_token(recipe, comp_id) if recipe.strategy.global_token else "",
        "training_backgrounds": [recipe.backgrounds[bid].phrase for bid in comp.backgrounds],
    }
    nouns = {**context, "global_token": "",
             "concepts": [{**c, "token": c["class_noun"], "name": c["class_noun"]} for c in concepts]}
    inline = [(f"compositions.{comp_id}.eval_prompts[{i}]", text) for i, text in enumerate(comp.eval_prompts)]
    default = [(f"template {templates.directory / DEFAULT_PROMPT} (for composition {comp_id})", None)]
    prompts = []
    for where, text in inline or default:
        text_, background = _render(templates, where, text, context)
        prompts.append({"text": text_, "background": background,
                        "baseline": _render(templates, where, text, nouns)[0]})
    return prompts


def _render(templates: Templates, where: str, text: str | None, context: dict[str, Any]) -> tuple[str, str]:
    """(prompt, background) of one evaluation prompt (`text`: inline Jinja, None: the default template)."""
    try:
        template = templates.load(DEFAULT_PROMPT) if text is None else templates.environment.from_string(text)
        module = template.make_module(context)
        rendered = " ".join(str(module).split())
        background = getattr(module, "background", None)
    except Exception as error:  # syntax, undefined variables, sandbox refusals: the prompt's fault
        raise RecipeError(f"{where}: {type(error).__name__}: {error}", key=where if text is not None else None) from None
    if not rendered or not isinstance(background, str) or not background.strip():
        raise RecipeError(
            f"{where}: an evaluation prompt must render text and set `background`, the text TI-CLIP compares "
            f"each image with, e.g. '{{% set background = \"on a beach\" %}}a photo of "
            f"{{{{ concepts | map(attribute=\"name\") | join(\" and \") }}}} {{{{ background }}}}'",
            key=where if text is not None else None)
    return rendered, " ".join(background.split())


def _references(recipe: Recipe, cid: str, fingerprints: Any) -> list[dict[str, str]]:
    found: list[str] = []
    for index, pattern in enumerate(recipe.concepts[cid].images):
        found += [ref for ref in sources.expand(pattern, fingerprints.root, f"concepts.{cid}.images[{index}]")
                  if ref not in found]
    return [{"source": ref, "sha256": fingerprints.memo.sha256(sources.resolve(ref, fingerprints.root))}
            for ref in found]


def evaluation_document(recipe: Recipe, backends_config: dict[str, dict[str, Any]], fingerprints: Any,
                        templates_dir: Path) -> dict[str, Any]:
    """build/compiled/evaluate.json: compositions with concepts, prompts and seeds, the key
    parts of generation and of measurement, and one item per (composition, prompt, sample)."""
    description = backends_config["evaluate"]
    document: dict[str, Any] = {"backend": description, "setting": training_setting(recipe, backends_config),
                                "items": []}
    if description["name"] == "none":
        return document
    module = backends.module("evaluate", description["name"])
    params = description["params"]
    generation = {"backend": {"name": description["name"], "version": description["version"],
                              "params": {k: params[k] for k in module.GENERATION}},
                  **code_and_environment(GENERATION_MODULES, sampling.LIBRARIES, fingerprints.memo)}
    measurement = {**fingerprints.parts("evaluate", "evaluate", description),
                   "backend": {"name": description["name"], "version": description["version"],
                               "params": {k: params[k] for k in module.MEASUREMENT}}}
    templates = Templates(templates_dir)
    compositions = {}
    for comp_id in sorted(recipe.compositions):
        comp = recipe.compositions[comp_id]
        prompts = render_prompts(recipe, comp_id, templates)
        compositions[comp_id] = {
            "bin": concept_bin(len(comp.concepts)),
            "concepts": [{"id": cid, "token": recipe.concepts[cid].token, "class_noun": recipe.concepts[cid].class_noun,
                          "references": _references(recipe, cid, fingerprints)} for cid in comp.concepts],
            "prompts": prompts,
        }
        for p_index, prompt in enumerate(prompts):
            for sample in range(params["samples_per_prompt"]):
                seed = item_seed(recipe.seed, "evaluate", comp_id, comp.seed, p_index, sample)
                document["items"].append({
                    "id": f"{comp_id}/p{p_index}-s{sample}", "composition": comp_id, "prompt": p_index,
                    "sample": sample, "seed": seed,
                    "parts": {**generation, "prompt": prompt["text"], "seed": seed}})
    document.update(compositions=compositions, measurement=measurement, sampler=generation["backend"]["params"])
    if params["baseline"]:
        option = "backends.evaluate.baseline_model" if params["baseline_model"] else "backends.train.model"
        base = params["baseline_model"] or backends_config["train"]["params"].get("model", "")
        if not base:
            raise RecipeError("backends.evaluate.baseline_model: baseline: true with training off needs the base model "
                              "to score (a diffusers folder or hub id)", key="backends.evaluate.baseline_model")
        document["baseline"] = {"base": base, "option": option,
                                "weights": weights_fingerprint(base, fingerprints.memo, fingerprints.root)}
    return document
