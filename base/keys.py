"""Content keys and per-item seeds.

A key is the hash of everything that determines an item's output (input bytes, upstream
keys, backend name, version and parameters). Throughput settings never enter a key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from base.shared_json import SharedEncoder

KEY_LENGTH = 20


def canonical_json(value: Any) -> str:
    """One byte-stable JSON spelling of `value` (sorted keys, no whitespace)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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


def without(value: Any, names: frozenset[str] | set[str] | list[str]) -> Any:
    """`value` with every dict entry named in `names` removed, at any depth: key parts minus
    what a backend does not read (its `IGNORES`)."""
    if not names:
        return value
    if isinstance(value, dict):
        return {k: without(v, names) for k, v in value.items() if k not in names}
    if isinstance(value, list):
        return [without(v, names) for v in value]
    return value
