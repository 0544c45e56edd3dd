"""Which installed distributions provide each top-level import name, and their versions.

`importlib.metadata` answers by reading every distribution's file list (a second or more in
an environment with torch), and every `compile`, `g4g validate` and stage process asks. The
answer is memoised on disk, per Python environment, until the distributions' metadata
folders on `sys.path` change: installing, upgrading or removing one adds or renames one. A memo
that cannot be read, or was made for other folders, is recomputed; one that cannot be
written only costs the time.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from base.files import atomic_write_bytes, loads_json

MEMO_VERSION = 1


def memo_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "g4g"


def _memo_file(stamp: list[list[Any]]) -> Path:
    """One memo per environment and set of folders holding distributions (a project folder
    with its editable install's metadata is one), so processes started elsewhere do not
    overwrite each other's memo."""
    where = json.dumps([sys.prefix, [entry for entry, _ in stamp]])
    return memo_folder() / f"distributions-{hashlib.sha256(where.encode('utf-8')).hexdigest()[:16]}.json"


def _stamp() -> list[list[Any]]:
    """The distributions' metadata folders on each sys.path entry: their names carry the
    version, so an install, an upgrade or a removal changes them (and nothing else does)."""
    stamp = []
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as listing:
                names = sorted(e.name for e in listing if e.name.endswith((".dist-info", ".egg-info")))
        except OSError:
            continue
        if names:  # the project folder, the standard library: no distributions, not part of the stamp
            stamp.append([entry, names])
    return stamp


@functools.lru_cache(maxsize=None)
def _memo() -> dict[str, Any]:
    stamp = _stamp()
    path = _memo_file(stamp)
    try:
        memo = loads_json(path.read_text(encoding="utf-8"))
        if memo.get("version") == MEMO_VERSION and memo.get("stamp") == stamp \
                and isinstance(memo.get("packages"), dict) and isinstance(memo.get("versions"), dict):
            return memo
    except (OSError, ValueError, AttributeError):
        pass
    return {"version": MEMO_VERSION, "stamp": stamp, "packages": metadata.packages_distributions(),
            "versions": {}, "dirty": True}


def _save(memo: dict[str, Any]) -> None:
    if not memo.pop("dirty", False):
        return
    try:
        atomic_write_bytes(_memo_file(memo["stamp"]), json.dumps(memo, sort_keys=True).encode("utf-8"))
    except OSError:
        pass  # a read-only home: the next process computes it again


def packages() -> dict[str, list[str]]:
    """Top-level import name -> the distributions that install it (`PIL` -> ['pillow'])."""
    memo = _memo()
    _save(memo)
    return memo["packages"]


def version(distribution: str) -> str | None:
    """The installed version of `distribution`, or None when it is not installed."""
    memo = _memo()
    if distribution not in memo["versions"]:
        try:
            memo["versions"][distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            memo["versions"][distribution] = None
        memo["dirty"] = True
    _save(memo)
    return memo["versions"][distribution]
