"""Stage `extract`: cut every concept photo out of its background.

Reads  build/compiled/extract.json (photos + keys).
Writes build/cutouts/<concept>/<photo>.png  RGBA, cropped to the tight box, at most max_side
       build/cutouts.json                   one record per cut-out (size, box in the photo,
                                            foreground fraction) plus failures with reasons
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from base import sources
from base.errors import ItemError
from base.files import read_json
from base.settings import load_settings
from stages import backends
from stages.backends.extract import alpha_description
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


@each_item
def extract_item(item: dict[str, Any], context: dict[str, Any]) -> ItemOutput:
    description = alpha_description(context["backend"]) if item["cutout"] else context["backend"]
    extractor = backends.create("extract", description, threads=context["threads"])
    image = load_image(sources.resolve(item["source"], Path(context["root"])), item["source"], ("sha256", item["sha256"]))
    params = description["params"]
    try:
        mask = extractor.soft_mask(image)
        cutout, box = cut_out(image, mask, params["threshold"], params["max_side"])
    except ItemError as error:
        raise ItemError(f"{item['source']}: {error}") from None
    record = {
        "concept": item["concept"], "sha256": item["sha256"],
        "backend": description["name"], "size": list(cutout.size), "box": box,
        "foreground": round(float((mask > params["threshold"]).mean()), 4),
        "fill": round(float(np.asarray(cutout.getchannel("A"), np.float32).mean() / 255), 4),  # alpha / box area
    }
    return record, {f"{item['id']}.png": encode_png(cutout, level=3)}


def run(items_file: Path, out_dir: Path, index_file: Path) -> None:
    document = read_json(items_file)
    settings = load_settings()
    threads = max(1, (os.cpu_count() or 1) // settings.workers)
    context = {"backend": document["backend"], "root": str(Path.cwd()), "threads": threads}
    result, cache = run_items("extract", document["items"], extract_item, context, settings)
    materialize(result, cache, out_dir)
    source = {item["id"]: item["source"] for item in document["items"]}  # where it is now, not when cached
    records = [{**r, "source": source[r["id"]], "file": f"{r['id']}.png"} for r in result.records.values()]
    finish("extract", result, document["backend"]["name"], index_file, {"cutouts": records})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=Path, default=Path("build/compiled/extract.json"))
    parser.add_argument("--out", type=Path, default=Path("build/cutouts"))
    parser.add_argument("--index", type=Path, default=Path("build/cutouts.json"))
    args = parser.parse_args()
    run_cli(lambda: run(args.items, args.out, args.index))


if __name__ == "__main__":
    main()
