"""LLM replies -> layouts: strict JSON parsing, matching by name, and Gen4Gen's post-processing.

Replies are parsed as JSON (never evaluated), prose or code fences around the JSON are
tolerated, boxes are matched to objects by name (order does not matter), and every rule the
paper applies is checked. A bad reply raises `ReplyRejected` with a kind the report counts.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from stages.layout import clamp, fit_aspect, minimum_side, paste_order_by_overlap, scale_about_centre


class ReplyRejected(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(f"[{kind}] {message}")
        self.kind = kind


def extract_json(text: str) -> Any:
    """The first JSON object in `text` (prose and ``` fences around it are ignored)."""
    decoder = json.JSONDecoder()
    for start in (i for i, ch in enumerate(text) if ch == "{"):
        try:
            return decoder.raw_decode(text, start)[0]
        except json.JSONDecodeError:
            continue
    raise ReplyRejected("malformed_json", f"no JSON object in the reply: {text[:120]!r}")


def _key(name: Any) -> str:
    return " ".join(str(name).lower().split())


def parse_layout(text: str, names: Sequence[str], canvas: int) -> dict[str, list[float]]:
    """Boxes by object name from a reply `{"objects": [{"name": ..., "box": [x, y, w, h]}]}`.

    Rejects (with the paper's rules): fewer than 2 boxes, a box count different from the object
    count, a box outside the `canvas`, an all-zero or empty box; and, beyond the paper,
    unknown or duplicate names.
    """
    data = extract_json(text)
    objects = data.get("objects") if isinstance(data, dict) else None
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise ReplyRejected("schema", 'expected {"objects": [{"name": ..., "box": [x, y, w, h]}, ...]}')
    wanted = {_key(n): n for n in names}
    boxes: dict[str, list[float]] = {}
    for entry in objects:
        box = entry.get("box")
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise ReplyRejected("schema", f"object {entry.get('name')!r}: box must be 4 numbers [x, y, w, h]")
        name = wanted.get(_key(entry.get("name", "")))
        if name is None:
            raise ReplyRejected("unknown_object", f"{entry.get('name')!r} is not one of {list(names)}")
        if name in boxes:
            raise ReplyRejected("duplicate_object", f"{name!r} has two boxes")
        boxes[name] = [float(v) for v in box]
    if len(boxes) < 2:
        raise ReplyRejected("too_few_boxes", f"{len(boxes)} box(es); a layout needs at least 2")
    missing = [n for n in names if n not in boxes]
    if missing:
        raise ReplyRejected("missing_objects", f"no box for {missing}")
    for name, (x, y, w, h) in boxes.items():
        if w <= 0 or h <= 0:
            raise ReplyRejected("zero_box", f"{name!r} has an empty box {[x, y, w, h]}")
        if x < 0 or y < 0 or x + w > canvas or y + h > canvas:
            raise ReplyRejected("box_outside_canvas", f"{name!r} box {[x, y, w, h]} leaves the {canvas}x{canvas} canvas")
    return boxes


def parse_background(text: str, phrases: Sequence[str]) -> str:
    """The chosen phrase from `{"background": ...}`; it must be one of `phrases`."""
    data = extract_json(text)
    choice = data.get("background") if isinstance(data, dict) else None
    chosen = {_key(p): p for p in phrases}.get(_key(choice or ""))
    if chosen is None:
        raise ReplyRejected("unknown_background", f"background {choice!r} is not one of {list(phrases)}")
    return chosen


def parse_sizes(text: str, names: Sequence[str]) -> dict[str, float]:
    """Relative real-world sizes `{"sizes": {name: ratio}}`, rescaled so the largest is 1.0."""
    data = extract_json(text)
    sizes = data.get("sizes") if isinstance(data, dict) else None
    if not isinstance(sizes, dict):
        raise ReplyRejected("schema", 'expected {"sizes": {"name": ratio, ...}}')
    by_key = {_key(k): v for k, v in sizes.items()}
    ratios = {}
    for name in names:
        value = by_key.get(_key(name))
        if not isinstance(value, (int, float)) or value <= 0:
            raise ReplyRejected("missing_objects", f"no positive size for {name!r}")
        ratios[name] = float(value)
    largest = max(ratios.values())
    return {name: value / largest for name, value in ratios.items()}


def postprocess(boxes: Sequence[Sequence[float]], aspects: Sequence[float], prompt_canvas: int,
                canvas: Sequence[int], ratios: Sequence[float] | None = None) -> tuple[list[list[int]], list[int]]:
    """Gen4Gen's post-processing, with the area rule applied correctly (sides scaled by the
    square root of the area ratio): rescale from the prompt canvas, enlarge boxes below the
    minimum area, optionally resize relative to the largest object, clamp into the canvas,
    fit each cut-out's aspect ratio (longer side = min(w, h), centred). Returns the boxes and
    the paste order (most overlapped first)."""
    width, height = canvas
    scale = width / prompt_canvas, height / prompt_canvas
    out = [[b[0] * scale[0], b[1] * scale[1], b[2] * scale[0], b[3] * scale[1]] for b in boxes]
    floor = minimum_side(height, len(out)) ** 2
    out = [scale_about_centre(b, math.sqrt(floor / (b[2] * b[3]))) if b[2] * b[3] < floor else b for b in out]
    if ratios is not None:
        anchor = out[max(range(len(out)), key=lambda i: ratios[i])]
        longest = max(anchor[2], anchor[3])
        out = [scale_about_centre(b, ratio * longest / max(b[2], b[3])) for b, ratio in zip(out, ratios)]
    out = [fit_aspect(clamp(b, width, height), aspect) for b, aspect in zip(out, aspects)]
    final = [[round(v) for v in b] for b in out]
    final = [[x, y, max(1, w), max(1, h)] for x, y, w, h in final]
    return final, paste_order_by_overlap(final)
