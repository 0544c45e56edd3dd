"""How long `g4g diff` takes to read and compare two datasets: from manifests, and with --verify.

Builds two synthetic datasets of N samples each with pack's own functions (no pipeline): one
composition of three concepts, per sample a random JPEG, a union mask and a mask per concept,
captions and a provenance JSON, in shards laid out by `stages.shard_layout` and listed in a
manifest written by `stages.manifest`. The second dataset has one sample's caption edited and
one sample added, so the diff has something to say, and shares the first's unchanged shards
(hard links: the shards the two edits did not touch). Then it times, best of `--repeat`:

  manifests  reading both sides (`compiler.diff.snapshot.workspace`) and comparing them: what
             a default `g4g diff` does, opening no shard
  verify     the same with `verify=True`: every shard streamed and hashed as well, which is
             what every diff cost before the manifest held the digests

    python bench/diff_speed.py [--samples 400 20000] [--side 256] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from base.files import dumps_json
from base.keys import canonical_json
from compiler.diff.compare import compare
from compiler.diff.snapshot import workspace
from stages.manifest import dataset_wide, manifest_row, member_digests
from stages.pack import shard_bytes
from stages.shard_layout import chunks, shard_name

COMPOSITION = "cat_dog_plant"
CONCEPTS = ("cat", "dog", "plant")
SHARD_SIZE = 100  # the demo recipe's
POOL = 64  # distinct random images, reused (only the bytes' size matters to the timing)


def encoded(array: np.ndarray, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def pools(side: int, rng: np.random.Generator) -> tuple[list[bytes], list[bytes]]:
    """Random JPEGs (noise: the largest JPEG for its size) and random blob masks as PNG."""
    images = [encoded(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), "JPEG", quality=90) for _ in range(POOL)]
    masks = [encoded((rng.random((side // 8, side // 8)) > 0.5).astype(np.uint8).repeat(8, 0).repeat(8, 1) * 255,
                     "PNG") for _ in range(POOL)]
    return images, masks


def recipe_json() -> dict[str, Any]:
    return {"name": "bench", "key": "bench-key",
            "recipe": {"compositions": {COMPOSITION: {"concepts": list(CONCEPTS), "num_images": 0}}},
            "backends": {"caption": {"name": "template", "version": "1", "params": {}},
                         "score": {"name": "geometric", "version": "1", "params": {"min_area": 0.01}}},
            "software": {"g4g": "0.1.0", "pillow": "13.0.0"}}


def provenance(index: int, side: int, rng: random.Random, caption: str) -> dict[str, Any]:
    """A sample's JSON of the shape pack writes (the fields the diff and the reader check)."""
    key = f"{COMPOSITION}-{index:05d}"
    return {
        "key": key, "composition": COMPOSITION, "index": index, "seed": rng.randrange(2 ** 31),
        "canvas": [side, side],
        "concepts": [{"id": c, "token": f"<{c}1>", "class_noun": c, "box": [rng.randrange(side // 2)] * 2 + [side // 4] * 2,
                      "cutout": {"id": f"{c}/{c}_0{rng.randrange(5)}", "source": f"data/{c}.jpg", "sha256": "0" * 64,
                                 "box_in_source": [0, 0, 100, 100], "key": "k" * 20},
                      "visible": round(rng.uniform(0.6, 1), 4), "mask": f"{key}.mask.{c}.png"} for c in CONCEPTS],
        "background": {"id": "garden", "photo": 0, "phrase": "in a garden", "sha256": "1" * 64,
                       "source": "data/garden.jpg", "crop": [0, 0, side, side]},
        "captions": {"short": caption, "detailed": caption + ". The cat is on the left."},
        "score": {"keep": True, "concepts": [{"id": c, "visible": round(rng.uniform(0.6, 1), 4), "area": 0.05,
                                              "occluded": 0.0, "truncated": 0.0} for c in CONCEPTS]},
        "item_keys": {stage: f"{stage}-{index}" for stage in ("plan", "compose", "caption", "score")},
    }


def sample_files(record: dict[str, Any], images: list[bytes], masks: list[bytes]) -> dict[str, bytes]:
    index = record["index"]
    files = {"jpg": images[index % POOL], "mask.png": masks[index % POOL], "txt": record["captions"]["short"].encode(),
             "detailed.txt": record["captions"]["detailed"].encode(), "json": dumps_json(record).encode()}
    files.update({f"mask.{c}.png": masks[(index + n + 1) % POOL] for n, c in enumerate(CONCEPTS)})
    return files


def write_dataset(folder: Path, records: list[dict[str, Any]], images: list[bytes], masks: list[bytes],
                  reuse: Path | None) -> tuple[int, int]:
    """dataset/ under `folder`: shards, manifest, rejected, recipe; a shard that `reuse` holds
    with the same samples is linked from there. Returns (shards, shards written)."""
    dataset = folder / "dataset"
    dataset.mkdir(parents=True)
    recipe = recipe_json()
    wide = dataset_wide(recipe)
    rows, written = [], 0
    layout = chunks(records, SHARD_SIZE, key=lambda r: r["key"])
    for chunk in layout:
        name = shard_name(COMPOSITION, chunk[0]["index"])
        samples = [(r["key"], sample_files({**r, **wide}, images, masks)) for r in chunk]
        rows += [manifest_row({**r, **wide}, name, member_digests(files)) for r, (_, files) in zip(chunk, samples)]
        data = shard_bytes(samples)
        previous = reuse / "dataset" / name if reuse else None
        if previous is not None and previous.exists() and previous.read_bytes() == data:
            os.link(previous, dataset / name)
        else:
            (dataset / name).write_bytes(data)
            written += 1
    (dataset / "manifest.jsonl").write_text("".join(canonical_json(row) + "\n" for row in rows))
    (dataset / "rejected.jsonl").write_text("")
    (dataset / "recipe.json").write_text(dumps_json(recipe))
    return len(layout), written


def best_of(repeat: int, run) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def measure(count: int, side: int, repeat: int, root: Path) -> dict[str, Any]:
    rng, nprng = random.Random(count), np.random.default_rng(count)
    images, masks = pools(side, nprng)
    records = [provenance(i, side, rng, f"<cat1>, <dog1> and <plant1> in a garden {i}") for i in range(count)]
    edited = [dict(r) for r in records] + [provenance(count, side, rng, "<cat1> alone")]
    middle = edited[count // 2]
    edited[count // 2] = {**middle, "captions": {**middle["captions"], "short": middle["captions"]["short"] + "!"}}
    shards, _ = write_dataset(root / "a", records, images, masks, None)
    _, rewritten = write_dataset(root / "b", edited, images, masks, root / "a")
    size = sum(p.stat().st_size for p in (root / "a/dataset").glob("*.tar"))

    def diff(verify: bool) -> dict[str, Any]:
        return compare(workspace(root / "a", verify), workspace(root / "b", verify))

    fast, report = best_of(repeat, lambda: diff(False))
    slow, checked = best_of(repeat, lambda: diff(True))
    assert report == checked, "the manifest and the shards disagree"
    comp = report["compositions"][COMPOSITION]
    assert comp["added"] == [f"{COMPOSITION}-{count:05d}"] and list(comp["changed"]) == [middle["key"]]
    return {"samples": count, "shards": shards, "rewritten": rewritten, "megabytes": size / 1e6,
            "manifest_mb": (root / "a/dataset/manifest.jsonl").stat().st_size / 1e6, "manifests": fast, "verify": slow}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=[400, 20000])
    parser.add_argument("--side", type=int, default=256, help="image side in pixels (random JPEG, quality 90)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the datasets here and keep them (default: a temporary folder)")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    print(f"{'samples':>8} {'shards':>6} {'rewritten':>9} {'shards MB':>9} {'manifest MB':>11} "
          f"{'manifests s':>11} {'verify s':>8} {'ratio':>6}")
    for count in args.samples:
        root = Path(tempfile.mkdtemp(dir=args.keep, prefix=f"diff-{count}-"))
        try:
            r = measure(count, args.side, args.repeat, root)
        finally:
            if args.keep is None:
                shutil.rmtree(root)
        print(f"{r['samples']:>8} {r['shards']:>6} {r['rewritten']:>9} {r['megabytes']:>9.0f} {r['manifest_mb']:>11.1f} "
              f"{r['manifests']:>11.2f} {r['verify']:>8.2f} {r['verify'] / r['manifests']:>6.1f}")


if __name__ == "__main__":
    main()
