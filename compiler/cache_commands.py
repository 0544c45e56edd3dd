"""`g4g cache verify [--repair] | gc | stats`: check, prune or measure the item cache
(stages/runtime/cache_maintenance.py does the work, only in a cache folder g4g created)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compiler.arguments import bounded


def _cache_root() -> Path:
    from base.settings import load_settings

    return Path(load_settings().cache_dir)


def _left_alone(root: Path, paths: list[Path]) -> None:
    from stages.runtime.cache_maintenance import shown

    if paths:
        print(f"left alone {len(paths)} path(s) in {root} that are not g4g cache entries: {shown(paths, root)}",
              file=sys.stderr)


def _cache_verify(args: argparse.Namespace) -> int:
    from stages.runtime.cache_maintenance import verify

    root = _cache_root()
    outcome = verify(root, repair=args.repair)
    _left_alone(root, outcome.unknown)
    for entry, damage in sorted(outcome.damaged.items()):
        print(f"damaged {entry}: {damage}{' (removed)' if args.repair else ''}")
    print(f"{outcome.checked} entries checked, {len(outcome.damaged)} damaged"
          + (f", {outcome.repaired} removed (the next build recomputes them)" if args.repair else
             ("; `g4g cache verify --repair` removes them" if outcome.damaged else "")))
    return 1 if outcome.damaged and not args.repair else 0


def _cache_gc(args: argparse.Namespace) -> int:
    from stages.runtime.cache_maintenance import gc

    root = _cache_root()
    outcome = gc(root, args.keep_days, dry_run=args.dry_run)
    _left_alone(root, outcome.unknown)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {outcome.removed} entries ({outcome.freed / 1e6:.1f} MB) not used by the last build; "
          f"kept {outcome.kept} younger than {args.keep_days:g} days")
    return 0


def _cache_stats(args: argparse.Namespace) -> int:
    from stages.runtime.cache_maintenance import stats

    table = stats(_cache_root())
    for stage, numbers in table.items():
        print(f"{stage:10s} {numbers['entries']:8d} entries {numbers['bytes'] / 1e6:10.1f} MB")
    total = sum(n["bytes"] for n in table.values())
    print(f"{'total':10s} {sum(n['entries'] for n in table.values()):8d} entries {total / 1e6:10.1f} MB")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Add `cache` and its subcommands to the `g4g` subcommands."""
    cache = commands.add_parser("cache", help="verify, prune or measure the item cache").add_subparsers(
        dest="cache_command", required=True)
    verify = cache.add_parser("verify", help="check every entry's files against its record")
    verify.add_argument("--repair", action="store_true", help="remove damaged entries (rebuilt on the next build)")
    verify.set_defaults(run=_cache_verify)
    gc = cache.add_parser("gc", help="remove entries the last build did not use")
    gc.add_argument("--keep-days", type=bounded(float, 0, 36500), default=7.0,
                    help="keep unused entries younger than this (other recipes' items; default 7)")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    gc.set_defaults(run=_cache_gc)
    cache.add_parser("stats", help="entries and bytes per stage").set_defaults(run=_cache_stats)
