"""Compare two dataset snapshots: recipe keys, photos, samples by part, keep/reject flips, stats.

The result is plain JSON-ready data with every list sorted, so `--json` is stable and the
terminal and HTML renderings read the same facts. A sample is matched by its key
(`cat_mug-00042`); it is *changed* when any part of it differs:

  layout      boxes, paste order, background choice, canvas, seed
  photos      the sha256 of the cut-outs' source photos and of the background photo
  image       the image bytes
  masks       the union mask and each concept's mask
  caption     the short and detailed captions
  score       the score record (keep, per-concept measurements, metrics)
  provenance  anything else in the sample's JSON (backends, software, recipe name)

`item_keys` gives, per stage, the content keys that changed (the keys the build cache uses),
and `causes` why they changed (`causes.py`: a template, code, a library version, backend
options, a photo, the recipe). A sample whose content is the same but whose keys changed (a
template edit that rendered the same caption) is *unchanged* and also listed under `rekeyed`
with its keys and causes: only its provenance's `item_keys` differ.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from compiler.diff.causes import Plans, sample_causes
from compiler.diff.snapshot import IMAGE_EXTENSIONS, Sample, Snapshot

PARTS = ("layout", "photos", "image", "masks", "caption", "score", "provenance")
COVERED = frozenset({"key", "composition", "index", "seed", "canvas", "concepts", "background", "captions", "score",
                     "item_keys"})


def sample_parts(sample: Sample) -> dict[str, Any]:
    """What each part of a sample is, in a form that compares equal exactly when the part is unchanged."""
    record = sample.provenance
    digests = sample.digests
    return {
        "layout": {"canvas": record["canvas"], "seed": record["seed"],
                   "background": {k: record["background"].get(k) for k in ("id", "photo")},
                   "objects": [(c["id"], c["box"], c["cutout"]["id"], c["cutout"]["box_in_source"])
                               for c in record["concepts"]]},
        "photos": {"background": record["background"].get("sha256"),
                   "cutouts": [(c["id"], c["cutout"]["sha256"]) for c in record["concepts"]]},
        "image": [digests[e] for e in IMAGE_EXTENSIONS if e in digests],
        "masks": {e: d for e, d in digests.items() if e.startswith("mask.")},
        "caption": record["captions"],
        "score": record["score"],
        "provenance": {k: v for k, v in record.items() if k not in COVERED},
    }


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (`compositions.cat_mug.num_images`); lists are values."""
    if not isinstance(value, dict) or not value:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key in sorted(value):
        flat.update(flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
    return flat


def recipe_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Resolved recipe keys (and backend options) that differ, as `dvc params diff` lists them."""
    before = flatten({"recipe": old["recipe"], "backends": old["backends"]})
    after = flatten({"recipe": new["recipe"], "backends": new["backends"]})
    return {key: {"old": before.get(key), "new": after.get(key)}
            for key in sorted(before.keys() | after.keys()) if before.get(key) != after.get(key)}


def photo_changes(a: Snapshot, b: Snapshot) -> dict[str, dict[str, list[str]]]:
    """Photos (by source) whose sha256 differs between the samples of the two sides."""
    def digests(snapshot: Snapshot) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = defaultdict(set)
        for sample in snapshot.samples.values():
            record = sample.provenance
            for photo in [c["cutout"] for c in record["concepts"]] + [record["background"]]:
                if photo.get("source") is not None:
                    seen[photo["source"]].add(photo["sha256"])
        return seen

    before, after = digests(a), digests(b)
    return {source: {"old": sorted(before[source]), "new": sorted(after[source])}
            for source in sorted(before.keys() & after.keys()) if before[source] != after[source]}


def stats(snapshot: Snapshot, composition: str) -> dict[str, Any]:
    """Counts, keep rate and mean measurements of one composition's images."""
    kept = [s.provenance for s in snapshot.samples.values() if s.provenance["composition"] == composition]
    rejected = sum(1 for key in snapshot.rejected if composition_of(key) == composition)
    images = len(kept) + rejected
    numbers: dict[str, list[float]] = defaultdict(list)
    for record in kept:
        for name, value in (record["score"].get("metrics") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                numbers[name].append(value)
        for concept in record["score"]["concepts"]:
            numbers["visible"].append(concept["visible"])
    return {"images": images, "kept": len(kept), "rejected": rejected,
            "keep_rate": round(len(kept) / images, 4) if images else None,
            "means": {name: round(sum(values) / len(values), 4) for name, values in sorted(numbers.items())}}


def delta(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """new - old for every number the two stats share."""
    out = {k: round(new[k] - old[k], 4) for k in ("images", "kept", "rejected", "keep_rate")
           if old[k] is not None and new[k] is not None}
    out["means"] = {k: round(new["means"][k] - old["means"][k], 4) for k in sorted(old["means"].keys() & new["means"].keys())}
    return out


def composition_of(key: str) -> str:
    """`cat_mug-00042` -> `cat_mug` (sample keys are the composition, a dash and the index)."""
    return key.rsplit("-", 1)[0]


def compare_composition(a: Snapshot, b: Snapshot, composition: str, plans: tuple[Plans, Plans]) -> dict[str, Any]:
    def kept(snapshot: Snapshot) -> set[str]:
        return {k for k, s in snapshot.samples.items() if s.provenance["composition"] == composition}

    def rejected(snapshot: Snapshot) -> set[str]:
        return {k for k in snapshot.rejected if composition_of(k) == composition}

    kept_a, kept_b, rejected_a, rejected_b = kept(a), kept(b), rejected(a), rejected(b)
    changed: dict[str, Any] = {}
    rekeyed: dict[str, Any] = {}
    unchanged = []
    for key in sorted(kept_a & kept_b):
        before, after = sample_parts(a.samples[key]), sample_parts(b.samples[key])
        parts = [part for part in PARTS if before[part] != after[part]]
        old_keys, new_keys = a.samples[key].provenance["item_keys"], b.samples[key].provenance["item_keys"]
        keys = {stage: {"old": old_keys.get(stage), "new": new_keys.get(stage)}
                for stage in sorted(old_keys.keys() | new_keys.keys()) if old_keys.get(stage) != new_keys.get(stage)}
        causes = sample_causes(key, a.samples[key], b.samples[key], *plans) if parts or keys else []
        if not parts:  # same content; new keys alone (an edit upstream that changed nothing here)
            unchanged.append(key)
            if keys:
                rekeyed[key] = {"item_keys": keys, "causes": causes}
            continue
        entry: dict[str, Any] = {"parts": parts, "item_keys": keys, "causes": causes}
        if "caption" in parts:
            entry["captions"] = {"old": before["caption"], "new": after["caption"]}
        changed[key] = entry
    stats_a, stats_b = stats(a, composition), stats(b, composition)
    return {
        "added": sorted(kept_b - kept_a - rejected_a),
        "removed": sorted(kept_a - kept_b - rejected_b),
        "changed": changed,
        "unchanged": unchanged,
        "rekeyed": rekeyed,
        "now_kept": {k: {"reasons": a.rejected[k]["reasons"], "stage": a.rejected[k]["stage"]}
                     for k in sorted(rejected_a & kept_b)},
        "now_rejected": {k: {"reasons": b.rejected[k]["reasons"], "stage": b.rejected[k]["stage"]}
                         for k in sorted(kept_a & rejected_b)},
        "rejected_added": sorted(rejected_b - rejected_a - kept_a),
        "rejected_removed": sorted(rejected_a - rejected_b - kept_b),
        "stats": {"old": stats_a, "new": stats_b, "delta": delta(stats_a, stats_b)},
    }


def same_change(entries: dict[str, dict[str, Any]]) -> list[tuple[tuple[str, ...], tuple[str, ...], list[str]]]:
    """Samples that changed the same way: (parts, causes, keys) per distinct parts and causes,
    largest group first. `entries` maps sample keys to their `changed` or `rekeyed` entry."""
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = defaultdict(list)
    for key, entry in sorted(entries.items()):
        groups[(tuple(entry.get("parts", ())), tuple(entry["causes"]))].append(key)
    return sorted(((parts, causes, keys) for (parts, causes), keys in groups.items()),
                  key=lambda group: (-len(group[2]), group[0], group[1]))


def compositions(snapshot: Snapshot) -> set[str]:
    return ({s.provenance["composition"] for s in snapshot.samples.values()}
            | {composition_of(k) for k in snapshot.rejected}
            | set(snapshot.recipe["recipe"].get("compositions", {})))


def side(snapshot: Snapshot) -> dict[str, Any]:
    return {"label": snapshot.label, "rev": snapshot.rev, "sha": snapshot.sha,
            "recipe": snapshot.recipe["name"], "recipe_key": snapshot.recipe["key"]}


def compare(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """Everything that differs between dataset snapshots `a` (before) and `b` (after)."""
    plans = (Plans(a), Plans(b))
    per_composition = {name: compare_composition(a, b, name, plans)
                       for name in sorted(compositions(a) | compositions(b))}
    report = {"a": side(a), "b": side(b), "recipe": recipe_changes(a.recipe, b.recipe),
              "photos": photo_changes(a, b), "compositions": per_composition}
    report["differs"] = differs(report)
    return report


def differs(report: dict[str, Any]) -> bool:
    """Whether anything in the dataset or its recipe differs (what `--exit-code` reports)."""
    lists = ("added", "removed", "changed", "rekeyed", "now_kept", "now_rejected", "rejected_added",
             "rejected_removed")
    return (bool(report["recipe"]) or bool(report["photos"]) or report["a"]["recipe_key"] != report["b"]["recipe_key"]
            or any(c[name] for c in report["compositions"].values() for name in lists)
            or any(c["stats"]["old"] != c["stats"]["new"] for c in report["compositions"].values()))
