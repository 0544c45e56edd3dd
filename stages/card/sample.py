"""What the card shows of the images: a seeded random sample of each composition's kept
samples and of its rejected images, and the full images its thumbnails open.

The first samples in key order are the first items planned, not the dataset; a researcher
judges a dataset by a random sample. The draw is seeded by the recipe key and the
composition, so the same dataset always shows the same images (the card stays byte-stable).
Full images are written beside the card, in `card/`, with the bytes they have in the shards
(or, for rejected images, the bytes compose wrote): the card opens them offline too.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path
from typing import Any, Iterable

SHEET = 12  # kept samples per composition on the card
REJECTED_STRIP = 6  # rejected images per composition on the card
FOLDER = "card"  # beside card.html: the full images its thumbnails open
IMAGELESS_STAGES = ("extract", "plan", "compose", "unknown")  # a rejection there left no composed image


def pick(keys: Iterable[str], seed: str, count: int) -> list[str]:
    """Up to `count` of `keys`, drawn at random with a generator seeded by `seed`; in key order."""
    population = sorted(set(keys))
    generator = random.Random(int.from_bytes(hashlib.sha256(seed.encode("utf-8")).digest()[:8], "big"))
    return sorted(generator.sample(population, min(count, len(population))))


def full_image(key: str, extension: str) -> str:
    """Where the card's full image of `key` lies, relative to card.html."""
    return f"{FOLDER}/{key}.{extension}"


def rejected_sample(rows: list[dict[str, Any]], seed: str) -> list[dict[str, Any]]:
    """The rejected rows the card shows: a seeded sample of those rejected after compose."""
    shown = set(pick((r["key"] for r in rows if r["stage"] not in IMAGELESS_STAGES), seed, REJECTED_STRIP))
    return [row for row in rows if row["key"] in shown]


class ComposedImages:
    """The composed image of a rejected key in `folder` (build/images, or a card's own `card/`
    folder), looked up by name when asked: listing the folder would read 100,000 names at
    20,000 images to show six. A key is a plain name (letters, digits, - and _), so a hostile
    rejected.jsonl cannot name a path outside the folder; only a regular file (or a link to
    one, as DVC's link cache types make) is an image, never a pipe or a device."""

    def __init__(self, folder: Path, extensions: Iterable[str]):
        self.folder, self.extensions = folder, tuple(extensions)

    def get(self, key: str) -> Path | None:
        """`<key>.<extension>` for the first extension with a regular file, or None."""
        if not (key and all(c.isascii() and (c.isalnum() or c in "-_") for c in key)):
            return None
        for extension in self.extensions:
            path = self.folder / f"{key}.{extension}"
            try:
                if stat.S_ISREG(os.stat(path).st_mode):
                    return path
            except OSError:
                continue
        return None


def card_files(summary: dict[str, Any]) -> dict[str, bytes]:
    """The full images of every thumbnail on the card, by path relative to card.html."""
    return {entry["file"]: entry["full"] for composition in summary["compositions"].values()
            for entry in composition["sheet"] + composition["rejected_sheet"]}
