"""Stage `extract`: cut every concept photo out of its background.

Reads  build/compiled/extract.json (photos + keys).
Writes build/cutouts/<concept>/<photo>.png  RGBA (the soft mask's matte), cropped to the tight box,
                                            at most max_side
       build/cutouts.json                   one record per cut-out (size, box in the photo,
                                            foreground fraction, the matte's figures, its
                                            `foot` profile, a bad view's reason) plus
                                            failures with reasons
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from base import sources
from base.errors import ItemError
from base.files import read_json
from base.settings import load_settings
from base.untrusted import escape_controls
from stages import backends
from stages.backends.extract import CutoutParams, alpha_description, matte
from stages.runtime.images import encode_png, load_image
from stages.runtime.runner import ItemOutput, each_item, finish, materialize, run_cli, run_items


def cut_out(image: Image.Image, mask: np.ndarray, threshold: int, max_side: int) -> tuple[Image.Image, list[int]]:
    """RGBA cut-out cropped to the box where the soft mask exceeds `threshold` (paper: 70/255).

    The soft mask is kept as alpha inside the box; the result is shrunk to fit `max_side`.
    """
    rows = np.flatnonzero((mask > threshold).any(axis=1))
    cols = np.flatnonzero((mask > threshold).any(axis=0))
    if rows.size == 0:
        raise ItemError(f"no foreground found (mask peaks at {int(mask.max())}/255, "
                        f"threshold {threshold}); use a photo where the object stands out")
    box = [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]
    rgba = image.convert("RGB").crop(box)
    rgba.putalpha(Image.fromarray(mask[box[1]:box[3], box[0]:box[2]]))
    scale = max_side / max(rgba.size)
    if scale < 1:
        rgba = rgba.resize((max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale))),
                           Image.Resampling.LANCZOS)
    return rgba, box


def matted_cut_out(image: Image.Image, soft: np.ndarray, params: CutoutParams) -> tuple[Image.Image, list[int], dict]:
    """RGBA cut-out whose alpha is the matte of `soft` (stages/backends/extract/matte.py), cropped
    to the box where it exceeds `threshold`, at most `max_side`, with the view's figures.

    The matting runs on the object's box only, shrunk to `max_side` first, so a large photo
    costs what the stored cut-out does.
    """
    core = matte.clean_core(soft, params.core, params.min_component, params.min_hole, params.hole_level,
                           params.opening)
    if not core.mask.any():
        raise ItemError(f"no foreground found (mask peaks at {int(soft.max())}/255, core {params.core}); "
                        f"use a photo where the object stands out, or lower `core`")
    width = matte.band_width(core.mask, params.band)
    margin = int(np.ceil(width)) + 2
    rows, cols = np.flatnonzero(core.mask.any(axis=1)), np.flatnonzero(core.mask.any(axis=0))
    left, top = max(0, int(cols[0]) - margin), max(0, int(rows[0]) - margin)
    right, bottom = min(soft.shape[1], int(cols[-1]) + 1 + margin), min(soft.shape[0], int(rows[-1]) + 1 + margin)
    rgb = image.convert("RGB").crop((left, top, right, bottom))
    crop_soft = Image.fromarray(soft[top:bottom, left:right])
    crop_core = Image.fromarray(core.mask[top:bottom, left:right].astype(np.uint8) * 255)
    scale = min(1.0, params.max_side / max(rgb.size))
    if scale < 1:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb, crop_soft = (i.resize(size, Image.Resampling.LANCZOS) for i in (rgb, crop_soft))
        crop_core = crop_core.resize(size, Image.Resampling.BILINEAR)
    pixels, mask = np.asarray(rgb), np.asarray(crop_core) >= 128
    alpha = matte.band_matte(pixels, mask, np.asarray(crop_soft), width * scale, params.matting)
    if params.decontaminate and params.matting != "none":
        pixels = matte.decontaminate(pixels, alpha)
    alpha8 = np.rint(alpha * 255).astype(np.uint8)
    kept = alpha8 > params.threshold
    kept_rows, kept_cols = np.flatnonzero(kept.any(axis=1)), np.flatnonzero(kept.any(axis=0))
    inner = (int(kept_cols[0]), int(kept_rows[0]), int(kept_cols[-1]) + 1, int(kept_rows[-1]) + 1)
    cutout = Image.fromarray(np.dstack([pixels, alpha8]), "RGBA").crop(inner)
    box = [left + int(inner[0] / scale), top + int(inner[1] / scale),
           min(right, left + int(np.ceil(inner[2] / scale))), min(bottom, top + int(np.ceil(inner[3] / scale)))]
    figures = {"see_through": round(matte.see_through(alpha8, mask, width * scale), 4),
               "unsure": round(matte.see_through(np.asarray(crop_soft), mask, width * scale), 4),
               "components_dropped": core.dropped,
               "holes_filled": core.holes_filled, "holes_kept": core.holes_kept,
               "edge_band": round(2 * width * scale, 1)}
    return cutout, box, figures


def cut_out_view(image: Image.Image, soft: np.ndarray, params: CutoutParams) -> tuple[Image.Image, list[int], dict]:
    """The view's cut-out, its box in the photo and its figures: matted (`matte`, the default)
    or the soft mask kept as alpha (and a photo's own alpha, trusted as given)."""
    if params.matte:
        return matted_cut_out(image, soft, params)
    cutout, box = cut_out(image, soft, params.threshold, params.max_side)
    body = matte.clean_core(soft, params.threshold + 1, 0.0, 0.0, 0)  # its fully clear holes are holes
    return cutout, box, {"see_through": round(matte.see_through(soft, body.mask), 4)}


FOOT_COLUMNS = 16  # a cut-out's foot profile: its width in this many columns
OPAQUE_FOOT = 128  # alpha (0-255) from which a pixel is part of what rests on the ground


def foot_profile(alpha: np.ndarray, columns: int = FOOT_COLUMNS) -> list[float | None]:
    """Per column of `columns` across the cut-out's width, its lowest opaque row (the bottom
    edge of the lowest pixel with alpha >= OPAQUE_FOOT) as a fraction of its height; None where
    the column is clear. What touches the ground is read from it without decoding the PNG
    (stages.scene.contact)."""
    opaque = alpha >= OPAQUE_FOOT
    edges = np.linspace(0, alpha.shape[1], columns + 1).round().astype(int)
    profile: list[float | None] = []
    for start, stop in zip(edges[:-1], edges[1:]):
        rows = np.flatnonzero(opaque[:, start:max(stop, start + 1)].any(axis=1))
        profile.append(round((int(rows[-1]) + 1) / alpha.shape[0], 4) if rows.size else None)
    return profile


def bad_view(figures: dict, params: CutoutParams) -> str | None:
    """Why the view is bad (its interior more see-through than `max_see_through`), or None."""
    if figures["see_through"] <= params.max_see_through:
        return None
    return (f"see-through {figures['see_through']:.1%} of its interior (alpha < 0.9) > max_see_through "
            f"{params.max_see_through:.1%}; look at it (`g4g extract PHOTO --sheet OUT.png`), use another photo, "
            f"or matte it (`matte: true`; `refine_cutouts: true` for photos already cut out)")


@each_item
def extract_item(item: dict[str, Any], context: dict[str, Any]) -> ItemOutput:
    description = alpha_description(context["backend"]) if item["cutout"] else context["backend"]
    extractor = backends.create("extract", description, threads=context["threads"])
    image = load_image(sources.resolve(item["source"], Path(context["root"])), item["source"],
                       ("sha256", item["sha256"]))
    params = extractor.params
    try:
        mask = extractor.soft_mask(image)
        cutout, box, figures = cut_out_view(image, mask, params)
        reason = bad_view(figures, params)
        if reason and params.on_bad_view == "refuse":
            raise ItemError(f"{reason} (on_bad_view: refuse)")
    except ItemError as error:
        raise ItemError(f"{item['source']}: {error}") from None
    record = {
        "concept": item["concept"], "sha256": item["sha256"],
        "backend": description["name"], "size": list(cutout.size), "box": box,
        "foreground": round(float((mask > params.threshold).mean()), 4), **figures,
        "fill": round(float(np.asarray(cutout.getchannel("A"), np.float32).mean() / 255), 4),  # alpha / box area
        "foot": foot_profile(np.asarray(cutout.getchannel("A"))),
    }
    if reason:
        record["bad_view"] = reason
    return record, {f"{item['id']}.png": encode_png(cutout, level=3)}


def run(items_file: Path, out_dir: Path, index_file: Path) -> None:
    document = read_json(items_file)
    settings = load_settings()
    threads = max(1, (os.cpu_count() or 1) // settings.workers)
    context = {"backend": document["backend"], "root": str(Path.cwd()), "threads": threads}
    result, cache = run_items("extract", document["items"], extract_item, context, settings, outputs=out_dir)
    materialize(result, cache, out_dir)
    source = {item["id"]: item["source"] for item in document["items"]}  # where it is now, not when cached
    records = [{**r, "source": source[r["id"]], "file": f"{r['id']}.png"} for r in result.records.values()]
    finish("extract", result, document["backend"]["name"], index_file, {"cutouts": records})
    for record in sorted(records, key=lambda r: r["id"]):
        if "bad_view" in record:
            print(escape_controls(f"  warning: bad view {record['id']}: {record['bad_view']}"), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=Path, default=Path("build/compiled/extract.json"))
    parser.add_argument("--out", type=Path, default=Path("build/cutouts"))
    parser.add_argument("--index", type=Path, default=Path("build/cutouts.json"))
    args = parser.parse_args()
    run_cli(lambda: run(args.items, args.out, args.index))


if __name__ == "__main__":
    main()
