"""`dataset/card.html`: the dataset as people look at it, one self-contained page.

Per composition: a seeded random sample of its samples with their captions, a strip of
rejected images with their reasons, counts and keep rates beside Gen4Gen's (MyCanvas), why
images were rejected, and heat maps of where boxes lie and how large they are; for the whole
dataset, the photos' licence, counts per background, caption lengths beside the paper's 17.7
words, the recipe and the software that built it. Thumbnails are inlined (base64) and each
opens its full image, written beside the page in `card/` (stages/card/sample.py); nothing is
fetched: the page opens offline, from a CI artifact or an e-mail. Byte-stable, like
everything pack writes.

Written by pack at the end of a build (recipe option `output.card_html`); `g4g card`
(stages/card/command.py) regenerates it from a dataset folder. The same summary feeds pack's DVC plots.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import jinja2
import yaml
from markupsafe import Markup

from base.untrusted import escape_controls
from stages.card.dataset_reader import IMAGE_EXTENSIONS, DatasetError, DatasetReader, folder_opener, open_regular
from stages.card.figures import colorize, histogram_svg, position_counts, size_counts
from stages.card.readme import dataset_license
from stages.card.sample import FOLDER, SHEET, ComposedImages, full_image, pick, rejected_sample
from stages.runtime.thumbnails import jpeg_uri, png_uri, shrink

SHEET_SIDE = 192  # thumbnail side, pixels: a card of a few compositions stays near 1 MB
# MyCanvas, the Gen4Gen paper's dataset: share of images kept by human rating, by concepts per image
PAPER_KEEP_RATE = {3: 0.53, 4: 0.32, 5: 0.22}
PAPER_CAPTION_WORDS = 17.7  # mean length of its detailed (LLaVA) captions
PAPER_IMAGES = 65  # kept images per composition, about (2,684 over 41)


def paper_keep_rate(concepts: int) -> float:
    return PAPER_KEEP_RATE[min(max(concepts, 3), 5)]


def words(text: str) -> int:
    return len(text.split())


def reason_kind(reason: str) -> str:
    """A reason with its numbers masked, so that rejections of one kind count together
    ("rocket: covers #% of the image, below min_area #%")."""
    return re.sub(r"\d+(?:\.\d+)?", "#", reason)


def _composition(key: str) -> str:
    return key.rsplit("-", 1)[0]


def shard_contents(reader: DatasetReader, name: str, compositions: set[str]) -> dict[str, Any]:
    """What the card needs of one shard: its sample keys, the member extensions of each
    composition, each sample's provenance, and the problems reading it found. Pack keeps it in
    the shard's record, so a card after an edit reads only the shards that changed."""
    keys, fields, provenance, before = set(), {}, {}, len(reader.problems)
    for member in reader.members(name, compositions):
        keys.add(member.key)
        fields.setdefault(_composition(member.key), set()).add(member.extension)
        if member.extension == "json":
            found = reader.provenance(name, member)
            if found is not None and found.get("composition") in compositions:
                provenance[member.key] = found
    return {"keys": sorted(keys), "fields": {cid: sorted(found) for cid, found in sorted(fields.items())},
            "provenance": provenance, "problems": reader.problems[before:]}


def summarize(recipe: dict[str, Any], shards: dict[str, Path], rejected: list[dict[str, Any]],
              rejected_images: ComposedImages | None = None,
              contents: dict[str, dict[str, Any]] | None = None,
              kept_images: Callable[[str], tuple[str, bytes] | None] | None = None) -> dict[str, Any]:
    """What the card and the DVC plots show, read from the shards as written.

    Args:
        recipe: the content of `dataset/recipe.json` (name, key, resolved recipe, backends, software).
        shards: shard file name -> path of its bytes.
        rejected: the rows of `dataset/rejected.jsonl` (key, stage, reasons, background).
        rejected_images: composed images of rejected keys (build/images, or the card's `card/`),
            for the strip of rejected images.
        contents: shard file name -> its `shard_contents`, where known (pack's records); the
            other shards are read. Either way, only the shards holding sampled images are read
            for their images.
        kept_images: a kept sample's image (extension, bytes) by key, where the caller holds
            the bytes its shard has (pack: the composed image, verified); a shard is read for
            the images this does not give.
    """
    planned = recipe["recipe"]["compositions"]
    compositions = {cid: {"concepts": list(planned[cid]["concepts"]), "shards": [], "fields": set(), "samples": [],
                          "sheet": [], "rejected": [], "rejected_sheet": []} for cid in sorted(planned)}
    reader = DatasetReader("card", lambda name: open_regular(shards[name]), digests=False)
    names = reader.shard_names(sorted(shards), "the shard list")
    known = contents or {}
    found = {name: known.get(name) or shard_contents(reader, name, set(compositions)) for name in names}
    problems = [problem for name in names for problem in found[name]["problems"]]
    keys: dict[str, list[str]] = {}
    for name in names:
        for key in found[name]["keys"]:
            keys.setdefault(_composition(key), []).append(key)
    picked = {cid: set(pick(listed, f"{recipe['key']}:{cid}", SHEET)) for cid, listed in keys.items()}

    def wanted(key: str, extension: str) -> bool:
        return extension in IMAGE_EXTENSIONS and key in picked.get(_composition(key), ())

    images: dict[str, tuple[str, bytes]] = {}  # of picked samples only: a shard's images are never all held
    image_reader = DatasetReader("card", reader.open_file, digests=False)
    for name in names:
        shown = [key for key in found[name]["keys"] if key in picked.get(_composition(key), ())]
        given = {key: kept_images(key) for key in shown} if kept_images else {}
        if shown and all(given.get(key) for key in shown):
            images.update(given)
        elif shown:
            for member in image_reader.members(name, set(compositions), wanted):
                if member.data is not None and member.extension in IMAGE_EXTENSIONS \
                        and image_reader.image(name, member) is not None:
                    images[member.key] = (member.extension, member.data)
    for name in names:
        for cid, extensions in found[name]["fields"].items():
            compositions[cid]["fields"].update(extensions)
        provenance = found[name]["provenance"]
        for key in sorted(provenance):
            composition = compositions[provenance[key]["composition"]]
            if name not in composition["shards"]:
                composition["shards"].append(name)
            composition["samples"].append(provenance[key])
            if key in images:
                extension, data = images[key]
                composition["sheet"].append({"key": key, "captions": provenance[key]["captions"], "full": data,
                                             "file": full_image(key, extension), "image": shrink(data, SHEET_SIDE)})
    for row in sorted(rejected, key=lambda r: r["key"]):
        compositions[_composition(row["key"])]["rejected"].append(row)
    for cid, composition in compositions.items():
        for row in rejected_sample(composition["rejected"], f"{recipe['key']}:{cid}:rejected"):
            path = (rejected_images or {}).get(row["key"])
            if path is not None:
                data = path.read_bytes()
                composition["rejected_sheet"].append({"key": row["key"], "reasons": row["reasons"], "full": data,
                                                      "file": full_image(row["key"], path.suffix[1:]),
                                                      "image": shrink(data, SHEET_SIDE)})
    for cid, composition in compositions.items():
        used = ({p["background"]["id"] for p in composition["samples"]}
                | {r.get("background") for r in composition["rejected"]})
        # backgrounds its scene held none of (a recipe.json written by hand may list none)
        composition["unused"] = [bid for bid in planned[cid].get("backgrounds", ()) if bid not in used]
        composition["samples"].sort(key=lambda p: p["key"])
        kept, images = len(composition["samples"]), len(composition["samples"]) + len(composition["rejected"])
        composition.update(kept=kept, images=images, keep_rate=kept / images if images else None,
                           paper_keep_rate=paper_keep_rate(len(composition["concepts"])))
        composition["words"] = {kind: [words(p["captions"][kind]) for p in composition["samples"]]
                                for kind in ("short", "detailed")}
        composition["boxes"] = [[c["box"][0] / p["canvas"][0], c["box"][1] / p["canvas"][1],
                                 c["box"][2] / p["canvas"][0], c["box"][3] / p["canvas"][1]]
                                for p in composition["samples"] for c in p["concepts"]]
    return {"recipe": recipe, "compositions": compositions, "backgrounds": background_counts(compositions),
            "problems": list(dict.fromkeys(problems + image_reader.problems))}  # a shard read twice: once


def background_counts(compositions: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per background: images planned on it that reached the filter's verdict, and kept ones."""
    counts: dict[str, dict[str, int]] = {}
    for composition in compositions.values():
        for sample in composition["samples"]:
            entry = counts.setdefault(sample["background"]["id"], {"images": 0, "kept": 0})
            entry["images"] += 1
            entry["kept"] += 1
        for row in composition["rejected"]:
            if row.get("background"):
                counts.setdefault(row["background"], {"images": 0, "kept": 0})["images"] += 1
    return dict(sorted(counts.items()))


def reasons(rejected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rejections grouped by stage and kind of reason, most frequent first, with one example."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rejected:
        for reason in row["reasons"] or ["(no reason recorded)"]:
            group = groups.setdefault((row["stage"], reason_kind(reason)),
                                      {"stage": row["stage"], "kind": reason_kind(reason), "images": 0,
                                       "example": f"{row['key']}: {reason}"})
            group["images"] += 1
    return sorted(groups.values(), key=lambda g: (-g["images"], g["stage"], g["kind"]))


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


PAGE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ recipe.name }}: dataset card</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1180px; padding: 0 1em; color: #222; }
h1 { margin-bottom: .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; } .muted { color: #666; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.totals { display: flex; gap: 1em; flex-wrap: wrap; margin: 1em 0; }
.totals div { border: 1px solid #ddd; border-radius: 6px; padding: .4em .9em; }
.totals b { display: block; font-size: 20px; }
.sheet { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 10px; }
.sheet figure { margin: 0; } .sheet img { width: 100%; height: auto; display: block; }
.sheet figcaption { font-size: 12px; } .sheet .detailed { color: #666; font-size: 11px; }
.sheet .reason { color: #a33; font-size: 11px; } .licence b a { color: inherit; }
.figures { display: flex; gap: 2em; flex-wrap: wrap; align-items: flex-start; }
.figures figure { margin: 0; } .heat { width: 192px; height: 192px; image-rendering: pixelated; border: 1px solid #ccc; display: block; }
figcaption { font-size: 12px; color: #555; max-width: 420px; }
pre { background: #f7f7f7; padding: .8em; overflow: auto; max-height: 480px; font-size: 12px; }
code { background: #f3f3f3; padding: 0 .2em; }
</style></head><body>
<h1>{{ recipe.name }}</h1>
<p class="muted">A Gen4Gen-style multi-concept dataset built by g4g from recipe <code>{{ recipe.name }}</code>
(key <code>{{ recipe.key }}</code>): composed images of personal concepts, each with its soft masks, a short and a
detailed caption and its provenance. "Paper" marks the figures of MyCanvas, the Gen4Gen paper's dataset
(41 compositions, 2,684 images kept by human rating).</p>
<p class="licence">Licence: <b>{% if licence.get("license_link") %}<a href="{{ licence.license_link }}">{{ licence.license_name }}</a>{% else %}{{ licence.get("license_name") or licence.license }}{% endif %}</b>.
{% if licence.sources %}The images derive from the recipe's photos: {% for what, name in licence.sources %}{{ what | replace("`", "") }} {{ name or "(not stated)" }}{{ "; " if not loop.last else "." }}{% endfor %}{% endif %}</p>
{% if cutout_sheet %}<p><a href="{{ cutout_sheet }}">The cut-outs</a>: every view of every concept, as the images use it.</p>{% endif %}
<div class="totals">
<div><b>{{ totals.kept }}</b>samples</div>
<div><b>{{ compositions | length }}</b>compositions</div>
<div><b>{{ totals.shards }}</b>shards</div>
<div><b>{{ percent(totals.keep_rate) }}</b>kept of {{ totals.images }} images</div>
<div><b>{{ number(totals.detailed) }}</b>words per detailed caption (paper {{ paper_words }})</div>
</div>
<h2>Compositions</h2>
<table><tr><th>Composition</th><th>Concepts</th><th>Images</th><th>Kept (paper &asymp; {{ paper_images }})</th>
<th>Keep rate</th><th>Paper's keep rate</th><th>Shards</th><th>Words, short / detailed</th></tr>
{% for name, c in compositions.items() %}<tr><td><a href="#{{ name }}">{{ name }}</a></td><td>{{ c.concepts | join(", ") }}</td>
<td class="n">{{ c.images }}</td><td class="n">{{ c.kept }}</td><td class="n">{{ percent(c.keep_rate) }}</td>
<td class="n">{{ percent(c.paper_keep_rate) }}</td><td class="n">{{ c.shards | length }}</td>
<td class="n">{{ number(mean(c.words.short)) }} / {{ number(mean(c.words.detailed)) }}</td></tr>
{% endfor %}</table>
<p class="muted">Keep rate: share of the planned images the automatic filter kept (reasons below each composition).
The paper's humans kept 53% of images with up to three concepts, 32% with four, 22% with five.</p>
<h2>Backgrounds</h2>
<table class="backgrounds"><tr><th>Background</th><th>Images judged</th><th>Kept</th><th>Keep rate</th></tr>
{% for name, b in backgrounds.items() %}<tr><td>{{ name }}</td><td class="n">{{ b.images }}</td><td class="n">{{ b.kept }}</td>
<td class="n">{{ percent(b.kept / b.images if b.images else None) }}</td></tr>
{% endfor %}</table>
<h2>Caption lengths</h2>
<div class="figures">{{ histograms.short }}{{ histograms.detailed }}</div>
{% for name, c in compositions.items() %}
<h2 id="{{ name }}">{{ name }}</h2>
<p>{{ c.concepts | join(" + ") }} &middot; {{ c.kept }} of {{ c.images }} images kept ({{ percent(c.keep_rate) }};
paper {{ percent(c.paper_keep_rate) }}) &middot; {{ c.shards | join(", ") or "no shard" }}</p>
{% for bid in c.unused %}<p class="muted">{{ bid }}: 0 of {{ c.images }} images: the planner found no place there for its concepts (why: reports/plan.json, `g4g validate`)</p>{% endfor %}
{% if c.sheet %}<div class="sheet" data-composition="{{ name }}">
{% for s in c.sheet %}<figure class="sample"><a href="{{ s.file }}"><img src="{{ s.uri }}" alt="{{ s.key }}" width="{{ s.width }}" height="{{ s.height }}"></a>
<figcaption><b>{{ s.key }}</b> {{ s.captions.short }}<div class="detailed">{{ s.captions.detailed }}</div></figcaption></figure>
{% endfor %}</div><p class="muted">{% if c.kept > c.sheet | length %}A random sample of {{ c.sheet | length }} of {{ c.kept }} samples
(seeded by the recipe: the same on every build of it); {% endif %}each thumbnail opens its full image.</p>
<div class="figures">
<figure><img class="heat" src="{{ c.position }}" alt="box positions in {{ name }}"><figcaption>Where boxes lie: how many
of the {{ c.boxes | length }} boxes cover each part of the canvas (yellow: most, {{ c.position_peak }}).</figcaption></figure>
<figure><img class="heat" src="{{ c.size }}" alt="box sizes in {{ name }}"><figcaption>Box sizes: width (left to
right) by height (bottom to top), 0-100% of the canvas side in 5% steps (yellow: most, {{ c.size_peak }}).</figcaption></figure>
</div>{% else %}<p>No sample kept.</p>{% endif %}
{% if c.rejected_sheet %}<h3>Rejected</h3><div class="sheet rejected" data-composition="{{ name }}">
{% for s in c.rejected_sheet %}<figure class="reject"><a href="{{ s.file }}"><img src="{{ s.uri }}" alt="{{ s.key }} (rejected)" width="{{ s.width }}" height="{{ s.height }}"></a>
<figcaption><b>{{ s.key }}</b>{% for r in s.reasons %}<div class="reason">{{ r }}</div>{% endfor %}</figcaption></figure>
{% endfor %}</div><p class="muted">A random sample of {{ c.rejected_sheet | length }} of the {{ c.rejected | length }} rejected images, with the filter's reasons.</p>{% endif %}
{% if c.reasons %}<table><tr><th>Stage</th><th>Reason</th><th>Images</th><th>Example</th></tr>
{% for r in c.reasons %}<tr><td>{{ r.stage }}</td><td>{{ r.kind }}</td><td class="n">{{ r.images }}</td><td>{{ r.example }}</td></tr>
{% endfor %}</table>{% else %}<p class="muted">No image rejected.</p>{% endif %}
{% endfor %}
{% if cutout_sheet %}<h2 id="cutouts">Cut-outs</h2>
<p><a href="cutouts.png"><img src="cutouts.png" alt="every view's cut-out on a checkerboard, black and white" style="max-width: 100%"></a></p>
<p class="muted">Each concept's views as the dataset pastes them, on a checkerboard, black and white, with the extract stage's
figures: see-through share of the interior, the model's unsure share, detached blobs dropped, holes filled and kept, edge band.</p>{% endif %}
<h2>Recipe and software</h2>
<table><tr><th>Stage</th><th>Backend</th><th>Version</th><th>Parameters</th></tr>
{% for kind, b in recipe.backends | dictsort %}<tr><td>{{ kind }}</td><td>{{ b.name }}</td><td>{{ b.version }}</td><td><code>{{ json(b.params) }}</code></td></tr>
{% endfor %}</table>
<table><tr><th>Software</th><th>Version</th></tr>
{% for name, version in recipe.software | dictsort %}<tr><td>{{ name }}</td><td>{{ version }}</td></tr>
{% endfor %}</table>
<details><summary>The resolved recipe</summary><pre>{{ resolved }}</pre></details>
<p class="muted">Files: <code>*.tar</code> WebDataset shards, <code>README.md</code> the Hugging Face card and loader
configs, <code>manifest.jsonl</code> one row per sample, <code>rejected.jsonl</code> every image left out and why,
<code>recipe.json</code> the recipe. Regenerate this page with <code>g4g card</code>.</p>
</body></html>
""")


def page(summary: dict[str, Any]) -> str:
    """The card as HTML."""
    compositions = {}
    for name, c in summary["compositions"].items():
        position, size = position_counts(c["boxes"]), size_counts(c["boxes"])
        compositions[name] = {
            **c, "reasons": reasons(c["rejected"]),
            **{sheet: [{**s, "uri": jpeg_uri(s["image"]), "width": s["image"].width, "height": s["image"].height}
                       for s in c[sheet]] for sheet in ("sheet", "rejected_sheet")},
            "position": png_uri(colorize(position)), "position_peak": int(position.max()),
            "size": png_uri(colorize(size)), "size_peak": int(size.max()),
        }
    every = {kind: [n for c in compositions.values() for n in c["words"][kind]] for kind in ("short", "detailed")}
    kept, images = sum(c["kept"] for c in compositions.values()), sum(c["images"] for c in compositions.values())
    detailed_marks = {"mean": _mean(every["detailed"]), "paper": PAPER_CAPTION_WORDS}
    histograms = {
        "short": Markup(histogram_svg(every["short"], "Short captions (words)",
                                      {"mean": _mean(every["short"])} if every["short"] else {})),
        "detailed": Markup(histogram_svg(every["detailed"], "Detailed captions (words)",
                                         {k: v for k, v in detailed_marks.items() if v is not None})),
    }
    recipe = summary["recipe"]
    return PAGE.render(
        recipe=recipe, compositions=compositions, histograms=histograms, paper_words=PAPER_CAPTION_WORDS,
        licence=dataset_license(recipe["recipe"]), backgrounds=summary["backgrounds"],
        cutout_sheet=summary.get("cutout_sheet"),  # a page of the cut-outs beside the card, when there is one
        paper_images=PAPER_IMAGES, mean=_mean, percent=_percent, number=_number,
        json=lambda value: json.dumps(value, sort_keys=True),
        resolved=yaml.safe_dump(recipe["recipe"], sort_keys=True, allow_unicode=True, width=100),
        totals={"kept": kept, "images": images, "keep_rate": kept / images if images else None,
                "shards": sum(len(c["shards"]) for c in compositions.values()), "detailed": _mean(every["detailed"])})


def read_dataset(dataset: Path) -> dict[str, Any]:
    """The summary of a packed dataset folder (its shards, rejected.jsonl and recipe.json),
    read as a dataset from someone else (stages/card/dataset_reader.py), and the rejected images
    pack wrote beside its card."""
    reader = DatasetReader(str(dataset), folder_opener(dataset))
    recipe = reader.recipe()
    rejected = reader.rows("rejected.jsonl", ("key", "stage"))
    for row in rejected:
        if not (isinstance(row.get("reasons"), list) and all(isinstance(r, str) for r in row["reasons"])
                and _composition(row["key"]) in recipe["recipe"]["compositions"]):
            raise DatasetError(f"{dataset}: rejected.jsonl: the row of {escape_controls(repr(row['key']), limit=80)} "
                               f"has no list of reasons or names no composition of the recipe")
    shards = reader.shard_names(reader.json("sizes.json"), "sizes.json")
    summary = summarize(recipe, {name: dataset / name for name in shards}, rejected,
                        ComposedImages(dataset / FOLDER, IMAGE_EXTENSIONS))
    summary["cutout_sheet"] = (dataset / "cutouts.png").is_file()  # pack writes it (stages/card/cutout_sheet.py)
    return summary
