"""Compose throughput at 1024x1024 against a bare paste-and-encode floor, and peak memory.

Builds a throwaway project from the Gen4Gen reference photos (cat and dog cut out with
U^2-Net-P, the paper's houseplant cut-outs, its garden backgrounds), plans N three-concept
images, then times, on one core each and in the same run:
  floor  decode three RGBA cut-outs already at box size, paste them with their alpha,
         JPEG q95 encode, PNG encode the union mask (nothing else);
  stage  the real compose stage (resize, 5x5 feather, colour harmonisation, occlusion-aware
         per-concept masks, encodes, item-cache commits, index and report).
Prints images/s for both and stage/floor (target >= 0.5), then the compose stage's peak RSS
for a small and a 4x larger build (it should not grow with the number of images).

    python bench/compose_throughput.py [--images 100]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from PIL import Image, ImageChops

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "data" / "gen4gen"


def make_project(root: Path, images: int) -> None:
    for name in ("base", "compiler", "stages", "recipes", "templates", "params.yaml"):
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    recipe = {
        "defaults": ["schema", "_self_"], "name": "bench",
        "concepts": {
            "cat": {"class_noun": "cat", "token": "<cat1>", "images": [str(REFERENCE / "sources/cat/*.jpg")], "size": 0.5},
            "dog": {"class_noun": "dog", "token": "<dog1>", "images": [str(REFERENCE / "sources/dog/*.jpg")], "size": 0.6},
            "plant": {"class_noun": "houseplant", "token": "<plant1>", "cutout": True,
                      "images": [str(REFERENCE / "cutouts/houseplant/*.png")]},
        },
        "backgrounds": {"garden": {"phrase": "in the garden", "images": [str(REFERENCE / "backgrounds/garden/*.jpg")]}},
        "compositions": {"trio": {"concepts": ["cat", "dog", "plant"], "backgrounds": ["garden"], "num_images": images}},
        "output": {"resolution": 1024},
    }
    (root / "recipes/bench.yaml").write_text(yaml.safe_dump(recipe))
    (root / "params.yaml").write_text(yaml.safe_dump({"recipe": "bench", "overrides": [],
                                                      "runtime": {"workers": 1, "batch_size": 8}}))


def run_python(root: Path, code: str) -> str:
    env = {**os.environ, "G4G_WORKERS": "1", "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=True,
                          capture_output=True, text=True).stdout


PREPARE = """
from pathlib import Path
from compiler import compile as c
from stages import extract, plan
assert c.main([]) == 0
extract.run(Path('build/compiled/extract.json'), Path('build/cutouts'), Path('build/cutouts.json'))
plan.run(Path('build/compiled/plan.json'), Path('build/cutouts.json'), Path('build/layouts.json'))
"""

COMPOSE = """
import resource, shutil, time
from pathlib import Path
from stages import compose
shutil.rmtree('.g4g/cache/compose', ignore_errors=True)
start = time.perf_counter()
compose.run(Path('build/compiled/compose.json'), Path('build/layouts.json'), Path('build/cutouts'),
            Path('build/images'), Path('build/images.json'))
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def floor_seconds(root: Path) -> tuple[float, int]:
    """The bare floor on the same layouts, cut-outs and backgrounds."""
    layouts = json.loads((root / "build/layouts.json").read_text())["layouts"]
    compose_doc = json.loads((root / "build/compiled/compose.json").read_text())
    from base import sources

    backgrounds = {}
    for photo in compose_doc["backgrounds"]["garden"]["photos"]:
        backgrounds[photo["source"]] = Image.open(sources.resolve(photo["source"], root)).convert("RGB").resize((1024, 1024))
    sized = []  # PNG bytes of each cut-out already at its box size: decoding them is part of the floor
    for layout in layouts:
        pieces = []
        for obj in layout["objects"]:
            cutout = Image.open(root / "build/cutouts" / f"{obj['cutout']}.png").resize(obj["box"][2:])
            buffer = io.BytesIO()
            cutout.save(buffer, format="PNG", compress_level=1)
            pieces.append((buffer.getvalue(), obj["box"]))
        photo = compose_doc["backgrounds"]["garden"]["photos"][layout["background"]["photo"]]["source"]
        sized.append((backgrounds[photo], pieces))
    start = time.perf_counter()
    for background, pieces in sized:
        canvas, union = background.copy(), Image.new("L", background.size)
        for data, box in pieces:
            piece = Image.open(io.BytesIO(data))
            piece.load()
            alpha = piece.getchannel("A")
            canvas.paste(piece, (box[0], box[1]), alpha)
            union.paste(ImageChops.lighter(union.crop((box[0], box[1], box[0] + box[2], box[1] + box[3])), alpha),
                        (box[0], box[1]))
        canvas.save(io.BytesIO(), format="JPEG", quality=95)
        union.save(io.BytesIO(), format="PNG", compress_level=1)
    return time.perf_counter() - start, len(sized)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for label, count in (("small", args.images), ("large", 4 * args.images)):
            root = Path(tmp) / label
            root.mkdir()
            make_project(root, count)
            run_python(root, PREPARE)
            seconds, peak_kb = map(float, run_python(root, COMPOSE).split())
            results[label] = (count, seconds, peak_kb)
            if label == "small":
                sys.path.insert(0, str(root))
                floor, floor_count = floor_seconds(root)
        count, seconds, _ = results["small"]
        floor_rate, stage_rate = floor_count / floor, count / seconds
        print(f"floor  {floor_rate:6.1f} images/s  ({1000 * floor / floor_count:.1f} ms/image, 1 core, 1024x1024)")
        print(f"stage  {stage_rate:6.1f} images/s  ({1000 * seconds / count:.1f} ms/image, 1 core, 1024x1024)")
        print(f"stage / floor = {stage_rate / floor_rate:.2f}  (target >= 0.5)")
        for label, (count, seconds, peak_kb) in results.items():
            print(f"peak RSS, compose stage, {count:4d} images: {peak_kb / 1024:.0f} MiB")
        growth = results["large"][2] / results["small"][2]
        print(f"peak RSS large / small = {growth:.2f}  (4x the images; ~1.0 means memory does not grow)")


if __name__ == "__main__":
    main()
