"""Layouts read back from a plans file: exact reproduction without any LLM.

The plans file has the format of `build/layouts.json` (copy one into the project and commit
it); each item takes the layout stored under its id, checked like an LLM reply: its concepts,
cut-outs and background must be the item's, every box must be whole pixels inside the canvas
and the photo index must exist. A layout that fails is reported for its item.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from base.errors import BackendUnavailable, ItemError
from base.sources import confined
from base.untrusted import escape_controls

VERSION = "1"
IGNORES = ("filter", "fill")  # request fields it does not read


@dataclass
class Params:
    file: str = "plans/layouts.json"  # relative to the project
    FILES: ClassVar[dict[str, str]] = {"file": "."}


class Backend:
    def __init__(self, params: Params, root: str = "."):
        self.params = params
        path = confined(Path(root), params.file)
        if path is None:
            raise BackendUnavailable(f"plans file '{params.file}' is outside the project {root}")
        self.layouts = _read_layouts(path)

    def plan_batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any] | ItemError]:
        return [self._replay(request) for request in requests]

    def _replay(self, request: dict[str, Any]) -> dict[str, Any] | ItemError:
        stored = self.layouts.get(request["id"])
        if stored is None:
            return ItemError(f"[missing] no layout for {request['id']} in {self.params.file}")
        if not _well_formed(stored):
            return ItemError(f"[invalid] the layout of {request['id']} in {self.params.file} is not "
                             '{"background": {"id", "photo"}, "objects": [{"concept", "cutout", "box"}]}')
        views = {c["id"]: {v["id"] for v in c["views"]} for c in request["concepts"]}
        mirror = {c["id"] for c in request["concepts"] if c.get("mirror")}
        concepts = [o["concept"] for o in stored["objects"]]
        if sorted(concepts) != sorted(views):
            return ItemError(f"[mismatch] {self.params.file} has {_shown(sorted(concepts))} for {request['id']}, "
                             f"the recipe asks for {sorted(views)}")
        if stored["background"]["id"] not in {b["id"] for b in request["backgrounds"]}:
            return ItemError(f"[mismatch] background {_shown(stored['background']['id'])} of {request['id']} is not "
                             f"allowed by the recipe")
        for obj in stored["objects"]:
            if obj["cutout"] not in views[obj["concept"]]:
                return ItemError(f"[mismatch] cut-out {_shown(obj['cutout'])} of {request['id']} is not among "
                                 f"this build's")
            if obj.get("mirrored", False) is not False and (obj["mirrored"] is not True or obj["concept"] not in mirror):
                return ItemError(f"[mismatch] {obj['concept']} in {request['id']} is mirrored: {_shown(obj['mirrored'])}; "
                                 f"valid: true only for a concept with mirror: true in the recipe")
            if not _box_inside(obj.get("box"), request["canvas"]):
                width, height = request["canvas"]
                return ItemError(f"[invalid] box {_shown(obj.get('box'))} of {obj['concept']} in {request['id']} is "
                                 f"not [x, y, w, h] in whole pixels inside the {width}x{height} canvas")
        photos = next(b["photos"] for b in request["backgrounds"] if b["id"] == stored["background"]["id"])
        photo = stored["background"].get("photo")
        if not (photo is None and photos == 0 or _whole(photo) and 0 <= photo < photos):
            return ItemError(f"[invalid] photo {_shown(photo)} of {request['id']}: background "
                             f"{stored['background']['id']} has {photos} photo(s)")
        return {"background": stored["background"], "objects": stored["objects"],
                **({"llm": stored["llm"]} if "llm" in stored else {})}


def _read_layouts(path: Path) -> dict[str, dict[str, Any]]:
    """Layouts by id; a file that is not a plans file stops the stage naming it."""
    def refuse(literal: str) -> None:
        raise ValueError(f"{literal} is not a number JSON allows")

    try:
        layouts = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)["layouts"]
        return {layout["id"]: layout for layout in layouts if isinstance(layout["id"], str)}
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise BackendUnavailable(f"plans file {path}: not a layouts file like build/layouts.json "
                                 f"({escape_controls(str(error), limit=200)})") from None


def _well_formed(layout: Any) -> bool:
    background, objects = layout.get("background"), layout.get("objects")
    return (isinstance(background, dict) and isinstance(background.get("id"), str) and isinstance(objects, list)
            and all(isinstance(o, dict) and isinstance(o.get("concept"), str) and isinstance(o.get("cutout"), str)
                    for o in objects))


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _box_inside(box: Any, canvas: list[int]) -> bool:
    if not (isinstance(box, list) and len(box) == 4 and all(_whole(v) for v in box)):
        return False
    x, y, w, h = box
    return x >= 0 and y >= 0 and w >= 1 and h >= 1 and x + w <= canvas[0] and y + h <= canvas[1]


def _shown(value: Any) -> str:
    return escape_controls(repr(value), limit=80)
