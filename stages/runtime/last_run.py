"""The records of a stage's last run, by key (`.g4g/last-run/<stage>.json`).

An item whose key is one the last run produced is reused from this memo without opening its
cache entry: at 20,000 images that is the difference between checking 20,000 entries (one file
read and several stats each) and checking the few an edit touched. A record with files is
reused only while its files are still, stamp for stamp, in the stage's output folder
(`OutputFolder.holds`). The memo names the item cache it was made against, so pointing the
build at another cache (`G4G_CACHE_DIR`) checks every item there. The file is a header line
(that cache and the blake2b of the rest) and the records as written: checking them hashes the
bytes read, not the records encoded again (at 20,000 images that was seconds a stage). A
damaged or hand-edited memo reads as empty.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from base.files import atomic_write_bytes, dumps_json_document, loads_json
from base.keys import canonical_json

FOLDER = Path(".g4g/last-run")


def _digest(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=20).hexdigest()


def load(stage: str, cache_root: Path) -> dict[str, dict[str, Any]]:
    """Key -> record of the stage's last run against `cache_root`; empty when absent, damaged or
    made against another cache."""
    try:
        header, _, body = (FOLDER / f"{stage}.json").read_bytes().partition(b"\n")
        meta = loads_json(header)
        if meta["cache"] != str(Path(cache_root).resolve()) or meta["digest"] != _digest(body):
            return {}
        records = loads_json(body)
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return records if isinstance(records, dict) else {}


def save(stage: str, records: list[dict[str, Any]], cache_root: Path,
         previous: dict[str, dict[str, Any]] | None = None) -> None:
    """Store `records`; left as it is when they are exactly the `previous` memo's (a run that
    reused every item from it), which at 20,000 items saves encoding and hashing it again."""
    if previous is not None and len(records) == len(previous) and all(
            previous.get(record["key"]) is record for record in records):
        return
    body = dumps_json_document({record["key"]: record for record in records}).encode("utf-8")
    header = canonical_json({"cache": str(Path(cache_root).resolve()), "digest": _digest(body)})
    atomic_write_bytes(FOLDER / f"{stage}.json", header.encode("utf-8") + b"\n" + body)
