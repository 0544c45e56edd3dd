"""The edit loop on the demo: what a user waits for between an edit and a rebuilt dataset.

In one run, on a fresh copy of the project (its own git repository and item cache), measures:
  clean build         `dvc repro` from nothing
  dvc status          DVC's own floor: reading the graph and checking every stage's deps
  no-op repro         `dvc repro` with nothing changed (the `compile` stage always runs)
  validate            `g4g validate` (compose, check and forecast the recipe)
  one-image edit      `dvc repro` after one composition gains one image
  one-composition     `dvc repro` after one composition is re-seeded (all its images change)
and prints each as seconds and as ratios to `dvc status` and to the clean build. Every
figure but the clean build and the edits is the median of `--repeats` runs; the load average
is printed beside them (these machines are shared).

    python bench/edit_loop.py [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # dvc, g4g and the stages' python live beside this interpreter
EDITED = "cat_houseplant"  # the demo's smallest composition (80 of 400 images)


def copy_project(root: Path) -> None:
    """The tracked files of the repository (code, recipes, data) as a new git repository."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=root, check=True)


def timed(root: Path, command: list[str]) -> float:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    run = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"{' '.join(command)} failed in {root}:\n{run.stdout[-2000:]}{run.stderr[-3000:]}")
    return seconds


def median(root: Path, command: list[str], repeats: int) -> float:
    return statistics.median(timed(root, command) for _ in range(repeats))


def edit_recipe(root: Path, change) -> None:
    path = root / "recipes/demo.yaml"
    recipe = yaml.safe_load(path.read_text())
    change(recipe["compositions"][EDITED])
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build in this (new) folder and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="g4g-edit-loop-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        copy_project(root)
        figures = {"clean build": timed(root, ["dvc", "repro"])}
        figures["dvc status"] = median(root, ["dvc", "status"], args.repeats)
        figures["no-op repro"] = median(root, ["dvc", "repro"], args.repeats)
        figures["validate"] = median(root, ["g4g", "validate"], args.repeats)
        edit_recipe(root, lambda composition: composition.update(num_images=composition["num_images"] + 1))
        figures["one-image edit"] = timed(root, ["dvc", "repro"])
        edit_recipe(root, lambda composition: composition.update(seed=1))
        figures["one-composition edit"] = timed(root, ["dvc", "repro"])
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    floor, clean = figures["dvc status"], figures["clean build"]
    print(f"edit loop on the demo (400 images), {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"median of {args.repeats} where repeated")
    print(f"{'':22} {'seconds':>8} {'x dvc status':>13} {'x clean build':>14}")
    for name, seconds in figures.items():
        print(f"{name:22} {seconds:8.2f} {seconds / floor:13.2f} {seconds / clean:14.3f}")
    print(f"one-composition edit recomputes {EDITED}: 80 of 400 images (0.2 of the items)")


if __name__ == "__main__":
    main()
