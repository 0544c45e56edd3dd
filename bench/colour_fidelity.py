"""Colour fidelity of a built dataset: do the concepts keep their cut-out's colours?

For every kept image (build/scores.json) and every concept in it, the concept's visible pixels
in the composed image (its visible mask >= 95%, where the cut-out, resized into its box and
mirrored as the layout says, is >= 95% opaque too) are compared with the same pixels of the
cut-out: the chroma shift is the Euclidean distance between their mean CIELAB (a*, b*); the
lightness shift is the difference of their mean L. A just-noticeable difference is about 2.3.
Prints the median, 95th percentile and maximum over objects, per concept and per background,
and the worst objects (image, concept, shift).

    python bench/colour_fidelity.py [--build build] [--worst 4] [--json OUT.json]

Run it on a build made with one setting, change the setting (`harmonize`), rebuild, and run
it again: the two runs are before and after.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps

OPAQUE = 242  # >= 95% alpha: pixels of the object itself, not its soft rim


def lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)


def shifts(build: Path) -> list[dict]:
    """One row per concept of each kept image: image id, concept, background, chroma and
    lightness shift, and how many pixels were compared."""
    layouts = {layout["id"]: layout for layout in json.loads((build / "layouts.json").read_text())["layouts"]}
    images = {record["id"]: record for record in json.loads((build / "images.json").read_text())["images"]}
    kept = [s["id"] for s in json.loads((build / "scores.json").read_text())["scores"] if s["keep"]]
    rows = []
    for item_id in sorted(kept):
        record, layout = images[item_id], layouts[item_id]
        canvas = np.asarray(Image.open(build / "images" / record["image"]).convert("RGB"))
        for obj, concept in zip(layout["objects"], record["concepts"]):
            x, y, w, h = obj["box"]
            cutout = Image.open(build / "cutouts" / f"{obj['cutout']}.png").convert("RGBA")
            if obj.get("mirrored"):
                cutout = ImageOps.mirror(cutout)
            cutout = np.asarray(cutout.resize((w, h), Image.Resampling.BOX if cutout.width >= w
                                              else Image.Resampling.BICUBIC))
            left, top = max(0, -x), max(0, -y)
            right, bottom = min(w, canvas.shape[1] - x), min(h, canvas.shape[0] - y)
            visible = np.asarray(Image.open(build / "images" / concept["mask"]))[y + top:y + bottom, x + left:x + right]
            own = cutout[top:bottom, left:right]
            pixels = (visible >= OPAQUE) & (own[..., 3] >= OPAQUE)
            if pixels.sum() < 50:
                continue
            composed = lab(canvas[y + top:y + bottom, x + left:x + right][pixels][None])[0].mean(axis=0)
            source = lab(own[..., :3][pixels][None])[0].mean(axis=0)
            rows.append({"image": item_id, "concept": obj["concept"], "background": record["background"]["id"],
                         "chroma": float(np.hypot(*(composed[1:] - source[1:]))),
                         "lightness": float(composed[0] - source[0]), "pixels": int(pixels.sum())})
    return rows


def summary(values: list[float]) -> str:
    return (f"median {np.median(values):5.2f}  p95 {np.percentile(values, 95):5.2f}  max {max(values):5.2f}"
            f"  (n={len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", type=Path, default=Path("build"))
    parser.add_argument("--worst", type=int, default=4, help="list this many objects with the largest shift")
    parser.add_argument("--json", type=Path, help="also write every row here")
    args = parser.parse_args()
    rows = shifts(args.build)
    if not rows:
        print(f"no kept image with a visible concept in {args.build}", file=sys.stderr)
        return 1
    print(f"chroma shift, CIELAB (a*, b*), over {len(rows)} objects of kept images in {args.build}:")
    print(f"  all          {summary([r['chroma'] for r in rows])}")
    groups = defaultdict(list)
    for row in rows:
        groups[row["concept"]].append(row["chroma"])
        groups[row["background"]].append(row["chroma"])
    for name in sorted(groups):
        print(f"  {name:12} {summary(groups[name])}")
    print(f"lightness shift, CIELAB L:  {summary([r['lightness'] for r in rows])}")
    print("worst objects:")
    for row in sorted(rows, key=lambda r: -r["chroma"])[:args.worst]:
        print(f"  {row['image']} {row['concept']:10} chroma {row['chroma']:.2f}  lightness {row['lightness']:+.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
