"""The demo's pictures in docs/: a contact sheet of 16 random kept images, 2x crops of the
four objects compose changed most, and the README's banner of 8 other random kept images.

  docs/contact-sheet.jpg  16 kept images drawn at random (seed 0), 4 x 4 at 384 pixels each
  docs/crops.jpg          the four objects of kept images whose mean CIELAB colour moved most
                          from their cut-out's (each concept's worst first) (lightness and chroma: bench/colour_fidelity.py),
                          320 x 320 pixels around each (where it meets the ground) at 2x,
                          captioned with its image, concept and shifts
  docs/demo.jpg           8 kept images drawn at random (seed 1), 4 x 2 at 320 pixels each
  docs/blossom.jpg        kept images on the blossom photo, 4 x 3 at 384 pixels each: the first
                          two rows drawn at random (seed 2), the last row at random among those
                          where an occluder (the fence's posts and rope) hides part of a pet

Run after `dvc repro` on the demo (reads build/ only):

    python bench/demo_sheets.py [--build build] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colour_fidelity import shifts  # noqa: E402

SIDE = 384  # a contact-sheet tile
CROP = 320  # a crop's side in image pixels, before the 2x zoom


def contact_sheet(build: Path, kept: list[str], count: int = 16, seed: int = 0, side: int = SIDE) -> Image.Image:
    return tiles(build, sorted(random.Random(seed).sample(kept, min(count, len(kept)))), side)


def tiles(build: Path, keys: list[str], side: int = SIDE) -> Image.Image:
    """The images of `keys`, in that order, four to a row."""
    columns = 4
    rows = -(-len(keys) // columns)
    sheet = Image.new("RGB", (columns * side + (columns + 1) * 4, rows * side + (rows + 1) * 4), "white")
    for index, key in enumerate(keys):
        image = Image.open(build / "images" / f"{key}.jpg").convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
        row, column = divmod(index, columns)
        sheet.paste(image, (4 + column * (side + 4), 4 + row * (side + 4)))
    return sheet


def worst_crops(build: Path, rows: list[dict], count: int = 4) -> Image.Image:
    """2x 2 tiles: each object's region of CROP x CROP image pixels (centred on its box, a little
    low, where it touches the ground and casts its shadow) at 2x zoom (nearest neighbour)."""
    layouts = {layout["id"]: layout for layout in json.loads((build / "layouts.json").read_text())["layouts"]}
    ranked = sorted(rows, key=lambda r: (-(r["chroma"] ** 2 + r["lightness"] ** 2), r["image"], r["concept"]))
    firsts = [next(r for r in ranked if r["concept"] == concept) for concept in sorted({r["concept"] for r in rows})]
    worst = (firsts + [r for r in ranked if r not in firsts])[:count]  # each concept's worst first
    font = ImageFont.load_default(size=20)
    sheet = Image.new("RGB", (2 * 2 * CROP + 12, 2 * 2 * CROP + 12), "white")
    for index, row in enumerate(worst):
        obj = next(o for o in layouts[row["image"]]["objects"] if o["concept"] == row["concept"])
        x, y, w, h = obj["box"]
        left, top = round(x + w / 2 - CROP / 2), round(y + h * 0.65 - CROP / 2)
        image = Image.open(build / "images" / f"{row['image']}.jpg").convert("RGB")
        left, top = min(max(left, 0), image.width - CROP), min(max(top, 0), image.height - CROP)
        tile = image.crop((left, top, left + CROP, top + CROP)).resize((2 * CROP, 2 * CROP), Image.Resampling.NEAREST)
        ImageDraw.Draw(tile).text((10, 10), f"{row['image']} {row['concept']}: chroma shift {row['chroma']:.1f}, "
                                            f"L {row['lightness']:+.1f}", fill="white", font=font,
                                  stroke_width=2, stroke_fill="black")
        column, line = index % 2, index // 2
        sheet.paste(tile, (4 + column * (2 * CROP + 4), 4 + line * (2 * CROP + 4)))
    return sheet


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", type=Path, default=Path("build"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    kept = sorted(s["id"] for s in json.loads((args.build / "scores.json").read_text())["scores"] if s["keep"])
    backgrounds = {layout["id"]: layout["background"]["id"]
                   for layout in json.loads((args.build / "layouts.json").read_text())["layouts"]}
    contact_sheet(args.build, kept).save(args.out / "contact-sheet.jpg", quality=82, optimize=True)
    worst_crops(args.build, shifts(args.build)).save(args.out / "crops.jpg", quality=88, optimize=True)
    contact_sheet(args.build, kept, count=8, seed=1, side=320).save(args.out / "demo.jpg", quality=85, optimize=True)
    scores = {s["id"]: s for s in json.loads((args.build / "scores.json").read_text())["scores"]}
    blossom = [key for key in kept if backgrounds[key] == "blossom"]
    hidden = [key for key in blossom if any(c["occluded"] > 0.02 for c in scores[key]["concepts"].values())]
    some = sorted(random.Random(2).sample(blossom, 8))
    some += sorted(random.Random(2).sample([key for key in hidden if key not in some], 4))
    tiles(args.build, some).save(args.out / "blossom.jpg", quality=82, optimize=True)
    for name in ("contact-sheet.jpg", "crops.jpg", "demo.jpg", "blossom.jpg"):
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
