"""The rows of dataset/manifest.jsonl: one per packed sample, enough to compare two builds
without opening a shard.

Besides the sample's `key`, `shard`, `composition`, `concepts` and short `caption` (for people
and `datasets`), a row holds `members`, the sha256 of each of the sample's shard members (a
list of `{"name": extension, "sha256": ...}`, so that every row has one schema for Arrow),
and `provenance`, the sample's JSON member less the fields every sample of the dataset shares
(`recipe`, `backends`, `software`), which recipe.json holds once. `provenance` puts the JSON
member back together as the shard holds it. Rows written before these fields existed lack
them (`has_digests`): a reader then reads the shards.
"""

from __future__ import annotations

import hashlib
from typing import Any

from base.keys import canonical_json

DATASET_WIDE = ("recipe", "backends", "software")


def dataset_wide(recipe: dict[str, Any]) -> dict[str, Any]:
    """The provenance fields every sample shares, from recipe.json (or the compiled plan): the
    recipe's name, each backend's name, version and options (as JSON text: never an empty
    struct for Arrow), and the software versions."""
    return {"recipe": {"name": recipe["name"]},
            "backends": {kind: {"name": b["name"], "version": b["version"], "params": canonical_json(b["params"])}
                         for kind, b in recipe["backends"].items()},
            "software": recipe["software"]}


def member_digests(files: dict[str, bytes]) -> list[dict[str, str]]:
    """The sha256 of each member of a sample (`files`: extension -> bytes), by extension."""
    return [{"name": extension, "sha256": hashlib.sha256(data).hexdigest()} for extension, data in sorted(files.items())]


def manifest_row(record: dict[str, Any], shard: str, members: list[dict[str, str]]) -> dict[str, Any]:
    """The row of a sample whose JSON member is `record`, packed in `shard`."""
    return {"key": record["key"], "shard": shard, "composition": record["composition"],
            "concepts": [c["id"] for c in record["concepts"]], "caption": record["captions"]["short"],
            "members": members, "provenance": {k: v for k, v in record.items() if k not in DATASET_WIDE}}


def has_digests(row: dict[str, Any]) -> bool:
    """Whether `row` holds member digests and provenance (pack writes them since format 2)."""
    return isinstance(row.get("members"), list) and isinstance(row.get("provenance"), dict)


def provenance(row: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any]:
    """The JSON member of the sample of `row`, as the shard holds it (`shared`: the dataset's
    `dataset_wide` fields, computed once)."""
    return {**row["provenance"], **shared}


def digests(row: dict[str, Any]) -> dict[str, str]:
    """The sha256 of each member of the sample of `row`, by extension."""
    return {member["name"]: member["sha256"] for member in row["members"]}
