"""The diff as one self-contained HTML page: the tables, and before/after thumbnails of samples.

Samples that changed the same way (the same parts, for the same causes; flips for the same
reasons; added or removed in one composition) share one card: an example, how many there are
and a few of their keys. Thumbnails are JPEGs inlined as base64 data URIs, so the page opens
anywhere (a browser, a CI artifact, an e-mail) without the dataset. Rendered by Jinja with
autoescaping: captions, reasons and recipe values are text, never markup.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import jinja2

from compiler.diff.compare import same_change
from compiler.diff.snapshot import Snapshot
from stages.runtime.thumbnails import thumbnail

MAX_CARDS = 120  # cards on one page; the rest are counted
OTHER_KEYS = 5  # keys of a group named beside its example
VISUAL_PARTS = {"layout", "photos", "image", "masks"}

PAGE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>g4g diff {{ a.label }} -> {{ b.label }}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.changed { font-weight: bold; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.card { border: 1px solid #ccc; padding: .5em; width: 540px; }
.pair { display: flex; gap: 12px; }
.pair figure { margin: 0; width: 256px; }
.pair img { max-width: 256px; max-height: 256px; display: block; }
.pair .none { width: 256px; height: 128px; background: #eee; display: flex; align-items: center;
  justify-content: center; color: #777; }
figcaption { font-size: 12px; color: #555; }
</style></head><body>
<h1>g4g diff <code>{{ a.label }}</code> &rarr; <code>{{ b.label }}</code></h1>
{% if not report.differs %}<p>No differences in the dataset or its recipe.</p>{% endif %}
{% if report.recipe %}<h2>Recipe</h2>
<table><tr><th>Path</th><th>Old</th><th>New</th></tr>
{% for key, values in report.recipe.items() %}<tr><td>{{ key }}</td><td>{{ show(values.old) }}</td><td>{{ show(values.new) }}</td></tr>
{% endfor %}</table>{% endif %}
{% if report.photos %}<h2>Photos replaced</h2>
<table><tr><th>Photo</th><th>Old sha256</th><th>New sha256</th></tr>
{% for source, digests in report.photos.items() %}<tr><td>{{ source }}</td><td>{{ digests.old | join(", ") }}</td><td>{{ digests.new | join(", ") }}</td></tr>
{% endfor %}</table>{% endif %}
<h2>Compositions</h2>
<table><tr><th>Composition</th><th>Images</th><th>Kept</th><th>Keep rate</th><th>Added</th><th>Removed</th>
<th>Changed</th><th>Unchanged</th><th>Now kept</th><th>Now rejected</th></tr>
{% for name, comp in report.compositions.items() %}{% set s = comp.stats %}<tr><td>{{ name }}</td>
{% for k in ("images", "kept", "keep_rate") %}<td{% if s.old[k] != s.new[k] %} class="changed"{% endif %}>{{ stat(s.old[k]) }}{% if s.old[k] != s.new[k] %} &rarr; {{ stat(s.new[k]) }}{% endif %}</td>{% endfor %}
{% for k in ("added", "removed", "changed", "unchanged", "now_kept", "now_rejected") %}<td>{{ comp[k] | length }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% if means %}<h2>Mean measurements of kept samples</h2>
<table><tr><th>Composition</th><th>Metric</th><th>Old</th><th>New</th><th>Change</th></tr>
{% for name, metric, old, new, change in means %}<tr><td>{{ name }}</td><td>{{ metric }}</td><td>{{ number(old) }}</td><td>{{ number(new) }}</td><td>{{ number(change, "+.4f") }}</td></tr>
{% endfor %}</table>{% endif %}
{% if cards %}<h2>Samples</h2><div class="cards">
{% for card in cards %}<div class="card"><div><b>{{ card.key }}</b> &middot; {{ card.status }}{% if card.parts %}: {{ card.parts | join(", ") }}{% endif %}</div>
{% if card.count > 1 %}<div class="count">1 of {{ card.count }} samples like this; others: {{ card.others | join(", ") }}{% if card.count > card.others | length + 1 %}, ...{% endif %}</div>{% endif %}
{% if card.causes %}<div>because: {{ card.causes | join("; ") }}</div>{% endif %}
<div class="pair">{% if card.same %}<figure><img src="{{ card.after }}" alt="{{ card.key }}"><figcaption>same image</figcaption></figure>
<figure><figcaption>{{ a.label }}: {{ card.caption_before }}</figcaption><figcaption class="changed">{{ b.label }}: {{ card.caption_after }}</figcaption></figure>
{% else %}{% for label, image, caption in ((a.label, card.before, card.caption_before), (b.label, card.after, card.caption_after)) %}
<figure>{% if image %}<img src="{{ image }}" alt="{{ card.key }} in {{ label }}">{% else %}<div class="none">{{ card.absent }} {{ label }}</div>{% endif %}
<figcaption>{{ label }}{% if caption %}: {{ caption }}{% endif %}</figcaption></figure>{% endfor %}{% endif %}</div>
{% if card.note %}<div>{{ card.note }}</div>{% endif %}</div>
{% endfor %}</div>{% if hidden %}<p>{{ hidden }} more groups of samples differ; <code>g4g diff --json</code> lists them all.</p>{% endif %}{% endif %}
</body></html>
""")


def _card(keys: list[str], status: str, **fields: Any) -> dict[str, Any]:
    return {"key": keys[0], "count": len(keys), "others": keys[1:1 + OTHER_KEYS], "status": status, **fields}


def cards(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One card per group of samples worth looking at, most telling first: flips between kept
    and rejected (by reasons), visible changes (by parts and causes), added and removed samples
    (per composition), then caption-only changes (one image, both captions)."""
    groups: dict[str, list[dict[str, Any]]] = {"flips": [], "visual": [], "counts": [], "captions": []}
    for comp in report["compositions"].values():
        for status, flips, prefix in (("now rejected", comp["now_rejected"], ""),
                                      ("now kept", comp["now_kept"], "was rejected: ")):
            by_reasons: dict[tuple[str, ...], list[str]] = defaultdict(list)
            for key, entry in sorted(flips.items()):
                by_reasons[tuple(entry["reasons"])].append(key)
            groups["flips"] += [_card(keys, status, note=prefix + "; ".join(reasons), old=status == "now rejected",
                                      new=status == "now kept") for reasons, keys in by_reasons.items()]
        for parts, causes, keys in same_change(comp["changed"]):
            if VISUAL_PARTS & set(parts):
                groups["visual"].append(_card(keys, "changed", parts=list(parts), causes=list(causes), old=True,
                                              new=True))
            elif "caption" in parts:
                groups["captions"].append(_card(keys, "changed", parts=list(parts), causes=list(causes), old=True,
                                                new=True, same=True))
        groups["counts"] += [_card(comp["added"], "added", new=True)] if comp["added"] else []
        groups["counts"] += [_card(comp["removed"], "removed", old=True)] if comp["removed"] else []
    return [card for group in groups.values() for card in group]


def page(report: dict[str, Any], a: Snapshot, b: Snapshot) -> str:
    """The HTML page of `report`, with thumbnails read from the snapshots it compared."""
    chosen = cards(report)
    shown = chosen[:MAX_CARDS]
    before = a.images({card["key"] for card in shown if card.get("old") and not card.get("same")})
    after = b.images({card["key"] for card in shown if card.get("new")})
    for card in shown:
        card.setdefault("parts", [])
        card.setdefault("causes", [])
        card.setdefault("note", "")
        card.setdefault("same", False)
        card["absent"] = "rejected in" if card["status"].startswith("now") else "not in"
        for name, snapshot, images in (("before", a, before), ("after", b, after)):
            present = card.get("old" if name == "before" else "new")
            card[name] = thumbnail(images[card["key"]]) if present and card["key"] in images else None
            card[f"caption_{name}"] = snapshot.samples[card["key"]].provenance["captions"]["short"] if present else None
    means = [(name, metric, s["old"]["means"].get(metric), s["new"]["means"].get(metric), s["delta"]["means"].get(metric))
             for name, s in ((name, comp["stats"]) for name, comp in report["compositions"].items())
             for metric in sorted(s["old"]["means"].keys() | s["new"]["means"].keys())
             if s["old"]["means"].get(metric) != s["new"]["means"].get(metric)]
    return PAGE.render(report=report, a=report["a"], b=report["b"], cards=shown, hidden=len(chosen) - len(shown),
                       means=means, number=lambda v, spec=".4f": "-" if v is None else format(v, spec),
                       show=lambda v: "-" if v is None else v if isinstance(v, str) else json.dumps(v, sort_keys=True),
                       stat=lambda v: "-" if v is None else (f"{v:.1%}" if isinstance(v, float) else v))
