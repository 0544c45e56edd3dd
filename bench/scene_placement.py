"""Scene templates, before and after: do objects stand where they can, at sizes that fit?

Builds the paper's concepts (cat, dog, houseplant) on its three garden photos twice, in one
run, with the embedded CPU backends:
  before  the backgrounds without their scene templates, and the composer without edge
          decontamination or contact shadows (the project before templates);
  after   the recipe's templates (recipes/backgrounds/garden.yaml) and the composer's defaults.
Both builds are judged against the same templates (a layout without a template shows the
photo's centre crop, so it is judged on that crop). Prints, per build: the share of grounded
objects whose foot lies on their ground or surface (all images, kept images), Spearman's rank
correlation between each object's apparent size and its real size x the perspective at its
foot, the score stage's rejections by reason, and compose / score seconds per image, with
the after / before ratio.

    python bench/scene_placement.py [--images 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml
from scipy.stats import spearmanr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.scene import judge, on_canvas  # noqa: E402

BUILD = """
from pathlib import Path
from compiler import compile as c
from stages import caption, compose, extract, plan, score
assert c.main([]) == 0
b = Path('build')
extract.run(b / 'compiled/extract.json', b / 'cutouts', b / 'cutouts.json')
plan.run(b / 'compiled/plan.json', b / 'cutouts.json', b / 'layouts.json')
compose.run(b / 'compiled/compose.json', b / 'layouts.json', b / 'cutouts', b / 'images', b / 'images.json')
score.run(b / 'compiled/score.json', b / 'layouts.json', b / 'images.json', b / 'scores.json')
"""


def recipe(images: int, templates: bool) -> dict:
    concepts = yaml.safe_load((REPO / "recipes/concepts/gen4gen.yaml").read_text())
    backgrounds = yaml.safe_load((REPO / "recipes/backgrounds/garden.yaml").read_text())
    if not templates:
        backgrounds = {bid: {k: v for k, v in bg.items() if k != "scene"} for bid, bg in backgrounds.items()}
    backends = yaml.safe_load((REPO / "recipes/backends/embedded.yaml").read_text())
    if not templates:
        backends["compose"].update(decontaminate=False, shadow=0)
    return {"defaults": ["schema", "_self_"], "name": "bench", "concepts": concepts, "backgrounds": backgrounds,
            "backends": backends, "output": {"resolution": 1024},
            "compositions": {"trio": {"concepts": ["cat", "dog", "houseplant"], "backgrounds": sorted(backgrounds),
                                      "num_images": images}}}


def build(root: Path, images: int, templates: bool) -> dict:
    for name in ("base", "compiler", "stages", "recipes", "templates", "data"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "recipes/bench.yaml").write_text(yaml.safe_dump(recipe(images, templates)))
    (root / "params.yaml").write_text(yaml.safe_dump({"recipe": "bench", "overrides": [],
                                                      "runtime": {"workers": 1, "batch_size": 8}}))
    env = {**os.environ, "G4G_WORKERS": "1", "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", BUILD], cwd=root, env=env, check=True, capture_output=True)
    return {stage: json.loads((root / f"reports/{stage}.json").read_text()) for stage in ("compose", "score")}


def judged(root: Path, templates: dict) -> dict:
    """Geometry of every placed object against the templates (the after build's score document)."""
    layouts = json.loads((root / "build/layouts.json").read_text())["layouts"]
    kept = {s["id"]: s["keep"] for s in json.loads((root / "build/scores.json").read_text())["scores"]}
    geometry = json.loads((root / "build/compiled/score.json").read_text())["geometry"]
    on_support, on_support_kept, apparent, expected, problems = [], [], [], [], Counter()
    for layout in layouts:
        entry = templates[layout["background"]["id"]]
        view = entry["template"]["view"] if "crop" in layout["background"] else None  # what the image shows
        scene = on_canvas({**entry["template"], "view": view}, entry["sizes"][layout["background"]["photo"]],
                          layout["canvas"])
        for placed in layout["objects"]:
            concept = geometry[placed["concept"]]
            found = judge(scene, placed["box"], concept["placement"], concept["size_cm"])
            problems.update(check for check, _ in found)
            standing = not any(check == "floating" for check, _ in found)
            on_support.append(standing)
            if kept[layout["id"]]:
                on_support_kept.append(standing)
            foot = placed["box"][1] + placed["box"][3]
            apparent.append(max(placed["box"][2:]))
            expected.append(scene.size_at(foot, scene.supports[0], concept["size_cm"]) if foot > scene.horizon else 0)
    return {"on_support": sum(on_support) / len(on_support),
            "on_support_kept": sum(on_support_kept) / max(1, len(on_support_kept)),
            "spearman": spearmanr(apparent, expected).statistic, "problems": dict(problems)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, templates in (("before", False), ("after", True)):
            root = Path(tmp) / label
            root.mkdir()
            reports = build(root, args.images, templates)
            rows[label] = (root, reports)
        scenes = json.loads((rows["after"][0] / "build/compiled/score.json").read_text())["scenes"]
        print(f"{args.images} images of cat + dog + houseplant on the three garden photos, embedded backends, 1 worker")
        per_image = {}
        for label, (root, reports) in rows.items():
            measured = judged(root, scenes)
            score = reports["score"]
            per_image[label] = {s: reports[s]["seconds"] / max(1, reports[s]["computed"]) for s in ("compose", "score")}
            print(f"{label:6s} feet on their support: {measured['on_support']:.0%} of objects, "
                  f"{measured['on_support_kept']:.0%} in kept images; size rank correlation "
                  f"{measured['spearman']:.2f}; template problems {measured['problems']}")
            print(f"       kept {score['kept']}/{score['kept'] + score['rejected']}; score rejections by check "
                  f"{score['rejections_by_check']}; compose {per_image[label]['compose'] * 1000:.0f} ms/image, "
                  f"score {per_image[label]['score'] * 1000:.1f} ms/image")
        for stage in ("compose", "score"):
            print(f"{stage} time per image, after / before: {per_image['after'][stage] / per_image['before'][stage]:.2f}")


if __name__ == "__main__":
    main()
