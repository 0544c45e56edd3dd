"""`g4g diff [REV_A [REV_B]]`: what changed in the dataset between two versions, sample by sample.

Like `git diff`: no revision compares HEAD with the workspace, one compares REV_A with the
workspace, two compare REV_A with REV_B (git revisions or DVC experiment names; their
`dataset/` comes from the local DVC cache). Reports the recipe keys that changed, per
composition the samples added, removed, changed (and which parts) and unchanged, images that
flipped between kept and rejected with their reasons, and counts, keep rates and mean
measurements with deltas. `--json` prints the same as stable JSON, `--html OUT.html` writes a
self-contained page with before/after thumbnails, `--exit-code` exits 1 when anything differs.

Each side is read from its `manifest.jsonl` (every sample's provenance and member digests,
recorded by pack), `rejected.jsonl` and `recipe.json`: no shard is opened but those holding
the page's thumbnails. `--verify` also streams every shard and checks it holds exactly what
the manifest says (member sha256 and JSON), and exits 2 when it does not. A dataset packed
before the manifest held digests is read from its shards.

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


def _side(root: Path, rev: str | None, verify: bool) -> Snapshot:
    return workspace(root, verify) if rev is None else revision(root, rev, verify)


def run(args: argparse.Namespace) -> int:
    """Compare, print (table or JSON), write the page; 1 with --exit-code when anything differs,
    2 when --verify finds shards that differ from their manifest."""
    from rich.console import Console

    from base.files import atomic_write_bytes, check_output
    from base.keys import canonical_json
    from compiler.diff.compare import compare
    from compiler.diff.render import terminal

    if args.html is not None:
        check_output(args.html)  # before the work, not after
    root = Path.cwd()
    before = _side(root, args.rev_a or "HEAD", args.verify)
    after = _side(root, args.rev_b, args.verify)
    for note in before.notes + after.notes:
        print(note, file=sys.stderr)
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
    mismatches = before.mismatches + after.mismatches
    for mismatch in mismatches:
        print(mismatch, file=sys.stderr)
    if args.verify:
        print(f"verify: {len(mismatches)} differences between the shards and their manifest" if mismatches else
              "verify: every shard holds what its manifest says", file=sys.stderr)
    if mismatches:
        return 2
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
    diff.add_argument("--verify", action="store_true",
                      help="also read every shard and check it holds what the manifest says (exit 2 when not)")
    diff.set_defaults(run=run)
    return diff
