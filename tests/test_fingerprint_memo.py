"""What makes `compile` cheap on an unchanged project gives the answers it replaces: the
distribution memo equals importlib.metadata's, memoised module facts equal a fresh parse and
go stale with the file, and one-item-per-line documents read back as the same JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

from base import installed
from base.files import dumps_json, dumps_json_document
from base.keys import canonical_json
from base.shared_json import compact_encoder
from compiler import fingerprint
from compiler.fingerprint import FileMemo, code_and_environment
from tests.conftest import REPO

STAGE_MODULES = ["stages.compose", "stages.backends.compose.paste", "stages.caption"]


@pytest.fixture
def memo_home(tmp_path, monkeypatch):
    """A fresh distribution memo for this test, and none of this process's memoised answers."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    installed._memo.cache_clear()
    yield tmp_path / "cache"
    installed._memo.cache_clear()


def test_the_distribution_memo_answers_as_importlib_metadata_does(memo_home):
    assert installed.packages() == metadata.packages_distributions()
    for distribution in ("numpy", "pillow", "Jinja2", "no-such-distribution-g4g"):
        expected = metadata.version(distribution) if distribution != "no-such-distribution-g4g" else None
        assert installed.version(distribution) == expected
    assert list(memo_home.glob("g4g/distributions-*.json"))

    installed._memo.cache_clear()  # a new process: the answers come from the file
    assert installed.packages() == metadata.packages_distributions()
    assert installed.version("numpy") == metadata.version("numpy")


def test_the_distribution_memo_is_redone_when_an_install_changes_the_metadata_folders(memo_home, tmp_path,
                                                                                      monkeypatch):
    installed.packages()
    site = tmp_path / "site"
    (site / "g4g_probe").mkdir(parents=True)
    (site / "g4g_probe/__init__.py").write_text("")
    info = site / "g4g_probe-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: g4g-probe\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("g4g_probe\n")
    monkeypatch.syspath_prepend(str(site))
    installed._memo.cache_clear()
    assert installed.packages()["g4g_probe"] == ["g4g-probe"]
    assert installed.version("g4g-probe") == "1.0"

    info.rename(site / "g4g_probe-2.0.dist-info")  # an upgrade renames the folder
    (site / "g4g_probe-2.0.dist-info/METADATA").write_text("Metadata-Version: 2.1\nName: g4g-probe\nVersion: 2.0\n")
    installed._memo.cache_clear()
    assert installed.version("g4g-probe") == "2.0"


def test_a_damaged_distribution_memo_is_recomputed(memo_home):
    installed.packages()
    (memo_file,) = memo_home.glob("g4g/distributions-*.json")
    memo_file.write_text('{"version": 1, "stamp": ')
    installed._memo.cache_clear()
    assert installed.packages() == metadata.packages_distributions()


def test_memoised_code_fingerprints_equal_a_fresh_parse(tmp_path, memo_home):
    fresh = code_and_environment(STAGE_MODULES)  # no memo: every module parsed
    memo = FileMemo(tmp_path / "hashes.json")
    assert code_and_environment(STAGE_MODULES, memo=memo) == fresh
    memo.save()
    reloaded = FileMemo(tmp_path / "hashes.json")
    parsed = []
    real = fingerprint._module_facts
    fingerprint._module_facts = lambda path, name: parsed.append(name) or real(path, name)
    try:
        assert code_and_environment(STAGE_MODULES, memo=reloaded) == fresh
    finally:
        fingerprint._module_facts = real
    assert parsed == []  # nothing was parsed again


def test_a_memoised_module_fact_goes_stale_with_its_file(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("import numpy\nVALUE = 1\n")
    memo = FileMemo(tmp_path / "hashes.json")
    first = memo.derived(module, "module m", lambda p: fingerprint._module_facts(p, "m"))
    assert first["imports"] == ["numpy"]
    module.write_text("import jinja2\nVALUE = 2\n")
    second = memo.derived(module, "module m", lambda p: fingerprint._module_facts(p, "m"))
    assert second["imports"] == ["jinja2"] and second["code"] != first["code"]


def test_compile_keys_do_not_depend_on_the_memos(project, tmp_path):
    """Two compiles, in new processes, the first with every memo cold and the second with every
    memo warm: the same documents, byte for byte."""
    script = ("import sys; from pathlib import Path; from compiler.compile import compile_recipe; "
              "from base.files import dumps_json_document as d; "
              "docs = compile_recipe(Path.cwd(), 'tiny', []); "
              "sys.stdout.write(''.join(d(docs[s]) for s in sorted(docs)))")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    outputs = []
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", script], cwd=project, capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr[-2000:]
        outputs.append(run.stdout)
    assert (project / ".g4g/hashes.json").is_file() and list((tmp_path / "cache/g4g").glob("distributions-*"))
    assert outputs[0] == outputs[1] and '"code": {' in outputs[0]


def test_a_document_has_one_item_per_line_and_reads_back_the_same():
    document = {"items": [{"id": "b", "parts": {"z": 1, "a": [1.5, "é"]}}, {"id": "a\u202e", "x": None}],
                "backend": {"name": "paste", "params": {}}, "count": 2, "empty": [], "ids": {"k": "v", "c": 3}}
    text = dumps_json_document(document)
    assert json.loads(text) == json.loads(dumps_json(document)) == document
    assert text.splitlines()[:5] == ['{', '"backend": {', '"name": "paste",', '"params": {}', '},']
    items = text[text.index('"items": [') :].splitlines()
    assert items[1] == '{"id": "b", "parts": {"a": [1.5, "é"], "z": 1}},'
    assert items[2] == '{"id": "a\\u202e", "x": null}'  # a bidi override is escaped, as dumps_json does
    assert dumps_json_document(dict(reversed(list(document.items())))) == text


def test_values_a_document_holds_many_times_are_written_as_each_copy_would_be():
    """The encoder reuses the text of a value many items hold: the document reads exactly as
    one whose items hold copies of their own."""
    common = {"code": {"m": "ab", "n": [1, 2.5, None, True]}, "text": "é\u202e", "empty": {}, "deep": [[{"z": 1}]]}
    items = [{"id": f"i{n}", "parts": {**common, "n": n, "same": common}, "common": common, "numbered": {1: "x"},
              "nan": float("nan"), "big": 10**20, "f": 0.1} for n in range(3)]
    document = {"items": items, "by_id": {"a": common, "b": common, "c": [common, common]}, "top": common}
    copies = json.loads(json.dumps(document))  # the same values, none of them shared
    assert copies["items"][0]["common"] is not copies["items"][1]["common"]
    text = dumps_json_document(document, shares_values=True)
    assert text == dumps_json_document(copies, shares_values=True) == dumps_json_document(document)
    lines = text.splitlines()
    first = next(line for line in lines if line.startswith('{"big"'))
    assert first.rstrip(",") == json.dumps(copies["items"][0], sort_keys=True, separators=(", ", ": ")).replace(
        "\\u00e9", "é")  # the same as json's own encoder, with UTF-8 kept


def test_the_encoder_made_once_writes_what_json_dumps_writes():
    """Keys and documents use one reusable C encoder instead of `json.dumps` per value: the
    same text, and the same error for what JSON cannot hold."""
    value = {"b": [1, 2.5, None, True, float("inf"), 10**20], "a": "é\u202e\n\"", "n": {2: {"z": [], "y": {}}}}
    assert canonical_json({"b": 1, "a": [0.1, "é"]}) == '{"a":[0.1,"é"],"b":1}'
    assert canonical_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert compact_encoder((", ", ": "))(value) == json.dumps(value, sort_keys=True, ensure_ascii=False,
                                                               separators=(", ", ": "))
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        canonical_json({"a": object()})
