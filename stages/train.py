"""Stage `train`: one personalized model per composition (Custom Diffusion or LoRA).

Reads  build/compiled/train.json (items, backend, strategies), dataset/<composition>-*.tar
       (data: dataset) or the concepts' photos (data: source), templates/ (training captions).
Writes trained/<composition>/   weights, token embeddings, model.json, captions, loss curve
                                (see stages/backends/train/trained.py)
       trained/README.md        which models there are, or that training is off
       reports/train.json, reports/train_loss/<composition>.csv

A training is an item like any other: its key covers the composition's shards (by digest) or
photos, its prior images, the base model, the backend and its options, the caption template
and strategies, and the seed, so editing one composition retrains only that one. Prior images
(class images of each noun) are items of their own, shared by every composition with that noun.
A killed training resumes from its last checkpoint (.g4g/train/<key>/).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import shutil
import sys
from pathlib import Path
from typing import Any

from base import sources
from base.errors import ItemError
from base.files import dumps_json, write_folder, write_json
from base.keys import canonical_json, item_seed
from base.settings import Settings, load_settings
from stages import backends
from stages.backends.train import common
from stages.backends.train.text import TOKEN_FILE
from stages.backends.train.trained import base_pipeline, load_base
from stages.caption import concept_name
from stages.card.dataset_reader import IMAGE_EXTENSIONS, DatasetReader, folder_opener
from stages.metrics.pixels import flatten_alpha
from stages.runtime.cache import blake2b_file
from stages.runtime.images import load_image
from stages.runtime.runner import ItemOutput, StageFailed, each_item, materialize, run_cli, run_items
from stages.runtime.torch_device import torch_device, torch_dtype
from stages.templating import Templates

STATE_ROOT = Path(".g4g/train")  # resume points of trainings in progress, by item key
PRIOR_PROMPT = "a photo of a {noun}"
OFF = "Training is off (backends.train.name: none): the build ends with the dataset.\n"


def read_samples(shard: Path, compositions: set[str]) -> list[dict[str, Any]]:
    """A WebDataset shard's samples, in order, as {field: bytes} plus `meta` (the parsed JSON),
    read as a dataset from someone else (`g4g export` reads any revision's): only members named
    as pack names them, each bounded in size, JSON depth and pixels (stages/card/dataset_reader.py);
    anything else is an error naming the member."""
    reader = DatasetReader(shard.parent.name, folder_opener(shard.parent))
    samples: dict[str, dict[str, Any]] = {}
    for member in reader.members(shard.name, compositions, lambda key, extension: True):
        fields = samples.setdefault(member.key, {})
        if member.extension == "json":
            fields["meta"] = reader.provenance(shard.name, member)
        elif member.extension in IMAGE_EXTENSIONS + ("mask.png",) and reader.image(shard.name, member) is None:
            continue
        fields[member.extension] = member.data
    if reader.problems:
        raise ItemError(f"{len(reader.problems)} damaged or unexpected members: " + "; ".join(reader.problems[:3]))
    return list(samples.values())


def training_caption(templates: Templates, template: str, document: dict[str, Any], item: dict[str, Any],
                     caption: str, background: str) -> str:
    concepts = [{**c, "name": concept_name(c["token"], c["class_noun"], document["token_style"])}
                for c in item["concepts"]]
    text = templates.render(template, caption=caption, concepts=concepts, background=background,
                            composition_token=item["global_token"], **document["strategy"])
    return " ".join(text.split())


def instances(item: dict[str, Any], document: dict[str, Any], context: dict[str, Any]) -> list[common.Example]:
    """The composition's training images with their rendered captions."""
    from PIL import Image

    templates, params = Templates(context["templates_dir"]), document["backend"]["params"]
    examples = []
    if params["data"] == "source":
        for concept in item["concepts"]:
            for photo in item["photos"][concept["id"]]:
                image = flatten_alpha(load_image(sources.resolve(photo["source"], Path.cwd()), photo["source"]))
                base = f"{concept['token']} {concept['class_noun']}"
                examples.append(common.Example(image, training_caption(
                    templates, document["template"], document, {**item, "concepts": [concept]}, base, ""),
                    origin=photo["source"]))
        return examples
    for shard in item["shards"]:
        for sample in read_samples(Path(context["dataset_dir"]) / shard, {item["id"]}):
            meta = sample["meta"]
            image_field = next(f for f in ("jpg", "png", "webp") if f in sample)
            image = Image.open(io.BytesIO(sample[image_field])).convert("RGB")
            mask = Image.open(io.BytesIO(sample["mask.png"])).convert("L")
            phrase = item["backgrounds"].get(meta["background"]["id"], "")
            if params["caption"] not in meta["captions"]:
                raise ItemError(f"{item['id']}: sample {meta['key']} has no '{params['caption']}' caption (it has "
                                f"{', '.join(sorted(meta['captions']))}); caption: vlm needs a VLM captioner "
                                f"(backends.caption.name: vlm or vlm-openai)")
            examples.append(common.Example(image, training_caption(
                templates, document["template"], document, item, meta["captions"][params["caption"]], phrase), mask,
                origin=meta["key"]))
    return examples


def priors(item: dict[str, Any], context: dict[str, Any]) -> list[common.Example]:
    from PIL import Image

    examples = []
    for noun in sorted({c["class_noun"] for c in item["concepts"]}):
        for path in context["prior_files"].get(noun, []):
            examples.append(common.Example(Image.open(path).convert("RGB"), PRIOR_PROMPT.format(noun=noun)))
    return examples


def model_files(item: dict[str, Any], document: dict[str, Any], outcome: common.Outcome,
                examples: list[common.Example]) -> dict[str, bytes]:
    """Everything of trained/<composition>/ but the weights: description, captions, curve."""
    params = document["backend"]["params"]
    tokens = tokens_of(item)
    final = max(outcome.checkpoints)
    return {
        "captions.jsonl": "".join(canonical_json({"origin": e.origin, "caption": e.caption}) + "\n" for e in examples).encode(),
        "loss.csv": ("step,loss\n" + "".join(f"{n},{loss:.6f}\n" for n, loss in enumerate(outcome.losses, 1))).encode(),
        "config.json": dumps_json({"backend": document["backend"], "strategy": document["strategy"],
                                   "template": document["template"], "seed": item["seed"],
                                   "steps": item["steps"]}).encode(),
        "model.json": dumps_json({
            "composition": item["id"], "key": item["key"], "base": params["model"],
            "backend": document["backend"]["name"], "global_token": item["global_token"],
            "tokens": {token: " ".join(words) for token, words in tokens.items()},
            "token_files": {token: TOKEN_FILE.format(n) for n, token in enumerate(tokens)},
            "steps": final, "checkpoints": sorted(outcome.checkpoints), "examples": len(examples),
            "resolution": params["resolution"],
        }).encode(),
    }


def folder_files(folder: Path, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}{path.relative_to(folder).as_posix()}": path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


@each_item
def train_item(item: dict[str, Any], context: dict[str, Any]) -> ItemOutput:
    document = context["document"]
    description = document["backend"]
    module = backends.module("train", description["name"])
    params = module.Params(**description["params"])
    examples = instances(item, document, context)
    if not examples:
        raise ItemError(f"{item['id']}: no training images (every sample of the composition was rejected?)")
    settings: Settings = context["settings"]
    device = torch_device(settings.device)
    dtype = torch_dtype(settings.precision, device)
    pipeline = load_base(params.model, "backends.train.model")
    state_dir = STATE_ROOT / item["key"]
    try:
        trainer = common.Trainer(module.method(params, item["seed"]), params, pipeline, common.Run(
            instances=examples, priors=priors(item, context), tokens=tokens_of(item), seed=item["seed"],
            steps=item["steps"], state_dir=state_dir, device=device,
            dtype=None if str(dtype) == "torch.float32" else dtype,
            gradient_checkpointing=settings.gradient_checkpointing))
        overflowing = trainer.text.overflowing([e.caption for e in examples])
        outcome = trainer.fit()
    except (ValueError, FloatingPointError) as error:  # a token that is a word; a diverging loss
        raise ItemError(f"{item['id']}: {error}") from None
    final = max(outcome.checkpoints)
    prefix = f"{item['id']}/"
    files = folder_files(outcome.checkpoints[final], prefix)
    for step, folder in outcome.checkpoints.items():
        if step != final:
            files.update(folder_files(folder, f"{prefix}checkpoints/{step:07d}/"))
    files.update({prefix + name: data for name, data in model_files(item, document, outcome, examples).items()})
    record = {"composition": item["id"], "steps": final, "examples": len(examples), "resumed_from": outcome.resumed_from,
              "final_loss": round(outcome.losses[-1], 6), "truncated_captions": len(overflowing)}
    return record, files


def tokens_of(item: dict[str, Any]) -> dict[str, list[str]]:
    """The new tokens and the words each starts from: its class noun, or for the composition's
    own token every class noun of the composition."""
    tokens = {c["token"]: [c["class_noun"]] for c in item["concepts"]}
    if item["global_token"]:
        tokens[item["global_token"]] = [c["class_noun"] for c in item["concepts"]]
    return tokens


@each_item
def prior_item(item: dict[str, Any], context: dict[str, Any]) -> ItemOutput:
    """One class image painted by the base model from "a photo of a <noun>", seeded."""
    import torch

    settings: Settings = context["settings"]
    device = torch_device(settings.device)
    pipeline = base_pipeline(context["model"], device, torch_dtype(settings.precision, device))
    prior = context["prior"]
    image = pipeline(PRIOR_PROMPT.format(noun=item["noun"]), num_inference_steps=prior["steps"],
                     guidance_scale=prior["guidance_scale"], height=context["resolution"],
                     width=context["resolution"],
                     generator=torch.Generator().manual_seed(item["seed"])).images[0]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"noun": item["noun"]}, {f"{item['noun']}/{item['index']:04d}.png": buffer.getvalue()}


class Processes:
    """This process's share of the work under `accelerate launch` (one process per GPU):
    process r of n computes items r, r+n, ... and commits them to the shared item cache; after
    a barrier every process finds all of them there. Each item is computed exactly as in a
    single process, so the number of GPUs changes no byte. One process: all of it."""

    def __init__(self) -> None:
        from accelerate import PartialState

        self.state = PartialState()
        self.rank, self.count = self.state.process_index, self.state.num_processes

    def settings(self, settings: Settings) -> Settings:
        """Each process on its own device (the launcher's cuda:<local rank>)."""
        return dataclasses.replace(settings, device=str(self.state.device)) if self.count > 1 else settings

    def share(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return items[self.rank::self.count]

    def total(self, count: int) -> int:
        """`count` summed over the processes (all wait here for each other)."""
        from accelerate.utils import gather_object

        return sum(gather_object([count]))


def run_shared(stage: str, items: list[dict[str, Any]], process: Any, context: dict[str, Any], settings: Settings,
               processes: Processes, **options: Any):
    """`run_items` with the items spread over the launched processes; the result lists every
    item (reused from the cache where another process computed it), `computed` across all."""
    if processes.count == 1:
        return run_items(stage, items, process, context, settings, **options)
    mine, _ = run_items(stage, processes.share(items), process, context, settings)
    computed = processes.total(mine.computed)
    result, cache = run_items(stage, items, process, context, settings, **options)
    result.computed, result.reused = computed, len(result.records) - computed
    return result, cache


def prior_images(document: dict[str, Any], settings: Settings, processes: Processes) -> dict[str, list[str]]:
    """Each class noun's prior images (paths), generated as cached items or read from a folder."""
    params = document["backend"]["params"]
    prior = params["prior"]
    nouns = sorted({c["class_noun"] for item in document["items"] for c in item["concepts"]})
    if prior["source"] == "none" or not document["items"]:
        return {}
    if prior["source"] == "folder":
        found = {}
        for noun in nouns:
            folder = Path(prior["folder"]) / noun
            paths = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
            if not paths:
                raise StageFailed(f"train: prior.folder: no images in {folder} for class '{noun}' (jpg, png, webp)")
            found[noun] = [str(p) for p in paths[:prior["num_images"]]]
        return found
    shared = {k: v for k, v in document["items"][0]["parts"].items() if k in ("code", "weights", "environment")}
    items = [{"id": f"{noun}/{index:04d}", "noun": noun, "index": index,
              "seed": item_seed("prior", noun, index),
              "parts": {**shared, "noun": noun, "index": index, "steps": prior["steps"],
                        "guidance_scale": prior["guidance_scale"], "resolution": params["resolution"],
                        "prompt": PRIOR_PROMPT}}
             for noun in nouns for index in range(prior["num_images"])]
    context = {"settings": settings, "model": params["model"], "prior": prior, "resolution": params["resolution"]}
    result, cache = run_shared("train-prior", items, prior_item, context, dataclasses.replace(settings, workers=1),
                               processes)
    if result.failures:
        raise StageFailed("train: prior images: " + "; ".join(f"{k}: {v}" for k, v in sorted(result.failures.items())))
    found: dict[str, list[str]] = {}
    for record in result.entries():
        for name in record["files"]:
            found.setdefault(record["noun"], []).append(str(cache.file(record["key"], name)))
    return found


def attach_data(document: dict[str, Any], dataset_dir: Path) -> dict[str, str]:
    """Give each `dataset`-mode item its composition's shards and key them by digest; returns
    the items without any packed sample (id -> reason)."""
    missing = {}
    if document["backend"]["name"] == "none" or document["backend"]["params"]["data"] != "dataset":
        return missing
    for item in document["items"]:
        item["shards"] = sorted(p.name for p in dataset_dir.glob(f"{item['id']}-*.tar")
                                if p.name[len(item["id"]) + 1:-4].isdigit())
        if not item["shards"]:
            missing[item["id"]] = f"pack: no shard of composition '{item['id']}' in {dataset_dir}"
        item["parts"] = {**item["parts"], "data": {s: blake2b_file(dataset_dir / s) for s in item["shards"]}}
    return missing


def run(items_file: Path, dataset_dir: Path, templates_dir: Path, out_dir: Path,
        reports_dir: Path = Path("reports")) -> None:
    from base.files import read_json

    document = read_json(items_file)
    name = document["backend"]["name"]
    if name == "none":  # training off: no accelerate or torch needed (the demo installs neither)
        materialize_off(out_dir, reports_dir)
        return
    processes = Processes()
    settings = processes.settings(load_settings())
    missing = attach_data(document, dataset_dir)
    prior_files = prior_images(document, settings, processes)
    for item in document["items"]:
        nouns = sorted({c["class_noun"] for c in item["concepts"]})
        item["parts"] = {**item["parts"], "prior": {n: [blake2b_file(Path(p)) for p in prior_files.get(n, [])]
                                                    for n in nouns}}
    ready = [item for item in document["items"] if item["id"] not in missing]
    context = {"document": document, "settings": settings, "templates_dir": str(templates_dir),
               "dataset_dir": str(dataset_dir), "prior_files": prior_files}
    # One training at a time per process: each one uses its whole device.
    result, cache = run_shared("train", ready, train_item, context,
                               dataclasses.replace(settings, workers=1, batch_size=1), processes, skipped=missing)
    if not processes.state.is_main_process:
        return
    for item in ready:
        if item["id"] in result.records:
            shutil.rmtree(STATE_ROOT / item["key"], ignore_errors=True)
    if result.failures or result.skipped:
        problems = {**result.failures, **result.skipped}
        raise StageFailed("train: " + "; ".join(f"{k}: {v}" for k, v in sorted(problems.items())))
    models = "".join(f"- `{r['composition']}/`: {r['examples']} images, {r['steps']} steps, final loss "
                     f"{r['final_loss']:.4f}\n" for r in result.entries())
    materialize(result, cache, out_dir, dvc_cached=True, extra={
        "README.md": f"# Trained models ({name})\n\nLoad one with `g4g sample {out_dir}/<composition> \"prompt\"`.\n\n"
                     f"{models}".encode()})
    write_folder(reports_dir / "train_loss", {
        f"{r['composition']}.csv": cache.file(r["key"], f"{r['composition']}/loss.csv").read_bytes()
        for r in result.entries()})
    report = result.report("train", name, models={r["composition"]: {k: r[k] for k in (
        "steps", "examples", "final_loss", "resumed_from", "truncated_captions")} for r in result.entries()})
    write_json(reports_dir / "train.json", report)
    for r in result.entries():
        if r["truncated_captions"]:
            print(f"train: warning: {r['composition']}: {r['truncated_captions']} of {r['examples']} training captions "
                  f"are longer than the text encoder reads (77 tokens) and lose their end (the strategies come "
                  f"first, so they are kept); see {out_dir}/{r['composition']}/captions.jsonl", file=sys.stderr)
    print(f"train: {len(result.records)} models ({result.computed} trained, {result.reused} reused) "
          f"({result.seconds:.1f}s)", file=sys.stderr)


def materialize_off(out_dir: Path, reports_dir: Path) -> None:
    from stages.runtime.runner import StageResult
    from stages.runtime.cache import ItemCache

    materialize(StageResult(), ItemCache(Path(load_settings().cache_dir), "train"), out_dir,
                extra={"README.md": OFF.encode()}, dvc_cached=True)
    write_folder(reports_dir / "train_loss", {})  # the plots DVC declares: no curves
    write_json(reports_dir / "train.json", {"stage": "train", "backend": "none", "items": 0, "computed": 0,
                                            "reused": 0, "failed": 0, "note": OFF.strip()})
    print(f"train: {OFF.strip()}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=Path, default=Path("build/compiled/train.json"))
    parser.add_argument("--dataset", type=Path, default=Path("dataset"))
    parser.add_argument("--templates", type=Path, default=Path("templates"))
    parser.add_argument("--out", type=Path, default=Path("trained"))
    args = parser.parse_args()
    run_cli(lambda: run(args.items, args.dataset, args.templates, args.out))


if __name__ == "__main__":
    main()
