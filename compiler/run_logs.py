"""`g4g report`: print the stages' run logs (reports/<stage>.json: items computed, reused,
failed, seconds). They describe a run, not the dataset: not DVC metrics, not tracked in git."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from base.files import loads_json

STAGES = ("extract", "plan", "compose", "caption", "score", "pack", "train", "evaluate")
COLUMNS = ("items", "computed", "reused", "failed", "seconds")


def table(reports_dir: Path) -> list[str]:
    """One line per stage that left a run log."""
    lines = [f"{'stage':10s}" + "".join(f"{column:>10s}" for column in COLUMNS)]
    for stage in STAGES:
        path = reports_dir / f"{stage}.json"
        try:
            report = loads_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # no run log, or a damaged one: reads as absent
        if isinstance(report, dict):
            lines.append(f"{stage:10s}" + "".join(f"{report.get(column, ''):>10}" for column in COLUMNS))
    return lines


def _report(args: Any) -> int:
    if args.stage:
        print((args.reports / f"{args.stage}.json").read_text(), end="")
    else:
        print("\n".join(table(args.reports)))
    return 0


def add_parser(commands: Any) -> None:
    command = commands.add_parser("report", help="the last build's run logs (reports/<stage>.json)")
    command.add_argument("stage", nargs="?", choices=STAGES, help="print this stage's whole log")
    command.add_argument("--reports", type=Path, default=Path("reports"))
    command.set_defaults(run=_report)
