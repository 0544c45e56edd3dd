"""Stage `pack`: write the kept samples as byte-deterministic WebDataset shards.

Reads  build/compiled/pack.json and every upstream index (cut-outs, layouts, images, captions, scores).
Writes dataset/<name>-NNNNNN.tar  samples in key order; per sample: jpg, mask.png,
                                   mask.<concept>.png, txt (short caption), detailed.txt,
                                   json (full provenance)
       dataset/sizes.json         samples per shard (open_clip reads it)
       dataset/manifest.jsonl     one row per packed sample
       dataset/rejected.jsonl     one row per image not packed, with its stage and reasons
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from compiler.keys import canonical_json
from stages.runtime.files import dumps_json, read_json, replace_dir, write_json

TAR_MTIME = 946684800  # 2000-01-01: fixed, so the same samples give the same bytes
STAGES = ("plan", "compose", "caption", "score")


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(canonical_json(row) + "\n" for row in rows)


def provenance(item: dict[str, Any], document: dict[str, Any], layout: dict[str, Any], image: dict[str, Any],
               captions: dict[str, Any], score: dict[str, Any], cutouts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Everything needed to know where a sample came from and to rebuild it."""
    stats = {c["concept"]: c for c in image["concepts"]}
    concepts = []
    for obj in layout["objects"]:
        cutout = cutouts[obj["cutout"]]
        concepts.append({
            "id": obj["concept"], **document["concepts"][obj["concept"]], "box": obj["box"],
            "cutout": {"id": cutout["id"], "source": cutout["source"], "sha256": cutout["sha256"],
                       "box_in_source": cutout["box"], "key": cutout["key"]},
            "visible": score["concepts"][obj["concept"]]["visible"], "mask": stats[obj["concept"]]["mask"],
        })
    return {
        "key": item["id"],
        "recipe": {"name": document["name"], "key": document["recipe_key"]},
        "composition": layout["composition"], "index": layout["index"], "seed": layout["seed"],
        "canvas": layout["canvas"],
        "concepts": concepts,  # paste order: first is bottom-most
        "background": image["background"],
        "captions": {"short": captions["short"], "detailed": captions["detailed"]},
        "score": {"keep": score["keep"], "reasons": score["reasons"], "concepts": score["concepts"]},
        "backends": {kind: {"name": b["name"], "version": b["version"], "params": b["params"]}
                     for kind, b in document["backends"].items()},
        "software": document["software"],
        "item_keys": item["keys"],
    }


def run(items_file: Path, build_dir: Path, out_dir: Path, reports_dir: Path = Path("reports")) -> None:
    from webdataset import TarWriter

    start = time.perf_counter()
    document = read_json(items_file)
    indexes = {name: read_json(build_dir / f"{name}.json")
               for name in ("cutouts", "layouts", "images", "captions", "scores")}
    by_id = {name: {r["id"]: r for r in indexes[name][name]} for name in ("layouts", "images", "captions", "scores")}
    cutouts = {c["id"]: c for c in indexes["cutouts"]["cutouts"]}
    problems = {}
    for stage, name in zip(STAGES, ("layouts", "images", "captions", "scores")):
        for entry in indexes[name]["failed"] + indexes[name]["skipped"]:
            problems.setdefault(entry["id"], {"stage": stage, "reasons": [entry["reason"]]})

    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    manifest, rejected, sizes = [], [], {}
    writer, shard_name = None, None
    for item in document["items"]:
        item_id = item["id"]
        parts = [by_id[name].get(item_id) for name in ("layouts", "images", "captions", "scores")]
        if any(part is None for part in parts):
            rejected.append({"key": item_id, **problems.get(item_id, {"stage": "unknown", "reasons": []})})
            continue
        layout, image, captions, score = parts
        if not score["keep"]:
            rejected.append({"key": item_id, "stage": "score", "reasons": [r["message"] for r in score["reasons"]]})
            continue
        if len(manifest) % document["shard_size"] == 0:
            if writer is not None:
                writer.close()
            shard_name = f"{document['name']}-{len(sizes):06d}.tar"
            writer = TarWriter(open(staging / shard_name, "wb"), user="g4g", group="g4g", mode=0o444,
                               mtime=TAR_MTIME, encoder=False)
            sizes[shard_name] = 0
        images_dir = build_dir / "images"
        sample = {
            "__key__": item_id,
            "jpg": (images_dir / image["image"]).read_bytes(),
            "mask.png": (images_dir / image["mask"]).read_bytes(),
            "txt": captions["short"].encode("utf-8"),
            "detailed.txt": captions["detailed"].encode("utf-8"),
            "json": dumps_json(provenance(item, document, layout, image, captions, score, cutouts)).encode("utf-8"),
        }
        for concept in image["concepts"]:
            sample[f"mask.{concept['concept']}.png"] = (images_dir / concept["mask"]).read_bytes()
        writer.write(sample)
        sizes[shard_name] += 1
        manifest.append({"key": item_id, "shard": shard_name, "composition": layout["composition"],
                         "concepts": [o["concept"] for o in layout["objects"]], "caption": captions["short"]})
    if writer is not None:
        writer.close()
    (staging / "sizes.json").write_text(dumps_json(sizes), encoding="utf-8")
    (staging / "manifest.jsonl").write_text(_jsonl(manifest), encoding="utf-8")
    (staging / "rejected.jsonl").write_text(_jsonl(rejected), encoding="utf-8")
    replace_dir(staging, out_dir)
    seconds = time.perf_counter() - start
    write_json(reports_dir / "pack.json", {
        "stage": "pack", "items": len(document["items"]), "packed": len(manifest), "rejected": len(rejected),
        "shards": len(sizes), "bytes": sum((out_dir / s).stat().st_size for s in sizes),
        "computed": len(manifest), "reused": 0, "failed": 0, "seconds": round(seconds, 3),
    })
    print(f"pack: {len(manifest)} samples in {len(sizes)} shards, {len(rejected)} not packed "
          f"(see {out_dir / 'rejected.jsonl'}) ({seconds:.1f}s)", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=Path, default=Path("build/compiled/pack.json"))
    parser.add_argument("--build", type=Path, default=Path("build"))
    parser.add_argument("--out", type=Path, default=Path("dataset"))
    args = parser.parse_args()
    run(args.items, args.build, args.out)


if __name__ == "__main__":
    main()
