"""Why a sample changed: the inputs of its stages' keys that differ between the two builds.

A sample records each stage's item key (`item_keys`) and each cut-out's key. Where a key
differs, the two builds' plans say why: `build/compiled/<stage>.json` (the compile stage's DVC
output, read like `dataset/`: from the revision's DVC cache, or the workspace) lists every
item's key parts known before the build. Each part that differs is named: a template by its
path, code by module, a library with both versions, the backend's options with both values,
weights by reference, and the item's own inputs from the recipe by name. A photo replaced
under the same path is named from the samples' own digests. A key that changed while none of
those did was changed by what an earlier stage produced; that is said only when nothing else
explains the sample (a plan change re-keys every later stage).
"""

from __future__ import annotations

import json
from typing import Any

from base.compiled import expanded
from base.files import loads_json
from compiler.diff.snapshot import Sample, Snapshot
from stages.card.dataset_reader import MAX_INDEX_BYTES, read_bounded

STAGES = ("extract", "plan", "compose", "caption", "score")  # in build order
PLAN_FILE = "build/compiled/{stage}.json"
TEMPLATES_DIR = "templates"
MACHINERY = ("backend", "code", "environment", "templates", "weights")  # the rest: the item's inputs
SHOWN = 4  # modules or options named in one cause; the rest are counted


class Plans:
    """One side's build plans, read on first use: each stage's item key parts by item id."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot
        self._items: dict[str, dict[str, dict[str, Any]] | None] = {}

    def parts(self, stage: str, item_id: str) -> dict[str, Any] | None:
        """The key parts of `item_id` in `stage`, or None when the plan is not available or
        does not list the item."""
        if stage not in self._items:
            self._items[stage] = self._read(stage)
        items = self._items[stage]
        return None if items is None else items.get(item_id)

    def _read(self, stage: str) -> dict[str, dict[str, Any]] | None:
        try:
            document = expanded(loads_json(read_bounded(self.snapshot.open_file(PLAN_FILE.format(stage=stage)),
                                                        MAX_INDEX_BYTES, PLAN_FILE.format(stage=stage))))
            return {item["id"]: item.get("parts", {}) for item in document.get("items", [])}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # not in the DVC cache (only
            return None  # dataset/ fetched), or not a plan pack's compile wrote


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 40 else text[:37] + "..."


def _some(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))


def _backend(stage: str, old: dict[str, Any], new: dict[str, Any]) -> str:
    if old.get("name") != new.get("name"):
        return f"{stage} backend {old.get('name')} -> {new.get('name')}"
    if old.get("version") != new.get("version"):
        return f"{stage} backend {new.get('name')} version {old.get('version')} -> {new.get('version')}"
    before, after = old.get("params") or {}, new.get("params") or {}
    options = [f"{name} {_short(before.get(name, 'unset'))} -> {_short(after.get(name, 'unset'))}"
               for name in _changed(before, after)]
    return f"{stage} backend {new.get('name')} options: {_some(options)}"


def part_causes(stage: str, old: dict[str, Any], new: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(causes, code modules) of the key parts that differ between two plans of one item."""
    causes: set[str] = set()
    modules: set[str] = set()
    inputs = []
    for name in _changed(old, new):
        before, after = old.get(name) or {}, new.get(name) or {}
        if name == "templates":
            for template in _changed(before, after):
                verb = "added" if template not in before else "removed" if template not in after else "changed"
                causes.add(f"template {TEMPLATES_DIR}/{template} {verb}")
        elif name == "code":
            modules.update(_changed(before, after))
        elif name == "environment":
            causes.update(f"library {library} {before.get(library, 'absent')} -> {after.get(library, 'absent')}"
                          for library in _changed(before, after))
        elif name == "weights":
            causes.add(f"{stage} weights changed: {_some(_changed(before, after))}")
        elif name == "backend":
            causes.add(_backend(stage, before, after))
        elif name != "photo":  # a photo's bytes: named from the samples' digests
            inputs.append(name)
    if inputs:
        causes.add(f"{stage} inputs from the recipe changed: {_some(inputs)}")
    return causes, modules


def _photos(record: dict[str, Any]) -> dict[str, str]:
    photos = [concept["cutout"] for concept in record["concepts"]] + [record["background"]]
    return {photo["source"]: photo.get("sha256") for photo in photos if photo.get("source") is not None}


def sample_causes(item_id: str, old: Sample, new: Sample, before: Plans, after: Plans) -> list[str]:
    """Why sample `item_id` has other keys (or content) in `new` than in `old`, sorted."""
    causes: set[str] = set()
    modules: set[str] = set()
    unexplained: list[str] = []
    old_record, new_record = old.provenance, new.provenance
    old_photos, new_photos = _photos(old_record), _photos(new_record)
    causes.update(f"photo {source} replaced" for source in sorted(old_photos.keys() & new_photos.keys())
                  if old_photos[source] != new_photos[source])
    keyed = [(stage, item_id) for stage in STAGES
             if old_record["item_keys"].get(stage) != new_record["item_keys"].get(stage)]
    old_cutouts = {concept["id"]: concept["cutout"].get("key") for concept in old_record["concepts"]}
    keyed += [("extract", concept["cutout"]["id"]) for concept in new_record["concepts"]
              if concept["id"] in old_cutouts and old_cutouts[concept["id"]] != concept["cutout"].get("key")]
    for stage, item in keyed:
        old_parts, new_parts = before.parts(stage, item), after.parts(stage, item)
        if old_parts is None or new_parts is None:
            side = before if old_parts is None else after
            causes.add(f"{stage}: unknown ({side.snapshot.label}: no build plan of it in "
                       f"{PLAN_FILE.format(stage=stage)}, e.g. not in the DVC cache)")
            continue
        found, changed_modules = part_causes(stage, old_parts, new_parts)
        causes.update(found)
        modules.update(changed_modules)
        if not found and not changed_modules:
            unexplained.append(stage)
    if modules:
        causes.add(f"code changed: {_some(sorted(modules))}")
    if unexplained and not causes:
        causes.add(f"{unexplained[0]}: an earlier stage's output changed")
    return sorted(causes)
