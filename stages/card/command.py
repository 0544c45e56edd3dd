"""`g4g card [--dataset DIR] [-o OUT.html]`: write the dataset card page of a built dataset.

Regenerates `dataset/card.html` (what pack writes when the recipe's `output.card_html` is on)
from the dataset folder alone: its shards, rejected.jsonl, recipe.json and the rejected images
pack wrote in `card/`. The page is the same, byte for byte, as the one pack writes for that
dataset; the full images its thumbnails open are written in `card/` beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from base.files import atomic_write_bytes, check_output
    from stages.card.page import page, read_dataset  # numpy, Pillow and jinja2: only when a card is written
    from stages.card.sample import card_files

    out = args.output or args.dataset / "card.html"
    check_output(out)  # before the work, not after
    summary = read_dataset(args.dataset)
    for name, data in sorted(card_files(summary).items()):  # the full images, beside the page
        if not (out.parent / name).is_file() or (out.parent / name).read_bytes() != data:
            atomic_write_bytes(out.parent / name, data)
    atomic_write_bytes(out, page(summary).encode("utf-8"))
    for problem in summary["problems"]:  # members of a damaged or hostile dataset, left out
        print(f"skipped {problem}", file=sys.stderr)
    print(f"wrote {out}")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `card` to the `g4g` subcommands."""
    card = commands.add_parser("card", help="write the dataset card page (card.html) of a built dataset",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    card.add_argument("--dataset", type=Path, default=Path("dataset"), help="the dataset folder (default: dataset)")
    card.add_argument("-o", "--output", type=Path, metavar="OUT.html",
                      help="where to write the page (default: DATASET/card.html)")
    card.set_defaults(run=run)
    return card
