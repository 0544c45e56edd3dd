"""`g4g diff [REV_A [REV_B]]`: what changed in the dataset between two versions, sample by sample.

Like `git diff`: no revision compares HEAD with the workspace, one compares REV_A with the
workspace, two compare REV_A with REV_B (git revisions or DVC experiment names; their
`dataset/` comes from the local DVC cache). Reports the recipe keys that changed, per
composition the samples added, removed, changed (and which parts) and unchanged, images that
flipped between kept and rejected with their reasons, and counts, keep rates and mean
measurements with deltas. `--json` prints the same as stable JSON, `--html OUT.html` writes a
self-contained page with before/after thumbnails, `--exit-code` exits 1 when anything differs.

  snapshot.py  read one side (a revision through DVC's API, or the workspace)
  compare.py   the comparison, as JSON-ready data
  render.py    rich tables for the terminal
  html.py      the HTML page
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compiler.diff.snapshot import DiffError, Snapshot, revision, workspace

__all__ = ["DiffError", "add_parser", "run"]


def _side(root: Path, rev: str | None) -> Snapshot:
    return workspace(root) if rev is None else revision(root, rev)


def run(args: argparse.Namespace) -> int:
    """Compare, print (table or JSON), write the page; 1 with --exit-code when anything differs."""
    from rich.console import Console

    from base.files import atomic_write_bytes, check_output
    from base.keys import canonical_json
    from compiler.diff.compare import compare
    from compiler.diff.render import terminal

    if args.html is not None:
        check_output(args.html)  # before the work, not after
    root = Path.cwd()
    before = _side(root, args.rev_a or "HEAD")
    after = _side(root, args.rev_b)
    report = compare(before, after)
    if args.json:
        sys.stdout.write(canonical_json(report) + "\n")
    else:
        terminal(report, Console())
    if args.html is not None:
        from compiler.diff.html import page

        try:
            atomic_write_bytes(args.html, page(report, before, after).encode("utf-8"))
        except OSError as error:
            raise DiffError(f"{args.html}: cannot write the page there ({error.strerror}); valid: a file path in "
                            f"a folder you can write") from None
        if not args.json:
            print(f"wrote {args.html}")
    for problem in before.problems + after.problems:  # members of a damaged or hostile dataset, left out
        print(f"skipped {problem}", file=sys.stderr)
    return 1 if args.exit_code and report["differs"] else 0


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `diff` to the `g4g` subcommands."""
    diff = commands.add_parser("diff", help="what changed in the dataset between revisions, sample by sample",
                               description=__doc__.split("\n\n  snapshot.py")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    diff.add_argument("rev_a", nargs="?", metavar="REV_A", help="the old version (default: HEAD)")
    diff.add_argument("rev_b", nargs="?", metavar="REV_B", help="the new version (default: the workspace)")
    diff.add_argument("--json", action="store_true", help="print the comparison as JSON")
    diff.add_argument("--html", type=Path, metavar="OUT.html", help="write a page with before/after thumbnails")
    diff.add_argument("--exit-code", action="store_true", help="exit 1 when anything differs, like git diff")
    diff.set_defaults(run=run)
    return diff
