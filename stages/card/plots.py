"""The packed dataset as DVC plots, so `dvc plots show` and `dvc plots diff HEAD~1` show how the
dataset looks and how it changed. Written by pack into reports/pack_plots/:

  keep_rate.csv                      per composition: concepts, images, kept, keep_rate and
                                     paper_keep_rate (Gen4Gen's human rating kept 53% / 32% / 22%)
  caption_lengths.csv                per word count: how many short and detailed captions have it
  contact_sheets/<composition>.jpg   the composition's samples on the card (a seeded random sample)

The folder is rewritten whole (a removed composition leaves no stale sheet) and byte-stable.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Any

from base.files import write_folder
from stages.card.figures import contact_sheet

KEEP_RATE_COLUMNS = ["composition", "concepts", "images", "kept", "keep_rate", "paper_keep_rate"]


def _csv(header: list[str], rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def keep_rates(summary: dict[str, Any]) -> bytes:
    return _csv(KEEP_RATE_COLUMNS, [
        [name, len(c["concepts"]), c["images"], c["kept"], "" if c["keep_rate"] is None else round(c["keep_rate"], 4),
         c["paper_keep_rate"]] for name, c in summary["compositions"].items()])


def caption_lengths(summary: dict[str, Any]) -> bytes:
    """Every word count from the shortest caption to the longest, zeros included, so the
    histogram's line is continuous."""
    counts = {kind: Counter(n for c in summary["compositions"].values() for n in c["words"][kind])
              for kind in ("short", "detailed")}
    present = [n for kind in counts.values() for n in kind]
    span = range(min(present), max(present) + 1) if present else range(0)
    return _csv(["words", "short", "detailed"], [[n, counts["short"][n], counts["detailed"][n]] for n in span])


def write_plots(summary: dict[str, Any], directory: Path) -> None:
    """Write the plot files of `summary` (see stages.card.page.summarize) into `directory`."""
    files = {"keep_rate.csv": keep_rates(summary), "caption_lengths.csv": caption_lengths(summary)}
    for name, composition in summary["compositions"].items():
        if composition["sheet"]:
            buffer = io.BytesIO()
            contact_sheet([s["image"] for s in composition["sheet"]]).save(buffer, format="JPEG", quality=85)
            files[f"contact_sheets/{name}.jpg"] = buffer.getvalue()
    write_folder(directory, files)
    (directory / "contact_sheets").mkdir(exist_ok=True)  # the image plot's folder, even with no sheet
