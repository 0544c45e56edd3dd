"""Does a build cost the same per image at 20,000 images as at 400?

Builds the demo twice in one run, each in a fresh copy of the project: as it is (400 images)
and with every composition's `num_images` scaled to `--images` in all. Stage by stage
(`dvc repro -s STAGE`), prints the seconds per image (the stage's own work from its run log,
and the wall time with DVC's hashing of its outputs) and the peak resident memory of the
stage's processes, with the large / small ratio. Then, at both sizes, a one-image edit (one
composition gains an image): the seconds of each stage in one `dvc repro` (DVC's hashing and
recording included), the shards pack rewrote, `g4g diff` against the build before the edit,
and the disk each copy of the data takes (a hard-linked file counted once). On the large build
also: the size of the compiled plan, and the seconds of `compile`, `g4g validate`, `g4g card`.

    python bench/scale.py [--images 20000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from project_copy import commit, copy_project, disk_use, edit_recipe, report_json, timed, timed_repro  # noqa: E402

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


def one_image_edit(root: Path) -> dict[str, object]:
    """The edit's seconds per stage, shards rewritten, `g4g diff` seconds and disk use."""
    commit(root, "built")
    edit_recipe(root, "demo", lambda r: r["compositions"]["cat_dog"].update(
        num_images=r["compositions"]["cat_dog"]["num_images"] + 1))
    seconds = timed_repro(root)
    return {"seconds": seconds, "shards": report_json(root, "pack").get("computed"),
            "diff": timed(root, ["g4g", "diff"]), "disk": disk_use(root)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--keep", type=Path, help="build in this (new) folder and keep it")
    args = parser.parse_args()
    parent = args.keep or Path(tempfile.mkdtemp(prefix="g4g-scale-"))
    small_root, large_root = parent / "small", parent / "large"
    try:
        small = build(small_root, DEMO_IMAGES)
        edits = {DEMO_IMAGES: one_image_edit(small_root)}
        large = build(large_root, args.images)
        compiled = large_root / "build/compiled"
        sizes = {p.name: p.stat().st_size for p in compiled.glob("*.json")}
        commands = {"compile": timed(large_root, ["python", "-m", "compiler.compile"]),
                    "g4g validate": timed(large_root, ["g4g", "validate"]),
                    "g4g card": timed(large_root, ["g4g", "card"])}
        edits[args.images] = one_image_edit(large_root)
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
    small_edit, large_edit = edits[DEMO_IMAGES], edits[args.images]
    print("one-image edit (one dvc repro), seconds per stage with DVC's hashing and recording")
    print(f"{'stage':10} {DEMO_IMAGES:>8} {args.images:>8} {'ratio':>6}")
    for stage in ["total", *STAGES]:
        a, b = (edit["seconds"].get(stage, 0.0) for edit in (small_edit, large_edit))
        print(f"{stage:10} {a:8.2f} {b:8.2f} {b / a if a else float('nan'):6.2f}")
    for name, field in (("shards rewritten", "shards"), ("g4g diff s", "diff")):
        print(f"{name:18} {small_edit[field]:>8.2f} {large_edit[field]:>8.2f}")
    for images, edit in edits.items():
        disk = dict(edit["disk"])
        own = disk.pop("dataset's own bytes")
        print(f"disk at {images} images (MB): " + ", ".join(f"{name} {size / 1e6:.0f}" for name, size in disk.items())
              + f"; all {sum(disk.values()) / 1e6:.0f} = {sum(disk.values()) / own:.2f} x the dataset's {own / 1e6:.0f}")


if __name__ == "__main__":
    main()
