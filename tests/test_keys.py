"""Key sensitivity: every input class of an item's key recomputes exactly the items it should,
and no-op edits recompute nothing.

Code edits are made in the project copy and built in a subprocess, so the code that runs (and
is fingerprinted) is the edited copy, as with `dvc repro`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compiler.compile import compile_recipe
from tests.conftest import REPO, dataset_bytes, run_tool

STAGES = ("extract", "plan", "compose", "caption", "score", "pack")
DRIVER = ("import sys; from pathlib import Path; sys.path.append({repo!r}); "
          "from tests.conftest import build_in_process; build_in_process(Path.cwd())")


def build(root: Path) -> dict[str, int]:
    """Build the project copy in a fresh interpreter that imports the copy's code; the number
    of items each stage computed."""
    result = subprocess.run([sys.executable, "-c", DRIVER.format(repo=str(REPO))], cwd=root,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    reports = {p.stem: json.loads(p.read_text()) for p in (root / "reports").glob("*.json")}
    return {stage: reports[stage]["computed"] for stage in STAGES}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def edit_recipe(root: Path, change) -> None:
    path = root / "recipes/tiny.yaml"
    recipe = yaml.safe_load(path.read_text())
    change(recipe)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))


NOTHING = dict.fromkeys(STAGES, 0)


@pytest.fixture
def built(project):
    """The tiny project, built once: 4 cut-outs, 10 images, 3 shards."""
    assert build(project) == {"extract": 4, "plan": 10, "compose": 10, "caption": 10, "score": 10, "pack": 6}
    return project


def test_code_edits_recompute_what_they_run_and_stop_where_output_is_unchanged(built):
    root = built
    before = dataset_bytes(root)
    paste = root / "stages/backends/compose/paste.py"
    original = paste.read_text()

    # A comment, a docstring and reformatting: nothing.
    paste.write_text(original.replace('"""', '"""Edited. ', 1) + "\n\n# a comment\n")
    assert build(root) == NOTHING
    assert dataset_bytes(root) == before

    # A backend edit that changes nothing it outputs: compose reruns, and stops there (early
    # cutoff: the scores read the images' bytes, which are the same). Shards carry the new keys.
    paste.write_text(original + "\nEDITED = True\n")
    assert build(root) == {**NOTHING, "compose": 10, "pack": 6}
    assert (root / "dataset/cat_mug-000000.tar").read_bytes() != before["cat_mug-000000.tar"]
    why = run_tool(root, "g4g", "explain", "cat_mug-00001").stdout
    assert "compose cat_mug-00001: recomputed" in why and "stages.backends.compose.paste" in why
    assert "plan cat_mug-00001: reused" in why

    # Reverting reuses the old items; the old shards left the item cache for dataset/ (one copy on
    # disk), so pack writes them again from those items: the same bytes.
    paste.write_text(original)
    assert build(root) == {**NOTHING, "pack": 6}
    assert dataset_bytes(root) == before


def test_a_helper_module_edit_that_changes_bytes_reaches_the_dataset(built):
    root = built
    before = dataset_bytes(root)
    edit(root / "stages/runtime/images.py", "image.save(buffer, format=\"JPEG\", quality=quality)",
         "image.save(buffer, format=\"JPEG\", quality=quality - 5)")
    computed = build(root)
    # extract runs the module too (its cut-outs are PNGs: same bytes), and plan (it reads a scene's
    # occluder masks through it): the same layouts, so captioning stops there.
    assert computed["extract"] == 4 and computed["plan"] == 10 and computed["caption"] == 0
    assert computed["compose"] == 10 and computed["score"] == 10 and computed["pack"] == 6
    assert dataset_bytes(root)["cat_mug-000000.tar"] != before["cat_mug-000000.tar"]


def test_a_stage_module_edit_recomputes_that_stage(built):
    root = built
    edit(root / "stages/caption.py", "def concept_name(", "EDITED = True\n\n\ndef concept_name(")
    assert build(root) == {**NOTHING, "caption": 10, "pack": 6}


def test_an_included_template_is_part_of_the_caption_key(built):
    root = built
    templates = root / "templates/captions"
    (templates / "where.j2").write_text("{{ background }}")
    edit(templates / "short.j2", "{{ background }}", '{% include "captions/where.j2" %}')
    assert build(root) == {**NOTHING, "caption": 10, "pack": 6}
    (templates / "where.j2").write_text("somewhere {{ background }}")
    assert build(root) == {**NOTHING, "caption": 10, "pack": 6}
    manifest = (root / "dataset/manifest.jsonl").read_text()
    assert "somewhere in the garden" in manifest


def test_what_a_backend_does_not_read_recomputes_nothing_of_it(built):
    root = built
    images = {p.name: p.read_bytes() for p in (root / "build/images").iterdir()}

    # The solver and the paste composer read no class noun; the geometric scorer neither.
    edit_recipe(root, lambda r: r["concepts"]["mug"].update(class_noun="cup"))
    assert build(root) == {**NOTHING, "caption": 10, "pack": 6}

    # The paste composer does not read the background phrase: only the captions that say it.
    edit_recipe(root, lambda r: r["backgrounds"]["grass"].update(phrase="on the lawn"))
    computed = build(root)
    assert computed["plan"] == computed["compose"] == computed["score"] == 0 and 0 < computed["caption"] < 10

    # PNG output ignores the JPEG quality.
    edit_recipe(root, lambda r: r["output"].update(image_format="png"))
    assert build(root)["compose"] == 10
    edit_recipe(root, lambda r: r["output"].update(jpeg_quality=80))
    assert build(root) == NOTHING
    assert {p.name for p in (root / "build/images").iterdir()} != set(images)


def test_runtime_settings_are_in_no_key(built):
    root = built
    before = dataset_bytes(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["runtime"].update(workers=2, batch_size=3)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert build(root) == NOTHING
    assert dataset_bytes(root) == before


def test_library_versions_enter_the_keys_of_the_stages_that_import_them(project, monkeypatch):
    from base import installed

    before = compile_recipe(project, "tiny", [])
    real_version = installed.version
    monkeypatch.setattr(installed, "version", lambda name: "99.0" if name.lower() == "pillow" else real_version(name))
    after = compile_recipe(project, "tiny", [])
    for stage in ("extract", "compose"):  # decode and encode images with Pillow
        assert before[stage]["items"][0]["parts"]["environment"] != after[stage]["items"][0]["parts"]["environment"]
    assert before["caption"]["items"][0]["parts"] == after["caption"]["items"][0]["parts"]  # jinja2 only


def test_cpu_backends_keys_are_the_same_with_or_without_the_model_libraries(project):
    """`make demo` installs no torch and `make test` does: the demo's keys, and so its dataset's
    bytes, must not depend on which of the two built it."""
    from stages.backends import MODEL_PACKAGES

    def environments(value):
        if isinstance(value, dict):
            yield from ([value["environment"]] if "environment" in value else [])
            for inner in value.values():
                yield from environments(inner)
        elif isinstance(value, list):
            for inner in value:
                yield from environments(inner)

    documents = compile_recipe(project, "tiny", [])
    for stage in STAGES:
        found = list(environments(documents[stage]))
        assert found and all("python" in e and not set(e) & set(MODEL_PACKAGES) for e in found), stage


def test_weights_enter_the_extract_keys(project, monkeypatch, tmp_path):
    from stages.backends.extract import u2netp

    weights = tmp_path / "u2netp.onnx"
    weights.write_bytes(b"first")
    monkeypatch.setattr(u2netp, "weights", lambda params: [str(weights)])
    first = compile_recipe(project, "tiny", [])
    weights.write_bytes(b"other")
    second = compile_recipe(project, "tiny", [])
    segmented = [i for i in first["extract"]["items"] if not i["cutout"]]
    assert segmented and all(item["parts"]["weights"] for item in segmented)
    changed = {i["id"] for i, j in zip(first["extract"]["items"], second["extract"]["items"]) if i["parts"] != j["parts"]}
    assert changed == {item["id"] for item in segmented}  # cut-out concepts run `alpha`: no weights


def test_dvc_yaml_lists_every_module_each_stage_imports():
    """The deps of each stage in dvc.yaml cover every project module it can run."""
    from compiler.fingerprint import closure
    from stages import backends

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage in (*STAGES, "train", "evaluate"):
        modules = [f"stages.{stage}"] + list(backends.REGISTRY.get(stage, {}).values())
        files = {path.relative_to(REPO).as_posix() for path in closure(modules)[0].values()}
        deps = stages[stage]["deps"]
        uncovered = sorted(f for f in files if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))
        assert not uncovered, f"dvc.yaml stage '{stage}' misses deps {uncovered}"


def test_a_backend_declares_the_libraries_it_reaches_indirectly(project):
    """diffusers runs transformers text encoders and safetensors loaders the module never imports."""
    documents = compile_recipe(project, "tiny", ["backends.compose.name=sdxl-inpaint"])
    environment = documents["compose"]["items"][0]["parts"]["environment"]
    assert {"diffusers", "transformers", "safetensors", "torch"} <= set(environment)
    assert "safetensors" not in compile_recipe(project, "tiny", [])["compose"]["items"][0]["parts"]["environment"]


def test_explain_says_when_dvc_restored_a_stage_instead_of_describing_another_run(tmp_path):
    from base.files import write_json
    from stages.runtime import explain

    index = tmp_path / "build/layouts.json"

    def run(seed: int) -> None:  # a stage run: its record in .g4g/keys, its index (a DVC output)
        items = [{"id": "a-00000", "parts": {"seed": seed}}]
        items[0]["key"] = f"key{seed}"
        _, digest = explain.record("plan", items, {"a-00000"}, tmp_path / "keys")
        write_json(index, {"layouts": [], "keys_digest": digest})

    run(1)
    restored_index = index.read_bytes()
    run(2)
    assert explain.explain("a-00000", ["plan"], tmp_path / "keys", tmp_path)[0] == "plan a-00000: recomputed (key key2)"
    index.write_bytes(restored_index)  # dvc repro restored the seed-1 run
    [line] = explain.explain("a-00000", ["plan"], tmp_path / "keys", tmp_path)
    assert line.startswith("plan: restored from DVC's run cache") and "dvc repro --force -s plan" in line


def keyed(parts: dict[str, dict]) -> list[dict]:
    """Items (id -> parts) keyed as a stage keys them."""
    from base.keys import content_key

    return [{"id": item_id, "parts": item_parts, "key": content_key("plan", item_parts)}
            for item_id, item_parts in parts.items()]


def test_the_key_record_writes_the_rows_an_edit_changed_and_a_killed_write_leaves_it_as_it_was(tmp_path,
                                                                                              monkeypatch):
    import sqlite3

    from stages.runtime import explain

    keys = tmp_path / "keys"
    items = keyed({f"a-{n:05d}": {"seed": n, "code": {"plan": "c1"}} for n in range(5)})
    explain.record("plan", items, {item["id"] for item in items}, keys)
    explain.record("plan", items, set(), keys)  # every row changes once: nothing computed now
    before = explain.load("plan", keys)
    written: list[str] = []  # every statement run, with its values

    edited = keyed({**{i["id"]: i["parts"] for i in items}, "a-00002": {"seed": 2, "code": {"plan": "c2"}}})
    real = sqlite3.connect

    def traced(*args, **kwargs):
        connection = real(*args, **kwargs)
        connection.set_trace_callback(written.append)
        return connection

    monkeypatch.setattr(explain.sqlite3, "connect", traced)
    counts, _ = explain.record("plan", edited, {"a-00002"}, keys)
    assert counts == {"code": 1}
    [row] = [w for w in written if "INTO items" in w or "FROM items WHERE" in w]  # one row written, none deleted
    assert row.startswith("INSERT OR REPLACE INTO items VALUES ('a-00002', ")
    state = explain.load("plan", keys)
    assert {i: e for i, e in state["items"].items() if e != before["items"][i]} == {"a-00002": state["items"]["a-00002"]}

    real_json = explain.canonical_json

    def killed(value):  # the process dies after writing the item rows, while writing the part values
        if isinstance(value, dict) and "computed" in value:
            return real_json(value)
        raise KeyboardInterrupt

    monkeypatch.setattr(explain, "canonical_json", killed)
    again = keyed({**{i["id"]: i["parts"] for i in items}, "a-00003": {"seed": 3, "code": {"plan": "c3"}}})
    with pytest.raises(KeyboardInterrupt):
        explain.record("plan", again, {"a-00003"}, keys)
    assert explain.load("plan", keys) == state


def test_a_key_record_of_another_shape_is_made_anew_and_a_busy_or_full_one_is_not(tmp_path, monkeypatch):
    import sqlite3
    from contextlib import closing

    from base.files import DiskFull
    from stages.runtime import explain

    keys = tmp_path / "keys"
    keys.mkdir()
    with closing(sqlite3.connect(keys / "plan.sqlite")) as database:  # another tool's database, same name
        database.execute("CREATE TABLE items (a INTEGER, b INTEGER)")
        database.commit()
    items = keyed({"a-00000": {"seed": 1}})
    assert explain.load("plan", keys)["items"] == {}
    explain.record("plan", items, {"a-00000"}, keys)
    assert explain.item_keys("plan", keys) == {items[0]["key"]}

    monkeypatch.setattr(explain, "LOCK_WAIT", 0.1)
    with closing(sqlite3.connect(keys / "plan.sqlite", isolation_level=None)) as reader:
        reader.execute("BEGIN EXCLUSIVE")  # another process holds the record
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            explain.record("plan", items, set(), keys)
        reader.execute("ROLLBACK")
    assert explain.item_keys("plan", keys) == {items[0]["key"]}  # waited, failed, kept

    def full(*args):
        error = sqlite3.OperationalError("database or disk is full")
        error.sqlite_errorcode = sqlite3.SQLITE_FULL
        raise error

    monkeypatch.setattr(explain, "_record", full)
    with pytest.raises(DiskFull, match=r"no space left on the device while writing .*keys/plan\.sqlite"):
        explain.record("plan", items, set(), keys)
    assert explain.item_keys("plan", keys) == {items[0]["key"]}


def test_the_keys_of_items_sharing_values_are_the_keys_of_their_copies():
    """content_keys encodes a value many items hold once; each key is still content_key's."""
    from base.keys import content_key, content_keys

    code = {"base": "ab12", "stages.plan": "cd34", "nested": [1, 2.5, None, True, {"é": [0.1]}]}
    request = {"concepts": [{"id": "cat", "views": [{"aspect": 0.75}]}], "numbered": {1: "x"}}
    parts = [{"code": code, "id": f"c-{n:05d}", "request": {"concepts": request, "n": n}, "nan": float("nan")}
             for n in range(4)]
    copies = json.loads(json.dumps(parts))  # numbered keys become strings, as in any key
    assert content_keys("plan", parts) == [content_key("plan", p) for p in copies] == [
        content_key("plan", p) for p in parts]
    assert len(set(content_keys("plan", parts))) == 4 and content_keys("plan", parts) != content_keys("score", parts)
