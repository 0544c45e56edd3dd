"""The compiled documents' item parts, written once per composition and merged on reading.

Every item of a stage carries the key parts its composition's items have in common (the
stage's code fingerprint, backend, weights, templates, the composition's own words): about
2 KB an item, 35-41 MB a document at 20,000 images, decoded by every stage and re-encoded
for every key. The compiler writes them once, under the document's `common_parts` by name,
and each item names its set (`common`) and holds only its own parts. `expanded` gives every
item its whole parts again, the common values one object shared by all its items, so keying
encodes each once (`base.shared_json`). The merged parts, and so the keys, are those an item
would hold written out in full; a document without `common_parts` (an older build, or a stage
whose items share nothing) is read as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from base.files import read_json

COMMON = "common_parts"


class DocumentError(ValueError):
    """A compiled document that names common parts it does not hold: damaged, or not compile's."""


def expanded(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with each item's `parts` its common parts merged with its own (its own win);
    the document itself is left as it was."""
    common = document.get(COMMON)
    if common is None:
        return document
    items = []
    for item in document["items"]:
        name = item.get("common")
        if name not in common:
            raise DocumentError(f"item {item.get('id')!r} names common parts {name!r}, which the document's "
                                f"{COMMON} does not hold (valid: {', '.join(map(repr, sorted(common)))}); "
                                f"run the compile stage again")
        items.append({**item, "parts": {**common[name], **item["parts"]}})
    return {**document, "items": items}


def read_compiled(path: Path) -> dict[str, Any]:
    """A compiled document from `path`, its items' parts whole (see `expanded`)."""
    try:
        return expanded(read_json(path))
    except DocumentError as error:
        raise DocumentError(f"{path}: {error}") from None
