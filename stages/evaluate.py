"""Stage `evaluate`: Gen4Gen's protocol on the trained models (paper Sec. 3.5 and Table 1).

Reads  build/compiled/evaluate.json (per composition: prompts, seeds, concepts, key parts),
       trained/<composition>/model.json and its weights (the train stage), the concepts'
       reference photos.
Writes evaluation/<composition>/<variant>-p<prompt>-s<sample>.png   every generated image
       reports/evaluate_grids/<composition>.jpg   per variant and prompt, a row of its samples (DVC image plot)
       evaluation/rows.jsonl                one row per image: prompt, seed, scores, per-concept detections
       evaluation/compositions.json         per composition CP-CLIP vs TI-CLIP of the trained models (DVC plot)
       evaluation/base_model.json           the same for the base model (empty without `baseline: true`)
       evaluation/summary.json              every mean: per bin, per composition, per checkpoint; the
                                            setting (training, protocol) and the paper's Table 1 values
       metrics/evaluate.json                DVC metrics: CP-CLIP / TI-CLIP per bin (<=3, 4, 5 concepts)
A variant is a trained model's checkpoint (`step-<N>`: the final one, or every saved one with
`checkpoints: all`) or the untrained base model (`base`, with `baseline: true`), which paints
the prompt with class nouns in place of the tokens: one fixed row, the same images in every
experiment on the recipe (they are keyed on that prompt, the seed, sampler and base weights). Images and
their measurements are separate cached items (`evaluate-generate`, `evaluate-measure`).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from base import sources
from base.errors import ItemError
from base.files import dumps_json, read_json, write_folder, write_json
from base.settings import load_settings
from stages import backends
from stages.backends.evaluate import sampling
from stages.backends.train.trained import read_model
from stages.metrics.aggregate import means, summarize
from stages.runtime.cache import ItemCache
from stages.runtime.images import encode_png
from stages.runtime.runner import ItemOutput, StageResult, materialize, run_cli, run_items

BASE = "base"
THUMBNAIL = 256  # grid cell side in pixels at most
PLOT_FILES = {"trained": "compositions.json", BASE: "base_model.json"}  # the scatter plot's sources, one per model


def model_variants(document: dict[str, Any], models_dir: Path
                   ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str], dict[str, str]]:
    """Per composition, what to generate from (trained checkpoints, the base model); the
    compositions left out, and checkpoints that cannot be evaluated, each with the reason."""
    params = document["backend"]["params"]
    trained_on = document["setting"]["train"] != "none"
    variants: dict[str, list[dict[str, Any]]] = {}
    left_out: dict[str, str] = {}
    notes: dict[str, str] = {}
    for comp_id in document["compositions"]:
        found = []
        model_dir = models_dir / comp_id
        if trained_on and (model_dir / "model.json").is_file():
            model = read_model(model_dir)
            steps = [model["steps"]]
            if params["checkpoints"] == "all":
                steps = [step for step in model["checkpoints"] if step == model["steps"]
                         or (model_dir / "checkpoints" / f"{step:07d}").is_dir()]
                if len(steps) < len(model["checkpoints"]):
                    notes[comp_id] = (f"checkpoints: all, but {model_dir} keeps only the weights of steps {steps} of "
                                      f"{model['checkpoints']}; train with backends.train.keep_checkpoints: true")
            for step in steps:
                final = step == model["steps"]
                found.append({"name": f"step-{step}", "checkpoint": step, "final": final,
                              "source": {"model_dir": str(model_dir), "checkpoint": None if final else step},
                              "parts": {"model": model["key"], "checkpoint": step}})
        elif trained_on:
            left_out[comp_id] = f"no trained model: {model_dir / 'model.json'} is missing (see reports/train.json)"
        if "baseline" in document:
            base = document["baseline"]
            found.insert(0, {"name": BASE, "checkpoint": None, "final": False,
                             "source": {"base": base["base"], "option": base["option"]},
                             "parts": {"model": BASE, "base": base["base"], "base_weights": base["weights"]}})
        if found:
            variants[comp_id] = found
    return variants, left_out, notes


def generation_items(document: dict[str, Any], variants: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One item per requested (prompt, sample) and variant of its composition."""
    items = []
    for request in document["items"]:
        comp_id = request["composition"]
        prompt = document["compositions"][comp_id]["prompts"][request["prompt"]]
        for variant in variants.get(comp_id, []):
            text = prompt["baseline"] if variant["name"] == BASE else prompt["text"]
            items.append({
                "id": f"{comp_id}/{variant['name']}-p{request['prompt']}-s{request['sample']}",
                "composition": comp_id, "variant": variant["name"], "checkpoint": variant["checkpoint"],
                "final": variant["final"], "prompt": request["prompt"], "sample": request["sample"],
                "seed": request["seed"], "text": text, "source": variant["source"],
                "parts": {**request["parts"], "prompt": text, **variant["parts"]},
            })
    return sorted(items, key=lambda item: item["id"])


def generate_batch(items: list[dict[str, Any]], context: dict[str, Any]) -> list[ItemOutput | ItemError]:
    """Images for a batch of items, one pipeline call per model source."""
    sampler = sampling.sampler_for(context["sampler"], context["device"], context["precision"])
    outputs: list[ItemOutput | ItemError] = []
    for _, group in itertools.groupby(items, key=lambda item: json.dumps(item["source"], sort_keys=True)):
        group = list(group)
        images = sampler.generate(group[0]["source"], [item["text"] for item in group], [item["seed"] for item in group])
        for item, image in zip(group, images):
            name = f"{item['id']}.png"
            record = {key: item[key] for key in ("composition", "variant", "checkpoint", "final", "prompt", "sample",
                                                 "seed", "text")}
            outputs.append(({**record, "image": name}, {name: encode_png(image)}))
    return outputs


def measurement_items(document: dict[str, Any], generated: StageResult, cache: ItemCache) -> list[dict[str, Any]]:
    """One item per generated image: its bytes (by digest), the concepts and the background text."""
    root = Path.cwd()
    items = []
    for record in generated.entries():
        comp = document["compositions"][record["composition"]]
        background = comp["prompts"][record["prompt"]]["background"]
        concepts = [{"id": c["id"], "class_noun": c["class_noun"],
                     "references": [str(sources.resolve(r["source"], root)) for r in c["references"]]}
                    for c in comp["concepts"]]
        looks = [{"id": c["id"], "class_noun": c["class_noun"], "references": [r["sha256"] for r in c["references"]]}
                 for c in comp["concepts"]]
        items.append({"id": record["id"], "image": str(cache.file(record["key"], record["image"])),
                      "concepts": concepts, "text": background,
                      "parts": {**document["measurement"], "image": record["files"][record["image"]]["blake2b"],
                                "text": background, "concepts": looks}})
    return items


def measure_batch(items: list[dict[str, Any]], context: dict[str, Any]) -> list[ItemOutput | ItemError]:
    backend = backends.create("evaluate", context["backend"], device=context["device"])
    metrics = backend.measure_batch([{key: item[key] for key in ("image", "concepts", "text")} for item in items])
    return [({**found, "models": backend.models}, {}) for found in metrics]


def image_rows(generated: StageResult, measured: StageResult, document: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per measured image: what was asked, what was found."""
    rows = []
    for item_id, image in generated.records.items():
        scores = measured.records.get(item_id)
        if scores is None:
            continue
        prompt = document["compositions"][image["composition"]]["prompts"][image["prompt"]]
        rows.append({"id": item_id, "composition": image["composition"], "variant": image["variant"],
                     "checkpoint": image["checkpoint"], "final": image["final"], "prompt": image["text"],
                     "background": prompt["background"], "sample": image["sample"], "seed": image["seed"],
                     "image": image["image"], **{k: scores[k] for k in ("cp_clip", "cp_clip_assigned",
                                                                        "identity_mixing", "ti_clip", "concepts")}})
    return rows


def metrics_document(rows: list[dict[str, Any]], document: dict[str, Any]) -> dict[str, Any]:
    """metrics/evaluate.json: final weights per bin and composition; every checkpoint and the
    best one per composition with `checkpoints: all`; the base model with `baseline: true`."""
    bins_of = {comp_id: comp["bin"] for comp_id, comp in document["compositions"].items()}
    setting = document["setting"]
    trained = [row for row in rows if row["variant"] != BASE]
    final = [row for row in trained if row["final"]]
    result: dict[str, Any] = {"evaluated": True, "setting": setting, **summarize(final, bins_of, setting["paper_row"])}
    for row in final:
        result["compositions"][row["composition"]]["checkpoint"] = row["checkpoint"]
    if document["backend"]["params"]["checkpoints"] == "all" and trained:
        per_checkpoint: dict[str, dict[str, Any]] = {}
        for row in trained:
            per_checkpoint.setdefault(row["composition"], {}).setdefault(str(row["checkpoint"]), []).append(row)
        result["checkpoints"] = {comp: {step: means(found) for step, found in sorted(steps.items(), key=lambda s: int(s[0]))}
                                 for comp, steps in sorted(per_checkpoint.items())}
        best = {comp: max(steps, key=lambda step: (result["checkpoints"][comp][step]["cp_clip"], -int(step)))
                for comp, steps in per_checkpoint.items()}
        selected = summarize([row for row in trained if str(row["checkpoint"]) == best[row["composition"]]], bins_of,
                             setting["paper_row"])
        for comp, step in best.items():
            selected["compositions"][comp]["checkpoint"] = int(step)
        result["best_checkpoint"] = {"selected_on": "the evaluation prompts (selection on the test set)", **selected}
    baseline = [row for row in rows if row["variant"] == BASE]
    if baseline:
        result["baseline"] = summarize(baseline, bins_of)
    return result


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """metrics/evaluate.json, the DVC metrics: results only, per bin CP-CLIP and TI-CLIP of the
    final weights, the best checkpoints and the base model. How the models were made (`setting`)
    and the paper's numbers stay in evaluation/summary.json (`g4g table` reads them there): they
    differ between Table 1's experiments, so as metrics each would be a column of
    `dvc exp show --only-changed` repeating what the params and the experiment names say."""
    def bins(section: dict[str, Any]) -> dict[str, Any]:
        return {name: {key: found[key] for key in ("cp_clip", "ti_clip") if key in found}
                for name, found in section.get("bins", {}).items()}

    result = {"evaluated": True, "bins": bins(summary)}
    for section in ("best_checkpoint", "baseline"):
        if section in summary:
            result[section] = {"bins": bins(summary[section])}
    return result


def plot_rows(metrics: dict[str, Any], variant: str) -> bytes:
    """CP-CLIP vs TI-CLIP per composition of one model (trained: final weights; base), a DVC plot."""
    section = metrics if variant == "trained" else metrics.get("baseline", {})
    rows = [{"composition": comp_id, "model": variant, "bin": found["bin"], "cp_clip": found["cp_clip"],
             "ti_clip": found["ti_clip"]} for comp_id, found in section.get("compositions", {}).items()]
    return dumps_json(rows).encode("utf-8")


def grids(generated: StageResult, cache: ItemCache, resolution: int) -> dict[str, bytes]:
    """<composition>.jpg: one row per variant and prompt, one column per sample (thumbnails)."""
    side = min(resolution, THUMBNAIL)
    cells: dict[str, dict[tuple[str, int], dict[int, str]]] = {}
    for record in generated.entries():
        row = cells.setdefault(record["composition"], {}).setdefault((record["variant"], record["prompt"]), {})
        row[record["sample"]] = str(cache.file(record["key"], record["image"]))
    files = {}
    for comp_id, rows in sorted(cells.items()):
        columns = max(max(row) for row in rows.values()) + 1
        canvas = Image.new("RGB", (columns * side, len(rows) * side), (255, 255, 255))
        for y, (_, row) in enumerate(sorted(rows.items(), key=lambda r: (r[0][0] != BASE, r[0]))):
            for x, path in row.items():
                with Image.open(path) as image:
                    canvas.paste(image.convert("RGB").resize((side, side), Image.Resampling.LANCZOS), (x * side, y * side))
        buffer = io.BytesIO()
        canvas.save(buffer, format="JPEG", quality=85)
        files[f"{comp_id}.jpg"] = buffer.getvalue()
    return files


def nothing_to_evaluate(document: dict[str, Any]) -> str | None:
    """Why there is nothing to evaluate, or None."""
    params = document["backend"]["params"]
    if document["backend"]["name"] == "none":
        return "evaluation is off (backends.evaluate.name: none); set it to clip to run Gen4Gen's protocol"
    if document["setting"]["train"] == "none" and not params["baseline"]:
        return ("training is off (backends.train.name: none), so there are no models to evaluate; turn training on, "
                "or set backends.evaluate.baseline: true and baseline_model to score the base model alone")
    return None


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def run(items_file: Path, models_dir: Path, out_dir: Path, metrics_file: Path,
        reports_dir: Path = Path("reports")) -> None:
    document = read_json(items_file)
    settings = load_settings()
    backend = document["backend"]["name"]
    why_not = nothing_to_evaluate(document)
    if why_not:
        print(f"evaluate: nothing to evaluate: {why_not}", file=sys.stderr)
        materialize(StageResult(), ItemCache(Path(settings.cache_dir), "evaluate-generate"), out_dir,
                    {"rows.jsonl": b"", **{name: plot_rows({}, variant) for variant, name in PLOT_FILES.items()}}, dvc_cached=True)
        write_folder(reports_dir / "evaluate_grids", {})  # the image plots DVC declares: none
        write_json(metrics_file, {"evaluated": False, "reason": why_not})
        write_json(reports_dir / "evaluate.json", {**StageResult().report("evaluate", backend), "note": why_not})
        return
    variants, left_out, notes = model_variants(document, models_dir)
    skipped = {item["id"]: f"composition {item['composition']}: {left_out[item['composition']]}"
               for item in document["items"] if item["composition"] in left_out}
    runtime = {"device": settings.device, "precision": settings.precision}
    generated, cache = run_items("evaluate-generate", generation_items(document, variants), generate_batch,
                                 {**runtime, "sampler": document["sampler"]}, settings, skipped)
    measured, _ = run_items("evaluate-measure", measurement_items(document, generated, cache), measure_batch,
                            {**runtime, "backend": document["backend"]}, settings)
    rows = image_rows(generated, measured, document)
    metrics = metrics_document(rows, document)
    if measured.records:
        metrics["models"] = next(iter(measured.records.values()))["models"]
    extra = {"rows.jsonl": _jsonl(rows), "summary.json": dumps_json(metrics).encode("utf-8"),
             **{name: plot_rows(metrics, variant) for variant, name in PLOT_FILES.items()}}
    materialize(generated, cache, out_dir, extra, dvc_cached=True)
    write_folder(reports_dir / "evaluate_grids", grids(generated, cache, document["sampler"]["resolution"]))
    write_json(metrics_file, headline(metrics))
    report = {**generated.report("evaluate", backend), "measure": measured.report("evaluate-measure", backend),
              "left_out": dict(sorted(left_out.items())), "notes": dict(sorted(notes.items()))}
    write_json(reports_dir / "evaluate.json", report)
    for stage, result in (("evaluate (generate)", generated), ("evaluate (measure)", measured)):
        print(f"{stage}: {len(result.records) + len(result.failures)} items: {result.computed} computed, "
              f"{result.reused} reused, {len(result.failures)} failed ({result.seconds:.1f}s)", file=sys.stderr)
        for item_id, reason in sorted(result.failures.items()):
            print(f"  failed {item_id}: {reason}", file=sys.stderr)
    for comp_id, reason in sorted({**notes, **left_out}.items()):
        print(f"  {comp_id}: {reason}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=Path, default=Path("build/compiled/evaluate.json"))
    parser.add_argument("--models", type=Path, default=Path("trained"))
    parser.add_argument("--out", type=Path, default=Path("evaluation"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/evaluate.json"))
    args = parser.parse_args()
    run_cli(lambda: run(args.items, args.models, args.out, args.metrics))


if __name__ == "__main__":
    main()
