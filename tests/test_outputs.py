"""Stage outputs as views of the item cache: linked, read-only, updated in place, one copy on
disk; an edit touches only the files of the items it changed (stages/runtime/outputs.py and the
runner's last-run records)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from base.files import published_mode
from stages.runtime import last_run
from stages.runtime.cache import ItemCache, RECORD
from stages.runtime.cache_maintenance import verify
from stages.runtime.outputs import OutputFolder
from tests.conftest import build_in_process, write_recipe, TINY_RECIPE

CACHE = Path(".g4g/cache")


def files_of(folder: Path) -> dict[str, os.stat_result]:
    return {p.relative_to(folder).as_posix(): p.stat() for p in sorted(folder.rglob("*")) if p.is_file()}


def cached_path(stage: str, index: Path, records: str, item_id: str, name: str) -> Path:
    record = next(r for r in json.loads(index.read_text())[records] if r["id"] == item_id)
    return ItemCache(CACHE, stage).file(record["key"], name)


def test_intermediate_outputs_are_read_only_links_to_the_cache_and_the_dataset_holds_copies(project):
    build_in_process(project)

    image = project / "build/images/cat_mug-00000.jpg"
    cached = cached_path("compose", project / "build/images.json", "images", "cat_mug-00000", image.name)
    assert os.path.samefile(image, cached) and stat.S_IMODE(image.stat().st_mode) == 0o444
    cutout = next((project / "build/cutouts").rglob("*.png"))
    assert cutout.stat().st_nlink == 2 and stat.S_IMODE(cutout.stat().st_mode) == 0o444
    shards = sorted((project / "dataset").glob("*.tar"))
    assert shards and all(shard.stat().st_nlink == 1 for shard in shards)  # DVC caches dataset/: copies


def test_shards_leave_the_item_cache_for_the_dataset_and_a_lost_one_is_written_again(project, capsys):
    """Pack moves a new shard into dataset/ (the bytes are on disk once besides DVC's cache);
    its cache entry keeps the record, which reads as absent, not damaged."""
    build_in_process(project)
    entries = ItemCache(CACHE, "pack")
    assert all([p.name for p in entries.folder(key).iterdir()] == [RECORD] for key in entries.keys())
    shards = sorted((project / "dataset").glob("*.tar"))
    assert shards and all(stat.S_IMODE(s.stat().st_mode) == published_mode() for s in shards)  # as a copy's
    clean = shards[0].read_bytes()
    shards[0].unlink()
    capsys.readouterr()

    reports = build_in_process(project)

    assert shards[0].read_bytes() == clean
    assert (reports["pack"]["computed"], reports["pack"]["repaired"]) == (1, 0)
    assert "warning: pack" not in capsys.readouterr().err
    assert verify(CACHE).damaged == {}


def test_an_entry_whose_files_were_moved_out_reads_as_absent_and_is_made_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache, key = ItemCache(tmp_path / "cache", "pack"), "ab" * 16
    record = cache.commit(key, {"id": "s"}, {"s.tar": b"shard"}, moved_out=True)
    folder = OutputFolder(tmp_path / "out", dvc_cached=True, moved_out=True)
    folder.update([("s.tar", record["files"]["s.tar"]["blake2b"], cache.file_path(key, "s.tar"))])
    assert (tmp_path / "out/s.tar").read_bytes() == b"shard" and not cache.file(key, "s.tar").exists()
    assert cache.lookup(key) == (None, None)

    assert cache.commit(key, {"id": "s"}, {"s.tar": b"shard"}, moved_out=True) == record
    assert cache.lookup(key) == (record, None)


def test_an_edit_replaces_only_the_files_of_the_items_it_changed(project):
    build_in_process(project)
    before = files_of(project / "build/images")
    shards = files_of(project / "dataset")
    recipe = {**TINY_RECIPE, "compositions": {**TINY_RECIPE["compositions"],
                                              "cat_mug": {**TINY_RECIPE["compositions"]["cat_mug"], "num_images": 5}}}
    write_recipe(project, recipe)

    reports = build_in_process(project)

    after = files_of(project / "build/images")
    gone = sorted(set(before) - set(after))
    assert gone == ["cat_mug-00005.jpg", "cat_mug-00005.mask.cat.png", "cat_mug-00005.mask.mug.png",
                    "cat_mug-00005.mask.png"]
    assert not set(after) - set(before)
    assert all(after[name].st_ino == before[name].st_ino and after[name].st_ctime_ns == before[name].st_ctime_ns
               for name in after)  # untouched: not even relinked
    assert reports["compose"]["computed"] == 0
    kept = files_of(project / "dataset")
    assert kept["cat_mug_plant-000000.tar"].st_ino == shards["cat_mug_plant-000000.tar"].st_ino


def test_unchanged_items_are_reused_from_the_last_run_without_opening_the_cache(project):
    build_in_process(project)
    for stage in ("plan", "compose", "caption", "score"):  # a cache cleaned by hand: every entry gone
        ItemCache(CACHE, stage).root.rename(project / f"gone-{stage}")

    reports = build_in_process(project)

    assert [reports[stage]["computed"] for stage in ("plan", "compose", "caption", "score")] == [0, 0, 0, 0]


def test_a_run_that_reused_every_item_from_the_memo_leaves_it_as_it_was(project):
    build_in_process(project)
    memo = last_run.FOLDER / "score.json"
    before = memo.stat()
    build_in_process(project)
    assert (memo.stat().st_ino, memo.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    recipe = project / "recipes/tiny.yaml"
    recipe.write_text(recipe.read_text().replace("num_images: 6", "num_images: 7"))
    assert build_in_process(project)["score"]["computed"] == 1
    assert len(last_run.load("score", ItemCache(CACHE, "score").root)) == 11  # rewritten with the new item


def test_an_output_file_edited_or_removed_is_restored_from_the_cache(project):
    build_in_process(project)
    image = project / "build/images/cat_mug-00001.jpg"
    clean = image.read_bytes()
    image.unlink()
    stray = project / "build/images/notes.txt"
    stray.write_text("mine")

    reports = build_in_process(project)

    assert image.read_bytes() == clean and reports["compose"]["computed"] == 0
    assert not stray.exists()  # the folder holds exactly the current items' files


def test_a_damaged_last_run_record_reads_as_none(project):
    build_in_process(project)
    memo = last_run.FOLDER / "compose.json"
    header, body = memo.read_text().split("\n", 1)
    cache = Path(json.loads(header)["cache"])
    assert len(last_run.load("compose", cache)) == 10
    records = json.loads(body)
    records[next(iter(records))]["concepts"] = []  # a record changed by hand: its digest no longer matches
    memo.write_text(header + "\n" + json.dumps(records))

    assert last_run.load("compose", cache) == {}
    assert build_in_process(project)["compose"]["computed"] == 0  # the cache answers instead


def test_a_killed_update_leaves_whole_files_and_the_next_one_converges(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sources = {}
    for name in ("a", "b", "c"):
        sources[name] = tmp_path / "cache" / name
        sources[name].parent.mkdir(exist_ok=True)
        sources[name].write_bytes(name.encode() * 10)
        sources[name].chmod(0o444)
    folder = OutputFolder(tmp_path / "out")
    folder.update([("a", "da", sources["a"]), ("b", "db", sources["b"])])
    replaced = iter([None, KeyboardInterrupt()])
    real = os.replace

    def killed(source, target):
        error = next(replaced)
        if error is not None:
            raise error
        return real(source, target)

    monkeypatch.setattr("stages.runtime.outputs.os.replace", killed)
    try:
        OutputFolder(tmp_path / "out").update([("a", "da2", sources["c"]), ("c", "dc", sources["c"])])
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"a", "b"}  # no temporary, nothing half written
    OutputFolder(tmp_path / "out").update([("a", "da2", sources["c"]), ("c", "dc", sources["c"])])
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == {"a": b"c" * 10, "c": b"c" * 10}


def test_an_update_that_places_nothing_leaves_the_stamps_and_still_removes_strays(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "cache" / "a"
    source.parent.mkdir()
    source.write_bytes(b"a" * 10)
    source.chmod(0o444)
    OutputFolder(tmp_path / "out").update([("a", "da", source)])
    stamps = OutputFolder(tmp_path / "out").stamps_file
    before = stamps.stat()
    (tmp_path / "out" / "stray").write_text("mine")
    folder = OutputFolder(tmp_path / "out")
    assert folder.holds({"a": {"blake2b": "da"}})
    folder.update([("a", "da", source)])
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"a"}
    assert (stamps.stat().st_ino, stamps.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    folder.update([])  # a removal rewrites them
    assert not (tmp_path / "out" / "a").exists() and json.loads(stamps.read_text()) == {}
