"""`g4g table`: Gen4Gen's Table 1 from `dvc exp show --json`, our numbers beside the paper's.

Each experiment (and each commit shown) with an evaluation becomes a row under the paper
setting its training matches (source photos / composed dataset / + prompting strategies, read
from metrics/evaluate.json's `setting`), right below the paper's own row for that setting;
cells are CP-CLIP / TI-CLIP per bin of <=3, 4 and 5 concepts. Base-model scores
(`baseline: true`) come last. The workspace row is left out when experiments are shown (it
repeats the last one run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from stages.metrics.aggregate import BINS, PAPER_SETTINGS, PAPER_TABLE1

METRICS_FILE = "metrics/evaluate.json"
EMPTY = "-"


def _metrics(data: dict[str, Any] | None) -> dict[str, Any] | None:
    found = ((data or {}).get("metrics") or {}).get(METRICS_FILE) or {}
    return found.get("data")


def experiments(exp_show: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any] | None]]:
    """(name, metrics/evaluate.json) of every commit and experiment in `dvc exp show --json`
    output, in its order; the workspace only when nothing else has metrics."""
    found, workspace = [], []
    for commit in exp_show:
        name = commit.get("name") or commit.get("rev", "?")[:7]
        (workspace if commit.get("rev") == "workspace" else found).append((name, _metrics(commit.get("data"))))
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                found.append((rev.get("name") or rev.get("rev", "?")[:7], _metrics(rev.get("data"))))
    return found if any(metrics for _, metrics in found) else workspace + found


def cell(bins: dict[str, Any], bin_name: str) -> str:
    values = bins.get(bin_name) or {}
    if values.get("cp_clip") is None or values.get("ti_clip") is None:
        return EMPTY
    return f"{values['cp_clip']:.2f} / {values['ti_clip']:.2f}"


def format_table(exp_show: list[dict[str, Any]]) -> str:
    """The table as text: per paper setting its row, then ours; base models; then what had no evaluation."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {setting: [] for setting in PAPER_SETTINGS}
    baselines, missing = [], []
    for name, metrics in experiments(exp_show):
        if not metrics or not metrics.get("evaluated"):
            missing.append(f"{name}: {(metrics or {}).get('reason', f'no {METRICS_FILE}')}")
            continue
        if metrics.get("bins"):
            groups.setdefault((metrics.get("setting") or {}).get("paper_row", "?"), []).append((name, metrics["bins"]))
        if (metrics.get("baseline") or {}).get("bins"):
            baselines.append((name, metrics["baseline"]["bins"]))
    lines = [("setting", "experiment", *BINS)]
    for setting, rows in groups.items():
        paper = PAPER_TABLE1.get(setting)
        if paper:
            lines.append((PAPER_SETTINGS[setting], "paper", *(f"{paper[b][0]:.2f} / {paper[b][1]:.2f}" for b in BINS)))
        else:
            lines.append(("(setting not recorded)", "", *[""] * len(BINS)))
        lines += [("", name, *(cell(bins, b) for b in BINS)) for name, bins in rows]
    if baselines:
        lines.append(("untrained base model", "", *[""] * len(BINS)))
        lines += [("", name, *(cell(bins, b) for b in BINS)) for name, bins in baselines]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = ["Gen4Gen Table 1: CP-CLIP / TI-CLIP per number of concepts (higher CP-CLIP is better; "
            "TI-CLIP should stay flat)"]
    text += ["  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip() for line in lines]
    text += [f"not evaluated: {line}" for line in missing]
    return "\n".join(text) + "\n"


def run(exp_show_file: Path | None = None) -> int:
    """Print the table from a saved `dvc exp show --json` file, or from running it here."""
    if exp_show_file is not None:
        exp_show = json.loads(Path(exp_show_file).read_text())
    else:
        shown = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], capture_output=True, text=True)
        if shown.returncode != 0:
            raise ValueError(f"`dvc exp show --json` failed: {shown.stderr.strip()}")
        exp_show = json.loads(shown.stdout)
    print(format_table(exp_show), end="")
    return 0
