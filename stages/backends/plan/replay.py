"""Layouts read back from a plans file: exact reproduction without any LLM.

The plans file has the format of `build/layouts.json` (copy one into the project and commit
it); each item takes the layout stored under its id, checked against the item's concepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from compiler.errors import ItemError
from stages.runtime.files import read_json

VERSION = "1"


@dataclass
class Params:
    file: str = "plans/layouts.json"  # relative to the project
    FILES: ClassVar[dict[str, str]] = {"file": "."}


class Backend:
    def __init__(self, params: Params, root: str = "."):
        self.params = params
        path = Path(root) / params.file
        self.layouts = {layout["id"]: layout for layout in read_json(path)["layouts"]}

    def plan_batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any] | ItemError]:
        return [self._replay(request) for request in requests]

    def _replay(self, request: dict[str, Any]) -> dict[str, Any] | ItemError:
        stored = self.layouts.get(request["id"])
        if stored is None:
            return ItemError(f"[missing] no layout for {request['id']} in {self.params.file}")
        views = {c["id"]: {v["id"] for v in c["views"]} for c in request["concepts"]}
        concepts = [o["concept"] for o in stored["objects"]]
        if sorted(concepts) != sorted(views):
            return ItemError(f"[mismatch] {self.params.file} has {sorted(concepts)} for {request['id']}, "
                             f"the recipe asks for {sorted(views)}")
        if stored["background"]["id"] not in {b["id"] for b in request["backgrounds"]}:
            return ItemError(f"[mismatch] background {stored['background']['id']} of {request['id']} is not allowed "
                             f"by the recipe")
        for obj in stored["objects"]:
            if obj["cutout"] not in views[obj["concept"]]:
                return ItemError(f"[mismatch] cut-out {obj['cutout']} of {request['id']} is not among this build's")
        return {"background": stored["background"], "objects": stored["objects"],
                **({"llm": stored["llm"]} if "llm" in stored else {})}
