"""The cut-out sheet: each view on a checkerboard, on black and on white, with its figures under
it, so a see-through body, a ghost of the old background or a dark rim shows before a thousand
images carry it. Pack writes it into the dataset (`cutouts.png`, linked from the card);
`g4g extract PHOTO... --sheet OUT.png` draws it for photos before a build.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FILE = "cutouts.png"  # in dataset/
TILE = 192  # each backdrop's side in pixels
GAP = 6
COLUMNS = 2  # views side by side
TEXT_LINES = 2
LINE = 15
CHECKER = 12  # checkerboard square side
BAD = (192, 57, 43)


def describe(record: dict[str, Any]) -> str:
    """The view's figures in a line (what the extract stage recorded)."""
    parts = [f"{record['size'][0]}x{record['size'][1]}", f"see-through {record['see_through']:.1%}"]
    if "components_dropped" in record:
        parts += [f"model unsure {record['unsure']:.1%}", f"{record['components_dropped']} blob(s) dropped",
                  f"holes {record['holes_filled']} filled / {record['holes_kept']} kept",
                  f"edge band {record['edge_band']:g} px"]
    else:
        parts.append("alpha as given")
    return ", ".join(parts)


def backdrops(cutout: Image.Image) -> list[Image.Image]:
    """The cut-out, shrunk to a tile, over a checkerboard, black and white (RGB tiles)."""
    view = cutout.convert("RGBA")
    view.thumbnail((TILE, TILE), Image.Resampling.LANCZOS)
    squares = (np.add.outer(np.arange(TILE) // CHECKER, np.arange(TILE) // CHECKER) % 2).astype(bool)
    checker = Image.fromarray(np.where(squares, 204, 255).astype(np.uint8)).convert("RGB")
    tiles = []
    for backdrop in (checker, Image.new("RGB", (TILE, TILE), "black"), Image.new("RGB", (TILE, TILE), "white")):
        tile = backdrop.copy()
        tile.paste(view, ((TILE - view.width) // 2, (TILE - view.height) // 2), view)
        tiles.append(tile)
    return tiles


def sheet(views: list[tuple[Image.Image, dict[str, Any]]]) -> Image.Image:
    """The sheet of `views` ((cut-out, record with `id` and the figures), in order)."""
    font = ImageFont.load_default(size=12)
    cell_w, cell_h = 3 * TILE + 2 * GAP, TILE + TEXT_LINES * LINE + GAP
    columns = min(COLUMNS, max(1, len(views)))
    rows = max(1, -(-len(views) // columns))
    out = Image.new("RGB", (columns * cell_w + (columns + 1) * GAP * 2, rows * cell_h + (rows + 1) * GAP), "white")
    draw = ImageDraw.Draw(out)
    for index, (cutout, record) in enumerate(views):
        row, column = divmod(index, columns)
        left, top = GAP * 2 + column * (cell_w + GAP * 2), GAP + row * (cell_h + GAP)
        for number, tile in enumerate(backdrops(cutout)):
            out.paste(tile, (left + number * (TILE + GAP), top))
        bad = record.get("bad_view")
        title = f"{record['id']}" + ("  BAD VIEW: " + bad.split(";")[0] if bad else "")
        draw.text((left, top + TILE + 2), title, fill=BAD if bad else (0, 0, 0), font=font)
        draw.text((left, top + TILE + 2 + LINE), describe(record), fill=(85, 85, 85), font=font)
    return out


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def from_build(cutouts_dir: Path, records: list[dict[str, Any]]) -> bytes:
    """The sheet of every cut-out a build made (records of build/cutouts.json, by id), as PNG bytes;
    empty when there is none."""
    views = [(_thumbnail(cutouts_dir / record["file"]), record) for record in sorted(records, key=lambda r: r["id"])]
    return png(sheet(views)) if views else b""


def _thumbnail(path: Path) -> Image.Image:
    with Image.open(path) as image:
        view = image.convert("RGBA")
    view.thumbnail((TILE, TILE), Image.Resampling.LANCZOS)
    return view
