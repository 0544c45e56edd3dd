"""LLM replies -> layouts: strict JSON parsing, matching by name, and Gen4Gen's post-processing.

Replies are parsed as JSON (never evaluated), prose or code fences around the JSON are
tolerated, boxes are matched to objects by name (order does not matter), and every rule the
paper applies is checked. A bad reply raises `ReplyRejected` with a kind the report counts.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from stages.layout import (clamp, fit_aspect, fitted_area, minimum_side, paste_order_by_overlap,
                           resize_about_centre, scale_about_centre, to_pixels)
from base.untrusted import escape_controls
from stages.runtime.replies import ReplyRejected


MAX_DEPTH = 32  # nesting a layout never needs; deeper replies are malformed, not a crash
MIN_SIZE_RATIO = 0.01  # an object a hundredth of the largest one cannot be drawn beside it
MAX_NUMBER_CHARS = 40  # digits a coordinate or ratio never needs (Python refuses ints past 4300 digits)


def _spans(text: str):
    """(start, end) of each top-level `{...}` in `text`, braces inside JSON strings ignored:
    one pass, so a reply of a million `{` costs a million steps, not a million parses."""
    depth, start, in_string, escaped = 0, 0, False, False
    for index, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"' and depth:
            in_string = True
        elif ch in "{[" and (depth or ch == "{"):
            if depth == 0:
                start = index
            depth += 1
            if depth > MAX_DEPTH:
                raise ReplyRejected("malformed_json", f"JSON nested deeper than {MAX_DEPTH} levels")
        elif ch in "}]" and depth:
            depth -= 1
            if depth == 0:
                yield start, index + 1


def _number(kind: str):
    def parse(literal: str) -> float:
        value = float(literal) if len(literal) <= MAX_NUMBER_CHARS else math.inf
        if not math.isfinite(value):
            shown = escape_controls(literal, limit=20)
            raise ReplyRejected("malformed_json", f"the {kind} {shown} is not a usable number")
        return int(literal) if kind == "integer" else value
    return parse


def _constant(literal: str) -> float:
    raise ReplyRejected("malformed_json", f"{literal} is not a number JSON allows")


def extract_json(text: str) -> Any:
    """The first top-level JSON object in `text` (prose and ``` fences around it are ignored).

    Linear in the reply's length; NaN, Infinity, numbers of more than 40 characters and
    nesting deeper than 32 levels are malformed replies, never a crash.
    """
    for start, end in _spans(text):
        try:
            return json.loads(text[start:end], parse_int=_number("integer"), parse_float=_number("number"),
                              parse_constant=_constant)
        except (json.JSONDecodeError, RecursionError):
            continue
    raise ReplyRejected("malformed_json", f"no JSON object in the reply: {_shown(text[:120])}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A value from a reply as a message may quote it: repr, escaped, at most 80 characters."""
    return escape_controls(repr(value), limit=80)


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
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            raise ReplyRejected("schema", f"object {_shown(entry.get('name'))}: box must be 4 numbers [x, y, w, h]")
        name = wanted.get(_key(entry.get("name", "")))
        if name is None:
            raise ReplyRejected("unknown_object", f"{_shown(entry.get('name'))} is not one of {list(names)}")
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
        raise ReplyRejected("unknown_background", f"background {_shown(choice)} is not one of {list(phrases)}")
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
        if not _is_number(value) or value <= 0:
            raise ReplyRejected("missing_objects", f"no positive size for {name!r}")
        ratios[name] = float(value)
    largest = max(ratios.values())
    smallest = min(ratios.values())
    if smallest < MIN_SIZE_RATIO * largest:
        raise ReplyRejected("schema", f"sizes {_shown(sizes)}: the smallest object is "
                                      f"under {MIN_SIZE_RATIO} of the largest")
    return {name: value / largest for name, value in ratios.items()}


def postprocess(boxes: Sequence[Sequence[float]], aspects: Sequence[float], prompt_canvas: int,
                canvas: Sequence[int], ratios: Sequence[float] | None = None) -> tuple[list[list[int]], list[int]]:
    """Gen4Gen's post-processing of LLM boxes, in the paper's order: rescale from the prompt
    canvas; with `ratios`, give each box the largest object's (w, h) times its ratio, about
    its own centre; clamp into the canvas; if the smallest cut-out as it will be pasted (after
    the aspect fit) is under the minimum area, scale every box by one factor about its centre
    (sides by the square root of the area ratio; the paper's code tests the LLM box and scales
    sides by the area ratio); clamp; fit each cut-out's aspect ratio (longer side = min(w, h),
    centred), so the smallest pasted cut-out has the minimum area unless the canvas is too small
    for it. Returns whole-pixel boxes and the paste
    order, computed as the paper does on the rescaled LLM boxes (most overlapped first).
    A box under one pixel is rejected (the paper's code truncates it to zero and fails on it)."""
    width, height = canvas
    sx, sy = width / prompt_canvas, height / prompt_canvas
    llm = [[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b in boxes]
    out = llm
    if ratios is not None:
        anchor = llm[max(range(len(llm)), key=lambda i: ratios[i])]
        out = [resize_about_centre(b, anchor[2] * ratio, anchor[3] * ratio) for b, ratio in zip(llm, ratios)]
    out = [clamp(b, width, height) for b in out]
    for i, box in enumerate(out):
        if box[2] < 1 or box[3] < 1:
            sized = f" at size ratio {ratios[i]:g}" if ratios is not None else ""
            raise ReplyRejected("zero_box", f"box {i + 1} {list(boxes[i])}{sized} is under one pixel on the "
                                            f"{width}x{height} canvas")
    floor = minimum_side(width, len(out)) * minimum_side(height, len(out))
    smallest = min(fitted_area(b, aspect) for b, aspect in zip(out, aspects))  # what will be pasted
    factor = math.sqrt(floor / smallest) if smallest < floor else 1.0
    out = [fit_aspect(clamp(scale_about_centre(b, factor), width, height), aspect) for b, aspect in zip(out, aspects)]
    return [to_pixels(b, width, height) for b in out], paste_order_by_overlap(llm)
