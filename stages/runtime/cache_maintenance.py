"""Whole-cache maintenance behind `g4g cache verify | gc | stats`.

The item cache holds one folder per stage (`<cache>/<stage>/<key[:2]>/<key>/`) and the LLM
reply cache (`<cache>/llm/<key[:2]>/<key>.json`). What the current build uses is what each
stage recorded in `.g4g/keys/<stage>.sqlite` when it last ran (and, for replies, the requests
its layouts name), so `gc` never removes an entry of the last build.

The cache folder may be any folder the builder names, so maintenance acts only in a folder
g4g created (its CACHEDIR.TAG) and only on entries of g4g's shape (a stage it knows, a key
folder under its two-character prefix, a record.json; a reply file that parses):
anything else is left alone and listed in `unknown`.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from base.files import read_json
from base.keys import KEY_LENGTH
from base.settings import STAGES
from base.untrusted import escape_controls
from stages.runtime import explain
from stages.runtime.cache import LOCK, RECORD, TAG, TAG_TEXT, VERIFIED, ItemCache, exclusive

REPLIES = "llm"
STAGING = ".staging"
OURS = (TAG, LOCK, VERIFIED, STAGING, REPLIES)  # what else a cache folder holds besides its stage folders
KEY = re.compile(f"[0-9a-f]{{{KEY_LENGTH}}}\\Z")


class NotACache(ValueError):
    """The folder named as the item cache is not one g4g created: maintenance leaves it alone."""


def check_cache(cache_root: Path) -> None:
    """NotACache unless `cache_root` is a folder (not a link) holding the CACHEDIR.TAG g4g
    writes when it creates an item cache."""
    where = "runtime.cache_dir (or G4G_CACHE_DIR)"
    try:
        mode = os.lstat(cache_root).st_mode
    except FileNotFoundError:
        return  # no cache yet: nothing to do
    if not stat.S_ISDIR(mode):
        raise NotACache(f"{cache_root}: the item cache ({where}) is {'a link' if stat.S_ISLNK(mode) else 'not a folder'}"
                        f"; valid: the folder g4g created for it (nothing was changed)")
    try:
        with open(cache_root / TAG, "rb") as handle:
            ours = handle.read(len(TAG_TEXT) + 1) == TAG_TEXT and os.path.isfile(cache_root / TAG)
    except OSError:
        ours = False
    if not ours:
        raise NotACache(f"{cache_root}: not an item cache g4g created (no {TAG} written by g4g in it), so nothing "
                        f"was changed; check {where}. An item cache of an older g4g: delete it (the next build "
                        f"recomputes it)")


def _is_dir(path: Path) -> bool:
    return stat.S_ISDIR(os.lstat(path).st_mode)


def survey(cache_root: Path) -> tuple[dict[str, list[str]], list[Path]]:
    """The entries of g4g's shape by stage (keys, sorted) and every other path found where
    entries live (left alone by maintenance)."""
    check_cache(cache_root)
    entries: dict[str, list[str]] = {}
    unknown: list[Path] = []
    if not cache_root.is_dir():
        return entries, unknown
    for top in sorted(cache_root.iterdir()):
        if top.name in OURS:
            continue
        if top.name not in STAGES or not _is_dir(top):
            unknown.append(top)
            continue
        for prefix in sorted(top.iterdir()):
            if not (_is_dir(prefix) and len(prefix.name) == 2):
                unknown.append(prefix)
                continue
            for folder in sorted(prefix.iterdir()):
                if KEY.match(folder.name) and folder.name[:2] == prefix.name and _is_dir(folder) and _record(folder):
                    entries.setdefault(top.name, []).append(folder.name)
                else:
                    unknown.append(folder)
    return entries, unknown


def _record(folder: Path) -> bool:
    """Whether `folder` holds a record.json (a regular file): in a folder g4g created, at a key's
    place, that is an entry of g4g's, and whether the record parses and matches its files is
    for `verify` to say (damaged, not someone else's)."""
    try:
        return stat.S_ISREG(os.lstat(folder / RECORD).st_mode)
    except OSError:
        return False


def replies_in(cache_root: Path) -> tuple[list[Path], list[Path]]:
    """The reply files of g4g's shape (`llm/<key[:2]>/<key>.json`, a regular file of JSON) and
    every other path in the reply folder."""
    folder = cache_root / REPLIES
    replies: list[Path] = []
    unknown: list[Path] = []
    if not (folder.is_dir() and _is_dir(folder)):
        return replies, [folder] if os.path.lexists(folder) else []
    for prefix in sorted(folder.iterdir()):
        if not (_is_dir(prefix) and len(prefix.name) == 2):
            unknown.append(prefix)
            continue
        for path in sorted(prefix.iterdir()):
            if (path.suffix == ".json" and KEY.match(path.stem) and path.stem[:2] == prefix.name
                    and stat.S_ISREG(os.lstat(path).st_mode) and _reply(path)):
                replies.append(path)
            else:
                unknown.append(path)
    return replies, unknown


def _reply(path: Path) -> bool:
    try:
        return isinstance(read_json(path), dict)
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def shown(paths: list[Path], cache_root: Path, most: int = 5) -> str:
    """A few paths, relative to the cache and escaped, for a message."""
    names = [escape_controls(str(p.relative_to(cache_root))) for p in paths[:most]]
    return ", ".join(names) + (f" and {len(paths) - most} more" if len(paths) > most else "")


def stages_in(cache_root: Path) -> list[str]:
    """The stage folders of the item cache that hold entries of g4g's shape."""
    return sorted(survey(cache_root)[0])


def _progress(total: int, description: str) -> tqdm:
    return tqdm(total=total, desc=description, unit="entry", disable=None, file=sys.stderr)


@dataclass
class Verification:
    checked: int = 0
    damaged: dict[str, str] = field(default_factory=dict)  # "stage/key" -> what is wrong
    repaired: int = 0
    unknown: list[Path] = field(default_factory=list)  # not of g4g's shape: left alone


def verify(cache_root: Path, repair: bool = False) -> Verification:
    """Check every entry's files against its record; with `repair`, discard damaged ones (the
    next build recomputes them), never while a build uses the cache."""
    check_cache(cache_root)
    if repair:
        with exclusive(cache_root):
            return _verify(cache_root, repair)
    return _verify(cache_root, repair)


def _verify(cache_root: Path, repair: bool) -> Verification:
    found, unknown = survey(cache_root)
    outcome = Verification(unknown=unknown)
    entries = [(ItemCache(cache_root, stage), key) for stage, keys in found.items() for key in keys]
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
    found, _ = survey(cache_root)
    with _progress(len(found) + 1, "stats") as progress:
        for stage, keys in sorted(found.items()):
            cache = ItemCache(cache_root, stage)
            out[stage] = {"entries": len(keys), "bytes": sum(cache.size(key) for key in keys)}
            progress.update()
        replies, _ = replies_in(cache_root)
        if replies:
            out[REPLIES] = {"entries": len(replies), "bytes": sum(p.stat().st_size for p in replies)}
        progress.update()
    return out


def referenced_keys(state_dir: Path = explain.STATE_DIR, layouts: Path = Path("build/layouts.json"),
                    captions: Path = Path("build/captions.json")) -> dict[str, set[str]]:
    """Per stage, the keys the last build of each stage used; `llm`: the replies its layouts
    and its VLM captions cite."""
    used = {stage: explain.item_keys(stage, state_dir) for stage in explain.recorded_stages(state_dir)}
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
    unknown: list[Path] = field(default_factory=list)  # not of g4g's shape: left alone


def gc(cache_root: Path, keep_days: float, dry_run: bool = False) -> Collection:
    """Remove entries the last build did not use and that are older than `keep_days`; never
    while a build (of any project sharing the cache) runs: CacheBusy then. Only in a cache
    g4g created, only entries of its shape (NotACache otherwise)."""
    check_cache(cache_root)
    with exclusive(cache_root):
        return _collect(cache_root, keep_days, dry_run)


def _collect(cache_root: Path, keep_days: float, dry_run: bool) -> Collection:
    used = referenced_keys()
    horizon = time.time() - keep_days * 86400
    found, unknown = survey(cache_root)
    replies, stray = replies_in(cache_root)
    entries = [(ItemCache(cache_root, stage), key) for stage, keys in found.items() for key in keys
               if key not in used.get(stage, set())]
    replies = [p for p in replies if p.stem not in used.get(REPLIES, set())]
    outcome = Collection(unknown=unknown + stray)
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
        _remove_abandoned_staging(cache_root / STAGING)
    return outcome


def _remove_abandoned_staging(staging: Path, older_than_seconds: float = 3600) -> None:
    """Folders a killed build left half-written (never trusted; only their disk is reclaimed)."""
    if staging.is_dir() and _is_dir(staging):
        for folder in staging.iterdir():
            if _is_dir(folder) and folder.stat().st_mtime < time.time() - older_than_seconds:
                shutil.rmtree(folder, ignore_errors=True)
