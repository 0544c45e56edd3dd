"""Compiled documents write what a composition's items have in common once, and a stage reads
every item's parts whole again (base.compiled)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from base.compiled import COMMON, DocumentError, expanded, read_compiled
from base.keys import content_key, content_keys
from compiler import compile as compile_stage
from compiler.compile import compile_recipe

CODE = {"stages.plan": "5e1f", "base.keys": "77aa"}


def written(document: dict) -> dict:
    """`document` as a stage reads it from disk: no value shared by identity."""
    return json.loads(json.dumps(document))


def test_each_item_gets_its_compositions_common_parts_and_keeps_its_own():
    document = written({COMMON: {"cat_dog": {"code": CODE, "canvas": [8, 8], "phrase": "a path"},
                                 "cat_mug": {"code": CODE, "canvas": [8, 8]}},
                        "items": [{"id": "cat_dog-00000", "common": "cat_dog", "parts": {"id": "cat_dog-00000"}},
                                  {"id": "cat_dog-00001", "common": "cat_dog",
                                   "parts": {"id": "cat_dog-00001", "canvas": [4, 4]}},
                                  {"id": "cat_mug-00000", "common": "cat_mug", "parts": {"id": "cat_mug-00000"}}]})
    items = expanded(document)["items"]
    assert [item["parts"] for item in items] == [
        {"code": CODE, "canvas": [8, 8], "phrase": "a path", "id": "cat_dog-00000"},
        {"code": CODE, "canvas": [4, 4], "phrase": "a path", "id": "cat_dog-00001"},  # its own value wins
        {"code": CODE, "canvas": [8, 8], "id": "cat_mug-00000"}]
    assert items[0]["parts"]["code"] is items[1]["parts"]["code"]  # one object per composition: keyed once
    assert document["items"][0]["parts"] == {"id": "cat_dog-00000"}  # what was read is left as it was
    full = [written(item["parts"]) for item in items]  # the parts written out in full, nothing shared
    assert content_keys("plan", [item["parts"] for item in items]) == [content_key("plan", p) for p in full]


def test_a_document_without_common_parts_is_read_as_it_is():
    document = {"items": [{"id": "cat/cat_01", "parts": {"photo": "ab12"}}]}
    assert expanded(document) is document


def test_an_item_naming_common_parts_the_document_lacks_is_an_error_naming_both():
    document = {COMMON: {"cat_dog": {"code": CODE}},
                "items": [{"id": "cat_mug-00003", "common": "cat_mug", "parts": {"id": "cat_mug-00003"}}]}
    with pytest.raises(DocumentError, match=r"item 'cat_mug-00003' names common parts 'cat_mug'.*valid: 'cat_dog'"):
        expanded(document)


def test_a_damaged_document_on_disk_is_named(tmp_path):
    path = tmp_path / "compose.json"
    path.write_text(json.dumps({COMMON: {}, "items": [{"id": "a-0", "common": "a", "parts": {}}]}))
    with pytest.raises(DocumentError, match=rf"^{re.escape(str(path))}: item 'a-0' names common parts 'a'.*compile"):
        read_compiled(path)


def test_compile_writes_a_compositions_common_parts_once_and_stages_read_them_whole(project: Path):
    assert compile_stage.main(["--params", "params.yaml", "--out", "build/compiled"]) == 0
    documents = compile_recipe(project, "tiny", [])
    compositions = len(documents["plan"]["compositions"])
    for stage in ("plan", "compose", "caption", "score"):
        text = (project / f"build/compiled/{stage}.json").read_text()
        items = documents[stage]["items"]
        assert len(items) > 2 * compositions
        assert text.count('"code": ') == compositions  # the code fingerprint once per composition, not per item
        assert read_compiled(project / f"build/compiled/{stage}.json")["items"] == items
        assert all({"code", "environment", "backend", "id"} <= item["parts"].keys() for item in items)
