"""Content keys and per-item seeds.

A key is the hash of everything that determines an item's output (input bytes, upstream
keys, backend name, version and parameters). Throughput settings never enter a key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from base.shared_json import SharedEncoder, compact_encoder

KEY_LENGTH = 20


canonical_json = compact_encoder((",", ":"))
"""One byte-stable JSON spelling of a value (sorted keys, no whitespace)."""


def content_key(*parts: Any) -> str:
    """Hex key of the canonical JSON of `parts`."""
    digest = hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()
    return digest[:KEY_LENGTH]


def content_keys(stage: str, parts: list[dict[str, Any]]) -> list[str]:
    """`content_key(stage, p)` for each of `parts`; a value they share is encoded twice, not per item."""
    encoder = SharedEncoder((",", ":"), depth=2)  # [stage, parts] and the parts joined here
    return [hashlib.sha256(encoder.encode([stage, p]).encode("utf-8")).hexdigest()[:KEY_LENGTH] for p in parts]


def item_seed(*parts: Any) -> int:
    """A 32-bit seed derived from (recipe seed, item identity), independent of run order."""
    digest = hashlib.sha256(canonical_json(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def without(value: Any, names: frozenset[str] | set[str] | list[str], memo: Pruned | None = None) -> Any:
    """`value` with every dict entry named in `names` removed, at any depth: key parts minus
    what a backend does not read (its `IGNORES`). A stage pruning many items passes one `memo`:
    a dict they share (a background's scene template, in every image on it) is pruned once and
    they all get one result, which keying then encodes once (`content_keys`)."""
    if not names:
        return value
    if memo is None:
        memo = Pruned()
    if memo.names is None:
        memo.names = frozenset(names)
    elif memo.names != frozenset(names):  # its results were pruned of other names
        raise ValueError(f"a Pruned memo serves one set of names: {sorted(memo.names)}, not {sorted(names)}")
    return _without(value, names, memo)


class Pruned:
    """What `without` made of the dicts it met more than once, by identity (each kept alive, so
    an identity always names the same dict); one per stage run, for the names of its first use."""

    def __init__(self) -> None:
        self.names: frozenset[str] | None = None
        self.seen: set[int] = set()
        self.done: dict[int, tuple[dict, dict]] = {}


def _without(value: Any, names: frozenset[str] | set[str] | list[str], memo: Pruned) -> Any:
    if isinstance(value, list):
        return [_without(v, names, memo) if isinstance(v, (dict, list)) else v for v in value]
    if not isinstance(value, dict):
        return value
    known = memo.done.get(id(value))
    if known is not None:
        return known[1]
    pruned = {k: _without(v, names, memo) if isinstance(v, (dict, list)) else v
              for k, v in value.items() if k not in names}
    if id(value) in memo.seen:
        memo.done[id(value)] = (value, pruned)
    else:
        memo.seen.add(id(value))
    return pruned
