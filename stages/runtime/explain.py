"""Why an item was recomputed: each stage keeps the key parts of its last build.

A key is the hash of named parts (code, environment, backend, weights, inputs, ...). After a
stage runs, `.g4g/keys/<stage>.json` holds every item's key and a digest per part, with each
distinct part value stored once, so `g4g explain ITEM` can name the parts that changed since
the build before (down to the code module or library) and the report can count them.

A stage `dvc repro` restores from DVC's run cache runs no code, so its record stays that of
the stage's last run. Both the record and the stage's index (`build/<index>.json`, a DVC
output restored with the stage) carry a digest of every item's key; where they differ, the
index came back with a restored stage and `explain` says so instead of describing another build.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from base.files import read_json, write_json_document
from base.keys import content_key

STATE_DIR = Path(".g4g/keys")
STAGE_INDEX = {"extract": Path("build/cutouts.json"), "plan": Path("build/layouts.json"),  # each carries
               "compose": Path("build/images.json"), "caption": Path("build/captions.json"),  # its run's
               "score": Path("build/scores.json")}  # keys digest


def _state_file(stage: str, state_dir: Path) -> Path:
    return state_dir / f"{stage}.json"


def load(stage: str, state_dir: Path = STATE_DIR) -> dict[str, Any]:
    """The stage's last state; an unreadable or damaged file (hand-edited, another tool's) reads
    as no state, and the stage's next run rewrites it."""
    try:
        state = read_json(_state_file(stage, state_dir))
    except (OSError, ValueError):
        state = None
    return state if _well_formed(state) else {"items": {}, "values": {}}


def _well_formed(state: Any) -> bool:
    if not (isinstance(state, dict) and isinstance(state.get("items"), dict) and isinstance(state.get("values"), dict)):
        return False
    for entry in state["items"].values():
        previous = entry.get("previous") if isinstance(entry, dict) else None
        if not (isinstance(entry, dict) and isinstance(entry.get("key"), str) and _digests(entry.get("parts"))
                and isinstance(entry.get("computed"), bool)
                and (previous is None or isinstance(previous, dict) and _digests(previous.get("parts")))):
            return False
    return True


def _digests(parts: Any) -> bool:
    return isinstance(parts, dict) and all(isinstance(digest, str) for digest in parts.values())


def changed_parts(before: dict[str, str] | None, after: dict[str, str]) -> list[str]:
    """Names of the parts whose digest differs (or `new` for an item built for the first time)."""
    if before is None:
        return ["new"]
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


def keys_digest(items: list[dict[str, Any]]) -> str:
    return content_key(sorted([item["id"], item["key"]] for item in items))


def record(stage: str, items: list[dict[str, Any]], computed: set[str],
           state_dir: Path = STATE_DIR) -> tuple[dict[str, int], str]:
    """Store this build's parts; return, over the computed items, how often each part changed,
    and the digest of every item's key (the stage's report carries it too)."""
    previous = load(stage, state_dir)
    values: dict[str, Any] = {}
    entries: dict[str, Any] = {}
    counts: Counter[str] = Counter()
    digest_of: dict[int, str] = {}  # a part value items share (plan's request), by identity: hashed once
    for item in items:
        old = previous["items"].get(item["id"])
        if old is not None and old["key"] == item["key"]:  # the same key: the same parts, hashed last time
            digests = old["parts"]
            values.update((d, previous["values"][d]) for d in digests.values() if d in previous["values"])
        else:
            digests = {}
            for name, value in item["parts"].items():
                if id(value) not in digest_of:
                    digest_of[id(value)] = content_key(value)
                digests[name] = digest_of[id(value)]
                values[digests[name]] = value
        why = changed_parts(old["parts"] if old else None, digests)
        if item["id"] in computed:
            counts.update(why or ["cache"])  # nothing changed: the entry was missing or damaged
        entries[item["id"]] = {"key": item["key"], "parts": digests,
                               "previous": {"key": old["key"], "parts": old["parts"]} if old else None,
                               "computed": item["id"] in computed}
    kept_values = {d: previous["values"][d] for e in entries.values() if e["previous"]
                   for d in e["previous"]["parts"].values() if d in previous["values"]}
    digest = keys_digest(items)
    write_json_document(_state_file(stage, state_dir),
                        {"items": entries, "values": {**kept_values, **values}, "keys_digest": digest})
    return dict(counts), digest


def restored(stage: str, state: dict[str, Any], root: Path = Path(".")) -> bool:
    """Whether the stage's index (a DVC output, restored with the stage) is not the one its
    record was made with: DVC restored the stage from its run cache (or the index came from
    elsewhere, e.g. `git checkout`)."""
    if stage not in STAGE_INDEX:
        return False
    try:
        index = read_json(root / STAGE_INDEX[stage])
    except (OSError, ValueError):
        return False
    digest = index.get("keys_digest") if isinstance(index, dict) else None
    return bool(digest) and digest != state.get("keys_digest")


def _difference(before: Any, after: Any) -> str:
    """What differs between two values of one part, briefly."""
    if isinstance(before, dict) and isinstance(after, dict):
        names = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        return ", ".join(f"{k} {_short(before.get(k))} -> {_short(after.get(k))}" for k in names[:8]) + \
            (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    return f"{_short(before)} -> {_short(after)}"


def _short(value: Any) -> str:
    """A value as one short token: strings as they are, structures by digest."""
    if value is None:
        text = "absent"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (dict, list)):
        text = content_key(value)[:12]
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def explain(item_id: str, stages: list[str], state_dir: Path = STATE_DIR, root: Path = Path(".")) -> list[str]:
    """Lines saying, per stage, whether `item_id` was reused or recomputed in the last build and
    which parts of its key changed (or that DVC restored the stage, so no record says)."""
    lines = []
    for stage in stages:
        state = load(stage, state_dir)
        matches = sorted(i for i in state["items"] if i == item_id or i.startswith(f"{item_id}/"))
        if matches and restored(stage, state, root):
            lines.append(f"{stage}: restored from DVC's run cache, so the last build ran no code of it and "
                         f"{state_dir / (stage + '.json')} describes an earlier run; `dvc repro --force -s {stage}` "
                         "runs it again (reusing every cached item) and records why each item was built")
            continue
        for match in matches:
            entry = state["items"][match]
            verdict = "recomputed" if entry["computed"] else "reused"
            lines.append(f"{stage} {match}: {verdict} (key {entry['key']})")
            previous = entry["previous"]
            if previous is None:
                lines.append("  first build of this item")
                continue
            why = changed_parts(previous["parts"], entry["parts"])
            if not why and entry["computed"]:
                lines.append("  no input changed: its cache entry was missing or damaged")
            for name in why:
                old = state["values"].get(previous["parts"].get(name))
                new = state["values"].get(entry["parts"].get(name))
                lines.append(f"  {name}: {_difference(old, new)}")
    return lines
