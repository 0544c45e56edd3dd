"""In-context examples for layout prompts: caption -> boxes pairs, as data.

An examples file is JSON Lines, one `{"caption": ..., "objects": [{"name": ..., "box": [x, y,
w, h]}]}` per line, boxes on the prompt's canvas. `import_coco` builds one from COCO
annotations, rescaling boxes to that canvas (the paper's code forgot to) and keeping boxes
that cover 3%-25% of the image, as the paper does.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def load_examples(path: Path) -> list[dict[str, Any]]:
    examples = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
            assert isinstance(example["caption"], str) and all(len(o["box"]) == 4 for o in example["objects"])
        except (json.JSONDecodeError, KeyError, TypeError, AssertionError):
            raise ValueError(f"{path}, line {number}: expected "
                             '{"caption": str, "objects": [{"name": str, "box": [x, y, w, h]}]}') from None
        examples.append(example)
    return examples


def sample_examples(examples: list[dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    """`count` examples drawn without replacement by a seeded sampler (same seed, same draw)."""
    if not examples or count <= 0:
        return []
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(examples), size=min(count, len(examples)), replace=False)
    return [examples[int(i)] for i in sorted(chosen)]


def import_coco(instances_file: Path, captions_file: Path, canvas: int = 512,
                min_area: float = 0.03, max_area: float = 0.25) -> list[dict[str, Any]]:
    """Caption -> boxes examples from COCO `instances_*.json` + `captions_*.json`.

    Per image: its first caption (lowest annotation id) and the boxes covering `min_area` to
    `max_area` of the image, rescaled from the image's size to a `canvas` x `canvas` square.
    Images with fewer than two such boxes are left out (a layout has at least two objects).
    """
    instances = json.loads(Path(instances_file).read_text())
    captions = json.loads(Path(captions_file).read_text())
    sizes = {image["id"]: (image["width"], image["height"]) for image in instances["images"]}
    names = {category["id"]: category["name"] for category in instances["categories"]}
    first_caption: dict[int, tuple[int, str]] = {}
    for annotation in captions["annotations"]:
        current = first_caption.get(annotation["image_id"])
        if current is None or annotation["id"] < current[0]:
            first_caption[annotation["image_id"]] = (annotation["id"], annotation["caption"].strip())
    boxes: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for annotation in sorted(instances["annotations"], key=lambda a: a["id"]):
        width, height = sizes[annotation["image_id"]]
        x, y, w, h = annotation["bbox"]
        if min_area <= (w * h) / (width * height) <= max_area:
            boxes[annotation["image_id"]].append({"name": names[annotation["category_id"]], "box": [
                round(x * canvas / width), round(y * canvas / height),
                round(w * canvas / width), round(h * canvas / height)]})
    return [{"caption": first_caption[image_id][1], "objects": boxes[image_id]}
            for image_id in sorted(boxes) if len(boxes[image_id]) >= 2 and image_id in first_caption]
