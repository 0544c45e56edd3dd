"""The edit loop on the demo: what a user waits for between an edit and a rebuilt dataset.

In one run, on a fresh copy of the project (its own git repository and item cache), measures:
  clean build         `dvc repro` from nothing (and each stage's own work per image)
  dvc status          DVC's own floor: reading the graph and checking every stage's deps
  no-op repro         `dvc repro` with nothing changed (the `compile` stage always runs)
  validate            `g4g validate` (compose, check and forecast the recipe)
  one-image edit      `dvc repro` after one composition gains one image
  one-composition     `dvc repro` after one composition is re-seeded (all its images change)
  g4g diff            the last edit against the committed build before it
and prints each as seconds and as ratios to `dvc status` and to the clean build. Every
figure but the clean build and the edits is the median of `--repeats` runs; the load average
is printed beside them (these machines are shared). For each edit, the seconds of each stage
(DVC's own hashing and recording included) and the shards pack rewrote; then the disk each
copy of the data takes (a hard-linked file counted once, where first seen).

    python bench/edit_loop.py [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from project_copy import commit, copy_project, disk_use, edit_recipe, report_json, timed, timed_repro  # noqa: E402

EDITED = "cat_houseplant"  # the demo's smallest composition
WORK_STAGES = ("extract", "plan", "compose", "caption", "score", "pack")


def median(root: Path, command: list[str], repeats: int) -> float:
    return statistics.median(timed(root, command) for _ in range(repeats))


def edit_composition(root: Path, change) -> None:
    edit_recipe(root, "demo", lambda recipe: change(recipe["compositions"][EDITED]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build in this (new) folder and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="g4g-edit-loop-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        copy_project(root)
        stages = {"clean build": timed_repro(root)}
        shards = {"clean build": report_json(root, "pack").get("computed")}
        work = {stage: report_json(root, stage).get("seconds") for stage in WORK_STAGES}
        built = report_json(root, "plan").get("items") or 1  # images of the clean build
        figures = {"clean build": stages["clean build"]["total"]}
        figures["dvc status"] = median(root, ["dvc", "status"], args.repeats)
        figures["no-op repro"] = median(root, ["dvc", "repro"], args.repeats)
        figures["validate"] = median(root, ["g4g", "validate"], args.repeats)
        commit(root, "built")
        edit_composition(root, lambda composition: composition.update(num_images=composition["num_images"] + 1))
        stages["one-image edit"] = timed_repro(root)
        shards["one-image edit"] = report_json(root, "pack").get("computed")
        edit_composition(root, lambda composition: composition.update(seed=1))
        stages["one-composition edit"] = timed_repro(root)
        shards["one-composition edit"] = report_json(root, "pack").get("computed")
        figures.update((name, seconds["total"]) for name, seconds in stages.items())
        figures["g4g diff"] = median(root, ["g4g", "diff"], args.repeats)
        disk = disk_use(root)
        planned = {name: c["num_images"] for name, c in yaml.safe_load((root / "recipes/demo.yaml").read_text())[
            "compositions"].items()}
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    floor, clean = figures["dvc status"], figures["clean build"]
    edited, total = planned[EDITED], sum(planned.values())
    print(f"edit loop on the demo ({total} images), {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"median of {args.repeats} where repeated")
    print(f"{'':22} {'seconds':>8} {'x dvc status':>13} {'x clean build':>14}")
    for name, seconds in figures.items():
        print(f"{name:22} {seconds:8.2f} {seconds / floor:13.2f} {seconds / clean:14.3f}")
    print(f"one-composition edit recomputes {EDITED}: {edited} of {total} images ({edited / total:.2f} of the items)")
    print("clean build, each stage's own work per image (ms, its report's seconds): "
          + ", ".join(f"{stage} {seconds * 1000 / built:.1f}" for stage, seconds in work.items() if seconds))
    print_edits(stages, shards)
    print_disk(disk)


def print_edits(stages: dict[str, dict[str, float]], shards: dict[str, int]) -> None:
    """Per edit: seconds per stage (DVC's hashing and recording included) and shards rewritten."""
    names = list(dict.fromkeys(stage for seconds in stages.values() for stage in seconds if stage != "total"))
    print(f"{'seconds per stage':22} " + " ".join(f"{name[:8]:>8}" for name in names) + f" {'shards':>7}")
    for edit, seconds in stages.items():
        print(f"{edit:22} " + " ".join(f"{seconds.get(name, 0.0):8.2f}" for name in names) + f" {shards[edit]:7d}")


def print_disk(disk: dict[str, int]) -> None:
    own = disk.pop("dataset's own bytes")
    print("disk (MB; a hard-linked file counted once): " + ", ".join(f"{name} {size / 1e6:.0f}"
                                                                      for name, size in disk.items())
          + f"; all {sum(disk.values()) / 1e6:.0f} = {sum(disk.values()) / own:.2f} x the dataset's {own / 1e6:.0f}")


if __name__ == "__main__":
    main()
