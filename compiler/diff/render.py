"""The diff as rich tables on a terminal (plain text when piped).

Every string from the dataset (captions, reasons, recipe values) goes in as `Text`, never as
markup, so brackets in a caption cannot restyle the output.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from base.untrusted import escape_controls
from compiler.diff.compare import same_change

SAMPLE_ROWS = 50  # flips listed per composition; --json lists them all
WHY_LINES = 10  # ways samples changed, one line each; --json has every sample's causes


def new_table(title: str) -> Table:
    """A table without outer borders, so seven columns of long composition names fit 80 columns."""
    return Table(title=title, title_justify="left", show_edge=False, pad_edge=False)


def plain(value: Any) -> Text:
    """A value from the dataset as inert text: JSON for structures, `-` for none, controls escaped."""
    shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return Text(escape_controls(shown if value is not None else "-"))


def number(value: Any) -> str:
    """A count as it is, a rate (the only float in the counts) as a percentage."""
    if value is None:
        return "-"
    return f"{value:.1%}" if isinstance(value, float) else str(value)


def change(old: Any, new: Any, difference: Any) -> Text:
    """`8 (+2)`: the new value and the change, or the value alone when it did not change."""
    if old == new:
        return Text(number(new))
    if difference is None:
        return Text(f"{number(old)} -> {number(new)}", style="bold")
    sign = "+" if difference > 0 else ""
    shown = f"{sign}{difference:.1%}" if isinstance(difference, float) else f"{sign}{difference}"
    return Text(f"{number(new)} ({shown})", style="bold")


def recipe_table(report: dict[str, Any]) -> Table:
    table = new_table("recipe")
    for column in ("Path", "Old", "New"):
        table.add_column(column)
    for key, values in report["recipe"].items():
        table.add_row(plain(key), plain(values["old"]), plain(values["new"]))
    return table


def counts_table(report: dict[str, Any]) -> Table:
    table = new_table("counts")
    table.add_column("composition", no_wrap=True)
    for column in ("images", "kept", "rejected", "keep rate"):
        table.add_column(column, justify="right")
    for name, comp in report["compositions"].items():
        old, new, difference = comp["stats"]["old"], comp["stats"]["new"], comp["stats"]["delta"]
        table.add_row(plain(name), *(change(old[k], new[k], difference.get(k))
                                    for k in ("images", "kept", "rejected", "keep_rate")))
    return table


def compositions_table(report: dict[str, Any]) -> Table:
    table = new_table("samples per composition (now kept / now rejected: images that flipped)")
    table.add_column("composition", no_wrap=True)
    for column in ("added", "removed", "changed", "same", "now kept", "now rejected"):
        table.add_column(column, justify="right")
    for name, comp in report["compositions"].items():
        table.add_row(plain(name), *(str(len(comp[k])) for k in ("added", "removed", "changed", "unchanged",
                                                                 "now_kept", "now_rejected")))
    return table


def means_table(report: dict[str, Any]) -> Table | None:
    rows = [(name, metric, comp["stats"]["old"]["means"].get(metric), comp["stats"]["new"]["means"].get(metric),
             comp["stats"]["delta"]["means"].get(metric))
            for name, comp in report["compositions"].items()
            for metric in sorted(comp["stats"]["old"]["means"].keys() | comp["stats"]["new"]["means"].keys())]
    rows = [row for row in rows if row[2] != row[3]]
    if not rows:
        return None
    table = new_table("mean measurements of kept samples")
    for column in ("composition", "metric", "old", "new", "change"):
        table.add_column(column)
    for name, metric, old, new, difference in rows:
        table.add_row(plain(name), Text(metric), *("-" if v is None else f"{v:.4f}" for v in (old, new)),
                      "-" if difference is None else f"{difference:+.4f}")
    return table


def some(keys: list[str]) -> Text:
    """A few sample keys, and how many there are."""
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return Text(escape_controls(shown if len(keys) == 1 else f"{len(keys)}: {shown}"))


def samples(keys: list[str]) -> str:
    return f"{len(keys)} sample{'' if len(keys) == 1 else 's'}"


def because(causes: tuple[str, ...] | list[str]) -> str:
    return "; ".join(causes) if causes else "cause unknown"


def why(report: dict[str, Any]) -> list[Text]:
    """One line per way samples changed, over every composition: how many, which parts, why."""
    changed = {key: entry for comp in report["compositions"].values() for key, entry in comp["changed"].items()}
    rekeyed = {key: entry for comp in report["compositions"].values() for key, entry in comp["rekeyed"].items()}
    lines = [f"{samples(keys)} changed: {', '.join(parts)} ({because(causes)})"
             for parts, causes, keys in same_change(changed)]
    lines += [f"{samples(keys)} unchanged but re-keyed ({because(causes)}; --json lists them)"
              for _, causes, keys in same_change(rekeyed)]
    if len(lines) > WHY_LINES:
        lines = lines[:WHY_LINES] + [f"... and {len(lines) - WHY_LINES} more ways (--json gives each sample's causes)"]
    return [Text(escape_controls(line)) for line in lines]


def samples_table(report: dict[str, Any]) -> Table | None:
    """Added, removed and changed samples grouped by what changed and why (with an example
    caption change), then each flip between kept and rejected with its reasons."""
    rows = []
    for comp in report["compositions"].values():
        rows += [(some(comp[status]), status, Text("")) for status in ("added", "removed") if comp[status]]
        for parts, causes, keys in same_change(comp["changed"]):
            detail = Text(f"{', '.join(parts)}\n  because: {escape_controls(because(causes))}")
            captions = comp["changed"][keys[0]].get("captions")
            if captions:
                detail.append(f"\n  e.g. {escape_controls(captions['old']['short'])!r}\n    -> "
                              f"{escape_controls(captions['new']['short'])!r}")
            rows.append((some(keys), "changed", detail))
        flips = [(key, "now kept", "was rejected: " + "; ".join(entry["reasons"]))
                 for key, entry in comp["now_kept"].items()]
        flips += [(key, "now rejected", "; ".join(entry["reasons"])) for key, entry in comp["now_rejected"].items()]
        rows += [(plain(key), status, plain(reasons)) for key, status, reasons in flips[:SAMPLE_ROWS]]
        if len(flips) > SAMPLE_ROWS:
            rows.append((Text("..."), f"{len(flips) - SAMPLE_ROWS} more flips", Text("--json lists them all")))
    if not rows:
        return None
    table = new_table("samples")
    for column in ("samples", "status", "what"):
        table.add_column(column)
    for keys, status, detail in rows:
        table.add_row(keys, status, detail)
    return table


def photos_table(report: dict[str, Any]) -> Table | None:
    if not report["photos"]:
        return None
    table = new_table("photos replaced (same source, new bytes)")
    for column in ("photo", "old sha256", "new sha256"):
        table.add_column(column)
    for source, digests in report["photos"].items():
        table.add_row(plain(source), ", ".join(d[:12] for d in digests["old"]), ", ".join(d[:12] for d in digests["new"]))
    return table


def terminal(report: dict[str, Any], console: Console) -> None:
    a, b = report["a"], report["b"]
    console.print(Text(f"g4g diff {a['label']} -> {b['label']}", style="bold"))
    if not report["differs"]:
        console.print("no differences in the dataset or its recipe")
        return
    if a["recipe_key"] != b["recipe_key"]:
        console.print(Text(f"recipe key {a['recipe_key']} -> {b['recipe_key']}"))
    for line in why(report):
        console.print(line)
    tables = [recipe_table(report) if report["recipe"] else None, photos_table(report), counts_table(report),
              compositions_table(report),
              means_table(report), samples_table(report)]
    for table in tables:
        if table is not None:
            console.print(table)
