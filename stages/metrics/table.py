"""`g4g table`: Gen4Gen's Table 1 from `dvc exp show --json`, our numbers beside the paper's.

Each experiment (and each commit shown) with an evaluation becomes a row labelled with its
training backend and the weights it reports (`final`; `best`, chosen on the evaluation
prompts, in a row of its own when the experiment kept every checkpoint). Custom Diffusion rows
sit under the paper setting their training matches (source photos / composed dataset /
+ prompting strategies), right below the paper's row (which reports each composition's best
checkpoint); other backends get their own setting with no paper numbers. Rows are comparable
only at the same sampling and metric options (`protocol`): each protocol is a block of its
own. The untrained base model, which paints class nouns and is the same in every experiment
on a recipe, is one row per block; base rows that differ are shown apart, each named. Cells
are CP-CLIP / TI-CLIP per bin of <=3, 4 and 5 concepts. The workspace row is left out when
experiments are shown (it repeats the last one run). Where rows of a block were run with
different recipe choices beyond those their setting names (`dvc exp run -S` overrides, e.g. a
learning rate), a last column names each row's: `train.learning_rate=0.001`.

The DVC metrics (`metrics/evaluate.json`) hold results only; how each model was made (its
`setting`: backend, data, strategies, protocol) is read from that revision's
`evaluation/summary.json` in DVC's cache. Metrics from before that split carry the setting
themselves, and are read as they are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from stages.metrics.aggregate import BINS, PAPER_SETTINGS, PAPER_TABLE1

METRICS_FILE = "metrics/evaluate.json"
SUMMARY_FILE = "evaluation/summary.json"  # a DVC output of evaluate: the setting beside every mean
EMPTY = "-"
LABELLED = ("train.name", "train.data", "strategy.", "strategies@strategy")  # the setting column says these
UNSET = "(recipe)"  # a choice another row overrides and this one leaves to the recipe


def _metrics(data: dict[str, Any] | None) -> dict[str, Any] | None:
    found = ((data or {}).get("metrics") or {}).get(METRICS_FILE) or {}
    return found.get("data")


def _choices(data: dict[str, Any] | None) -> dict[str, str]:
    """A revision's recipe choices in `params.yaml` (its recipe, each override) as key -> value."""
    params = (((data or {}).get("params") or {}).get("params.yaml") or {}).get("data") or {}
    found = {"recipe": str(params["recipe"])} if "recipe" in params else {}
    for override in params.get("overrides") or []:
        key, _, value = str(override).lstrip("+~").partition("=")
        found[key.removeprefix("backends.")] = value
    return found


def experiments(exp_show: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any] | None, dict[str, str]]]:
    """(name, revision, metrics/evaluate.json, recipe choices) of every commit and experiment in
    `dvc exp show --json` output, in its order; the workspace only when nothing else has metrics."""
    found, workspace = [], []
    for commit in exp_show:
        rev = commit.get("rev", "?")
        entry = (commit.get("name") or rev[:7], rev, _metrics(commit.get("data")), _choices(commit.get("data")))
        (workspace if rev == "workspace" else found).append(entry)
        for experiment in commit.get("experiments") or []:
            for run in experiment.get("revs") or []:
                rev = run.get("rev", "?")
                found.append((run.get("name") or rev[:7], rev, _metrics(run.get("data")), _choices(run.get("data"))))
    return found if any(entry[2] for entry in found) else workspace + found


def _value(text: str | None) -> str:
    """An override's value as a reader compares it: numbers in one form (1e-3 -> 0.001)."""
    if text is None:
        return UNSET
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def differences(choices: list[dict[str, str]]) -> list[str]:
    """Per row, the recipe choices that are not the same in every row (beyond those the setting
    column names), as `key=value, ...`."""
    keys = sorted({key for row in choices for key in row if not key.startswith(LABELLED)})
    varying = [key for key in keys if len({_value(row.get(key)) for row in choices}) > 1]
    return [", ".join(f"{key}={_value(row.get(key))}" for key in varying) for row in choices]


def recorded_settings(root: Path) -> Callable[[str], dict[str, Any]]:
    """A reader of the `setting` in `evaluation/summary.json` at a revision (`workspace`: the
    file on disk; a commit or experiment: through DVC from its cache); {} where it is not there."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException

    def read(rev: str) -> dict[str, Any]:
        try:
            if rev == "workspace":
                text = (root / SUMMARY_FILE).read_text(encoding="utf-8")
            else:
                with DVCFileSystem(str(root), rev=rev).open(SUMMARY_FILE, "r") as stream:
                    text = stream.read()
            summary = json.loads(text)
        except (OSError, ValueError, DvcException):
            return {}
        return (summary.get("setting") or {}) if isinstance(summary, dict) else {}
    return read


def cell(bins: dict[str, Any], bin_name: str) -> str:
    values = bins.get(bin_name) or {}
    if values.get("cp_clip") is None or values.get("ti_clip") is None:
        return EMPTY
    return f"{values['cp_clip']:.2f} / {values['ti_clip']:.2f}"


def _setting(setting: dict[str, Any]) -> str:
    """The row group: a paper setting for Custom Diffusion, else the backend and its data."""
    if setting.get("paper_row") in PAPER_SETTINGS and setting.get("train", "custom-diffusion") == "custom-diffusion":
        return PAPER_SETTINGS[setting["paper_row"]]
    data = "source photos" if setting.get("data") == "source" else "composed dataset"
    strategies = "" if setting.get("strategies", "none") == "none" else f" + {setting['strategies']}"
    return f"{setting.get('train', '?')} + {data}{strategies}"


def _cells(bins: dict[str, Any]) -> tuple[str, ...]:
    return tuple(cell(bins, b) for b in BINS)


def _block(experiments: list[tuple[str, dict[str, Any], dict[str, str]]]) -> list[tuple[str, ...]]:
    """The header and rows of one protocol: per setting the paper's row then ours; then the base
    model. A last column, where rows differ in other recipe choices, names each row's."""
    groups: dict[str, list[tuple[str, ...]]] = {PAPER_SETTINGS[s]: [] for s in PAPER_SETTINGS}
    baselines: dict[tuple[str, ...], list[str]] = {}
    differs = differences([choices for _, _, choices in experiments])
    extra = (lambda text: (text,)) if any(differs) else (lambda text: ())
    for (name, metrics, _), differ in zip(experiments, differs):
        setting = metrics.get("setting") or {}
        backend = setting.get("train", "?")
        if metrics.get("bins"):
            groups.setdefault(_setting(setting), []).append(("", name, backend, "final", *_cells(metrics["bins"]),
                                                             *extra(differ)))
        if (metrics.get("best_checkpoint") or {}).get("bins"):
            groups[_setting(setting)].append(("", name, backend, "best*", *_cells(metrics["best_checkpoint"]["bins"]),
                                              *extra(differ)))
        if (metrics.get("baseline") or {}).get("bins"):
            baselines.setdefault(_cells(metrics["baseline"]["bins"]), []).append(name)
    lines = [("setting", "experiment", "backend", "weights", *BINS, *extra("differs"))]
    paper_rows = {PAPER_SETTINGS[key]: key for key in PAPER_SETTINGS}
    for label, rows in groups.items():
        if not rows:
            continue
        if label in paper_rows:
            paper = PAPER_TABLE1[paper_rows[label]]
            lines.append((label, "paper", "custom-diffusion", "best",
                          *(f"{paper[b][0]:.2f} / {paper[b][1]:.2f}" for b in BINS), *extra("")))
        else:
            lines.append((label, "", "", "", *[""] * len(BINS), *extra("")))
        lines += rows
    for cells, names in baselines.items():
        label = "untrained base model (class nouns)" if len(baselines) == 1 else "untrained base model (differs)"
        who = f"{len(names)} experiments" if len(baselines) == 1 and len(names) > 1 else ", ".join(names)
        lines.append((label, who, "none", "-", *cells, *extra("")))
    return lines


def format_table(exp_show: list[dict[str, Any]],
                 setting_at: Callable[[str], dict[str, Any]] = lambda rev: {}) -> str:
    """The table as text: a block per protocol; then what had no evaluation. `setting_at(rev)`
    gives the setting of a revision whose metrics do not carry it."""
    blocks: dict[str, list[tuple[str, dict[str, Any], dict[str, str]]]] = {}
    missing = []
    for name, rev, metrics, choices in experiments(exp_show):
        if not metrics or not metrics.get("evaluated"):
            missing.append(f"{name}: {(metrics or {}).get('reason', f'no {METRICS_FILE}')}")
            continue
        metrics = {**metrics, "setting": metrics.get("setting") or setting_at(rev)}
        blocks.setdefault(metrics["setting"].get("protocol") or "not recorded", []).append((name, metrics, choices))
    text = ["Gen4Gen Table 1: CP-CLIP / TI-CLIP per number of concepts (higher CP-CLIP is better; "
            "TI-CLIP should stay flat). weights: final, or best* = best checkpoint chosen on the evaluation "
            "prompts (the paper's rows report the best)"]
    for number, (protocol, found) in enumerate(blocks.items()):
        lines = _block(found)
        widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
        note = "" if number == 0 else "  (not comparable with the rows above)"
        text += ["", f"protocol: {protocol}{note}"]
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
    print(format_table(exp_show, recorded_settings(Path.cwd())), end="")
    return 0
