"""Does a build cost the same per image at 20,000 images as at 400?

Builds the demo twice in one run, each in a fresh copy of the project: as it is (400 images)
and with every composition's `num_images` scaled to `--images` in all. Stage by stage
(`dvc repro -s STAGE`), prints the seconds per image (the stage's own work from its run log,
and the wall time with DVC's hashing of its outputs) and the peak resident memory of the
stage's processes, with the large / small ratio. Then, on the large build: the size of the
compiled plan, and the seconds of `compile`, `g4g validate`, `g4g card` and `g4g diff` (after
a one-image edit, against the committed build).

    python bench/scale.py [--images 20000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from project_copy import commit, copy_project, edit_recipe, timed  # noqa: E402

STAGES = ("compile", "extract", "plan", "compose", "caption", "score", "pack")
DEMO_IMAGES = 400


def scale_demo(root: Path, images: int) -> None:
    def scaled(recipe: dict) -> None:
        for composition in recipe["compositions"].values():
            composition["num_images"] = composition["num_images"] * images // DEMO_IMAGES
    edit_recipe(root, "demo", scaled)


def stage_figures(root: Path, stage: str) -> dict[str, float]:
    """Wall seconds and peak RSS (MiB, the largest process: DVC's or the stage's) of one stage."""
    rss_file = root / ".g4g-bench-rss"
    wall = timed(root, ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), "dvc", "repro", "-s", stage])
    figures = {"wall": wall, "rss": int(rss_file.read_text().split()[-1]) / 1024}
    report = root / f"reports/{stage}.json"
    if report.is_file():
        figures["work"] = json.loads(report.read_text()).get("seconds") or 0.0
    return figures


def build(root: Path, images: int) -> dict[str, dict[str, float]]:
    copy_project(root)
    if images != DEMO_IMAGES:
        scale_demo(root, images)
        commit(root, f"demo at {images} images")
    return {stage: stage_figures(root, stage) for stage in STAGES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--keep", type=Path, help="build in this (new) folder and keep it")
    args = parser.parse_args()
    parent = args.keep or Path(tempfile.mkdtemp(prefix="g4g-scale-"))
    small_root, large_root = parent / "small", parent / "large"
    try:
        small = build(small_root, DEMO_IMAGES)
        large = build(large_root, args.images)
        compiled = large_root / "build/compiled"
        sizes = {p.name: p.stat().st_size for p in compiled.glob("*.json")}
        commands = {"compile": timed(large_root, ["python", "-m", "compiler.compile"]),
                    "g4g validate": timed(large_root, ["g4g", "validate"]),
                    "g4g card": timed(large_root, ["g4g", "card"])}
        subprocess.run(["git", "add", "-A"], cwd=large_root, check=True)
        commit(large_root, "built")
        edit_recipe(large_root, "demo", lambda r: r["compositions"]["cat_dog"].update(
            num_images=r["compositions"]["cat_dog"]["num_images"] + 1))
        commands["one-image edit (dvc repro)"] = timed(large_root, ["dvc", "repro"])
        commands["g4g diff"] = timed(large_root, ["g4g", "diff"])
    finally:
        if args.keep is None:
            shutil.rmtree(parent, ignore_errors=True)
    per_image = {DEMO_IMAGES: small, args.images: large}
    print(f"demo at {DEMO_IMAGES} and {args.images} images, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"{'stage':10} {'work s/img':>22} {'wall s/img':>22} {'peak RSS MiB':>22}")
    print(f"{'':10} {'small  large  ratio':>22} {'small  large  ratio':>22} {'small  large':>22}")
    for stage in STAGES:
        row = [f"{stage:10}"]
        for field in ("work", "wall"):
            a, b = (per_image[n][stage].get(field, 0.0) / n for n in (DEMO_IMAGES, args.images))
            row.append(f"{a * 1000:7.2f}ms {b * 1000:6.2f}ms {b / a if a else float('nan'):5.2f}")
        row.append(f"{small[stage]['rss']:11.0f} {large[stage]['rss']:6.0f}")
        print(" ".join(row))
    print(f"compiled plan at {args.images} images: {sum(sizes.values()) / 2**20:.1f} MiB "
          f"(plan.json {sizes.get('plan.json', 0) / 2**20:.1f} MiB)")
    for name, seconds in commands.items():
        print(f"{name:28} {seconds:7.2f} s")


if __name__ == "__main__":
    main()
