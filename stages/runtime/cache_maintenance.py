"""Whole-cache maintenance behind `g4g cache verify | gc | stats`.

The item cache holds one folder per stage (`<cache>/<stage>/<key[:2]>/<key>/`) and the LLM
reply cache (`<cache>/llm/<key[:2]>/<key>.json`). What the current build uses is what each
stage recorded in `.g4g/keys/<stage>.json` when it last ran (and, for replies, the requests
its layouts name), so `gc` never removes an entry of the last build.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from base.files import read_json
from stages.runtime import explain
from stages.runtime.cache import ItemCache, exclusive

REPLIES = "llm"
INTERNAL = (".staging",)


def stages_in(cache_root: Path) -> list[str]:
    """The stage folders of the item cache (replies and staging excluded)."""
    if not cache_root.is_dir():
        return []
    return sorted(p.name for p in cache_root.iterdir() if p.is_dir() and p.name not in INTERNAL + (REPLIES,))


def _progress(total: int, description: str) -> tqdm:
    return tqdm(total=total, desc=description, unit="entry", disable=None, file=sys.stderr)


@dataclass
class Verification:
    checked: int = 0
    damaged: dict[str, str] = field(default_factory=dict)  # "stage/key" -> what is wrong
    repaired: int = 0


def verify(cache_root: Path, repair: bool = False) -> Verification:
    """Check every entry's files against its record; with `repair`, discard damaged ones (the
    next build recomputes them), never while a build uses the cache."""
    if repair:
        with exclusive(cache_root):
            return _verify(cache_root, repair)
    return _verify(cache_root, repair)


def _verify(cache_root: Path, repair: bool) -> Verification:
    outcome = Verification()
    caches = [ItemCache(cache_root, stage) for stage in stages_in(cache_root)]
    entries = [(cache, key) for cache in caches for key in cache.keys()]
    with _progress(len(entries), "verify") as progress:
        for cache, key in entries:
            record, damage = cache.lookup(key)
            outcome.checked += 1
            if damage is not None:
                outcome.damaged[f"{cache.root.name}/{key}"] = damage
                if repair:
                    cache.discard(key)
                    outcome.repaired += 1
            progress.update()
    return outcome


def stats(cache_root: Path) -> dict[str, dict[str, int]]:
    """Entries and bytes per stage (and for LLM replies)."""
    out: dict[str, dict[str, int]] = {}
    stages = stages_in(cache_root)
    with _progress(len(stages) + 1, "stats") as progress:
        for stage in stages:
            cache = ItemCache(cache_root, stage)
            keys = list(cache.keys())
            out[stage] = {"entries": len(keys), "bytes": sum(cache.size(key) for key in keys)}
            progress.update()
        replies = sorted((cache_root / REPLIES).rglob("*.json")) if (cache_root / REPLIES).is_dir() else []
        if replies:
            out[REPLIES] = {"entries": len(replies), "bytes": sum(p.stat().st_size for p in replies)}
        progress.update()
    return out


def referenced_keys(state_dir: Path = explain.STATE_DIR, layouts: Path = Path("build/layouts.json"),
                    captions: Path = Path("build/captions.json")) -> dict[str, set[str]]:
    """Per stage, the keys the last build of each stage used; `llm`: the replies its layouts
    and its VLM captions cite."""
    used = {stage: {entry["key"] for entry in explain.load(stage, state_dir)["items"].values()}
            for stage in (p.stem for p in sorted(state_dir.glob("*.json")))} if state_dir.is_dir() else {}
    plans, described = _records(layouts, "layouts"), _records(captions, "captions")
    used[REPLIES] = {a["request"] for layout in plans for a in layout.get("llm", {}).get("attempts", [])}
    used[REPLIES] |= {a["request"] for caption in described if "recaption" in caption
                      for a in (caption["recaption"], *caption["recaption"].get("rejected", []))}
    return used


def _records(index: Path, name: str) -> list[dict]:
    try:
        return read_json(index).get(name, [])
    except (OSError, ValueError):
        return []


@dataclass
class Collection:
    removed: int = 0
    freed: int = 0
    kept: int = 0


def gc(cache_root: Path, keep_days: float, dry_run: bool = False) -> Collection:
    """Remove entries the last build did not use and that are older than `keep_days`; never
    while a build (of any project sharing the cache) runs: CacheBusy then."""
    with exclusive(cache_root):
        return _collect(cache_root, keep_days, dry_run)


def _collect(cache_root: Path, keep_days: float, dry_run: bool) -> Collection:
    used = referenced_keys()
    horizon = time.time() - keep_days * 86400
    entries: list[tuple[ItemCache, str]] = []
    for stage in stages_in(cache_root):
        cache = ItemCache(cache_root, stage)
        entries += [(cache, key) for key in cache.keys() if key not in used.get(stage, set())]
    replies_dir = cache_root / REPLIES
    replies = [p for p in sorted(replies_dir.rglob("*.json")) if p.stem not in used.get(REPLIES, set())] \
        if replies_dir.is_dir() else []
    outcome = Collection()
    with _progress(len(entries) + len(replies), "gc") as progress:
        for cache, key in entries:
            progress.update()
            if cache.folder(key).stat().st_mtime > horizon:
                outcome.kept += 1
                continue
            outcome.removed += 1
            outcome.freed += cache.size(key)
            if not dry_run:
                cache.discard(key)
        for reply in replies:
            progress.update()
            if reply.stat().st_mtime > horizon:
                outcome.kept += 1
                continue
            outcome.removed += 1
            outcome.freed += reply.stat().st_size
            if not dry_run:
                reply.unlink()
    if not dry_run:
        _remove_abandoned_staging(cache_root / ".staging")
    return outcome


def _remove_abandoned_staging(staging: Path, older_than_seconds: float = 3600) -> None:
    """Folders a killed build left half-written (never trusted; only their disk is reclaimed)."""
    if staging.is_dir():
        for folder in staging.iterdir():
            if folder.stat().st_mtime < time.time() - older_than_seconds:
                shutil.rmtree(folder, ignore_errors=True)
