"""The records of a stage's last run, by key (`.g4g/last-run/<stage>.json`).

An item whose key is one the last run produced is reused from this memo without opening its
cache entry: at 20,000 images that is the difference between checking 20,000 entries (one file
read and several stats each) and checking the few an edit touched. A record with files is
reused only while its files are still, stamp for stamp, in the stage's output folder
(`OutputFolder.holds`). The memo names the item cache it was made against, so pointing the
build at another cache (`G4G_CACHE_DIR`) checks every item there; it carries a digest and reads
as empty when damaged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from base.files import read_json, write_json_document
from base.keys import canonical_json

FOLDER = Path(".g4g/last-run")


def _digest(records: dict[str, Any]) -> str:
    return hashlib.blake2b(canonical_json(records).encode("utf-8"), digest_size=20).hexdigest()


def load(stage: str, cache_root: Path) -> dict[str, dict[str, Any]]:
    """Key -> record of the stage's last run against `cache_root`; empty when absent, damaged or
    made against another cache."""
    try:
        stored = read_json(FOLDER / f"{stage}.json")
        records, digest, cache = stored["records"], stored["digest"], stored["cache"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if cache != str(Path(cache_root).resolve()) or not isinstance(records, dict):
        return {}
    return records if _digest(records) == digest else {}


def save(stage: str, records: list[dict[str, Any]], cache_root: Path,
         previous: dict[str, dict[str, Any]] | None = None) -> None:
    """Store `records`; left as it is when they are exactly the `previous` memo's (a run that
    reused every item from it), which at 20,000 items saves encoding and hashing it again."""
    if previous is not None and len(records) == len(previous) and all(
            previous.get(record["key"]) is record for record in records):
        return
    by_key = {record["key"]: record for record in records}
    write_json_document(FOLDER / f"{stage}.json",
                        {"cache": str(Path(cache_root).resolve()), "records": by_key, "digest": _digest(by_key)})
