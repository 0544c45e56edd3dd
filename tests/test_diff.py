"""`g4g diff` on real builds: a temporary git + DVC repository with three versions of a tiny recipe.

  unbuilt  the project, never built
  a        the first build
  b        one composition's count raised, the short-caption template changed for 3+ concepts,
           the grass background photo replaced by other bytes (same path)
  c        min_area raised so that some of b's samples are rejected (the workspace is c too)
"""

from __future__ import annotations

import importlib.resources
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.diff.causes import Plans, sample_causes
from compiler.diff.compare import compare
from compiler.diff.snapshot import Sample, Snapshot, workspace
from tests.conftest import TINY_RECIPE, copy_project, run_tool, write_recipe

SKIMAGE_DATA = Path(str(importlib.resources.files("skimage") / "data"))
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
SERIAL_COMMA = ('{% if concepts | length > 2 %}{{ concepts[:-1] | map(attribute="name") | join(", ") }} and '
                '{{ concepts[-1].name }}{% else %}{{ concepts | map(attribute="name") | join(" and ") }}{% endif %} '
                '{{ background }}\n')


def samples(root: Path) -> dict[str, dict]:
    """Every packed sample's provenance JSON in root/dataset, by key."""
    out = {}
    for shard in sorted((root / "dataset").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    record = json.loads(tar.extractfile(member).read())
                    out[record["key"]] = record
    return out


def build(root: Path, tag: str) -> dict[str, dict]:
    run_tool(root, "dvc", "repro", "-q", "pack", G4G_CACHE_DIR=str(root / ".g4g/cache"))  # the dataset only
    commit(root, tag)
    return samples(root)


def commit(root: Path, tag: str) -> None:
    run_tool(root, "git", "add", "-A")
    run_tool(root, "git", "commit", "-qm", tag, **GIT_ENV)
    run_tool(root, "git", "tag", tag)


@pytest.fixture(scope="module")
def history(tmp_path_factory, reference_data) -> dict:
    """The repository (the workspace is at c) and each build's samples."""
    root = copy_project(tmp_path_factory.mktemp("diff") / "project")
    (root / "photos").mkdir()
    shutil.copy(SKIMAGE_DATA / "grass.png", root / "photos/grass.png")
    recipe = json.loads(json.dumps(TINY_RECIPE))
    recipe["compositions"]["cat_mug"]["num_images"] = 3
    recipe["compositions"]["cat_mug_plant"]["num_images"] = 2
    recipe["backgrounds"]["grass"]["images"] = ["photos/grass.png"]
    write_recipe(root, recipe)
    (root / ".gitignore").write_text("/.g4g/\n")
    run_tool(root, "git", "init", "-q")
    run_tool(root, "dvc", "init", "-q")
    run_tool(root, "dvc", "config", "core.analytics", "false")
    commit(root, "unbuilt")
    built = {"a": build(root, "a")}

    recipe["compositions"]["cat_mug"]["num_images"] = 4
    write_recipe(root, recipe)
    (root / "templates/captions/short.j2").write_text(SERIAL_COMMA)
    shutil.copy(SKIMAGE_DATA / "gravel.png", root / "photos/grass.png")
    built["b"] = build(root, "b")

    smallest = sorted(min(c["area"] for c in s["score"]["concepts"]) for s in built["b"].values())
    threshold = round((smallest[len(smallest) // 2 - 1] + smallest[len(smallest) // 2]) / 2, 5)
    recipe["backends"] = {"score": {"name": "geometric", "min_area": threshold}}
    write_recipe(root, recipe)
    built["c"] = build(root, "c")
    rejected = {key for key, s in built["b"].items() if min(c["area"] for c in s["score"]["concepts"]) < threshold}
    return {"root": root, "built": built, "threshold": threshold, "rejected": rejected}


def diff(monkeypatch, capsys, root: Path, *args: str) -> tuple[int, str, str]:
    monkeypatch.chdir(root)
    code = main(["diff", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_category_between_two_revisions(history, monkeypatch, capsys, tmp_path):
    root, built = history["root"], history["built"]
    code, out, _ = diff(monkeypatch, capsys, root, "a", "b", "--json", "--html", str(tmp_path / "diff.html"))
    assert code == 0
    report = json.loads(out)
    assert report["a"]["rev"] == "a" and report["b"]["rev"] == "b" and report["differs"]
    assert report["recipe"] == {"recipe.compositions.cat_mug.num_images": {"old": 3, "new": 4}}
    assert list(report["photos"]) == ["photos/grass.png"]

    on_grass = {key for key, s in built["a"].items() if s["background"]["id"] == "grass"}
    cat_mug = report["compositions"]["cat_mug"]
    assert on_grass and on_grass != {k for k in built["a"] if k.startswith("cat_mug-")}  # the recipe draws both
    assert cat_mug["added"] == ["cat_mug-00003"] and cat_mug["removed"] == []
    assert set(cat_mug["changed"]) == on_grass
    assert all(entry["parts"] == ["photos", "image"] for entry in cat_mug["changed"].values())
    template = "template templates/captions/short.j2 changed"
    assert all(entry["causes"] == ["photo photos/grass.png replaced", template] for entry in cat_mug["changed"].values())
    assert all(set(entry["item_keys"]) == {"caption", "compose", "score"} for entry in cat_mug["changed"].values())
    assert set(cat_mug["unchanged"]) == {k for k in built["a"] if k.startswith("cat_mug-")} - on_grass
    assert set(cat_mug["rekeyed"]) == set(cat_mug["unchanged"])  # the template edit re-keyed their captions only
    assert all(entry["causes"] == [template] for entry in cat_mug["rekeyed"].values())
    assert cat_mug["stats"]["old"]["images"] == 3 and cat_mug["stats"]["new"]["images"] == 4
    assert cat_mug["stats"]["delta"]["kept"] == 1

    plant = report["compositions"]["cat_mug_plant"]
    assert sorted(plant["changed"]) == ["cat_mug_plant-00000", "cat_mug_plant-00001"] and plant["unchanged"] == []
    for key, entry in plant["changed"].items():
        assert entry["parts"] == ["caption"] and entry["causes"] == [template]
        assert entry["captions"]["old"]["short"] == built["a"][key]["captions"]["short"]
        assert entry["captions"]["new"]["short"] == built["b"][key]["captions"]["short"]
        assert entry["captions"]["new"]["short"].count(", ") == 1
    assert all(not comp[name] for comp in report["compositions"].values()
               for name in ("now_kept", "now_rejected", "rejected_added", "rejected_removed"))

    page = (tmp_path / "diff.html").read_text()  # one card per way of changing: an example and a count
    assert page.count('<div class="card">') == 3  # new photo (+ template), the added, the re-captioned
    assert page.count('src="data:image/jpeg;base64,') == 2 + 1 + 1  # before + after, after, one
    assert "1 of 2 samples like this; others: cat_mug_plant-00001<" in page
    assert f"because: photo photos/grass.png replaced; {template}" in page


def test_json_is_stable_and_terminal_names_the_changes(history, monkeypatch, capsys):
    first = diff(monkeypatch, capsys, history["root"], "a", "b", "--json")[1]
    assert diff(monkeypatch, capsys, history["root"], "a", "b", "--json")[1] == first
    assert first == json.dumps(json.loads(first), sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    code, out, _ = diff(monkeypatch, capsys, history["root"], "a", "b")
    assert code == 0
    for text in ("recipe.compositions.cat_mug.num_images", "photos/grass.png", "cat_mug-00003", "added",
                 "cat_mug_plant-00000", "caption", "4 (+1)",
                 "2 samples changed: caption (template templates/captions/short.j2 changed)"):
        assert text in out


def test_kept_and_rejected_flips_with_reasons(history, monkeypatch, capsys):
    rejected = history["rejected"]
    assert rejected and rejected != set(history["built"]["b"])
    report = json.loads(diff(monkeypatch, capsys, history["root"], "b", "--json")[1])  # b -> the workspace (c)
    assert report["b"]["label"] == "workspace"
    assert report["recipe"]["backends.score.params.min_area"] == {"old": 0.01, "new": history["threshold"]}
    flipped = {key: entry for comp in report["compositions"].values() for key, entry in comp["now_rejected"].items()}
    assert set(flipped) == rejected
    assert all(e["stage"] == "score" and any("area" in reason for reason in e["reasons"]) for e in flipped.values())
    kept_again = json.loads(diff(monkeypatch, capsys, history["root"], "c", "HEAD~1", "--json")[1])
    back = {key: entry for comp in kept_again["compositions"].values() for key, entry in comp["now_kept"].items()}
    assert back == flipped
    cat_mug = kept_again["compositions"]["cat_mug"]["stats"]
    assert cat_mug["new"]["keep_rate"] == 1.0 and cat_mug["delta"]["keep_rate"] > 0


def test_exit_code(history, monkeypatch, capsys):
    code, out, _ = diff(monkeypatch, capsys, history["root"], "--exit-code")  # HEAD (c) against the workspace (c)
    assert code == 0 and "no differences" in out
    assert diff(monkeypatch, capsys, history["root"], "a", "b", "--exit-code", "--json")[0] == 1
    assert diff(monkeypatch, capsys, history["root"], "a", "a", "--exit-code")[0] == 0


def test_unknown_unbuilt_and_uncached_revisions_are_clear_errors(history, monkeypatch, capsys, tmp_path):
    code, _, err = diff(monkeypatch, capsys, history["root"], "no-such-rev")
    assert code == 2 and "error: unknown revision 'no-such-rev'" in err
    code, _, err = diff(monkeypatch, capsys, history["root"], "unbuilt", "a")
    assert code == 2 and "unbuilt (" in err and "it was not built" in err and "dvc repro" in err

    clone = tmp_path / "clone"  # the same repository without DVC's cache: a fresh clone
    shutil.copytree(history["root"], clone, ignore=shutil.ignore_patterns("cache", ".g4g"))
    code, _, err = diff(monkeypatch, capsys, clone, "a", "b")
    assert code == 2 and "a (" in err and "not in the local DVC cache" in err and "dvc pull dataset" in err


def plans_of(label: str, parts: dict | None) -> Plans:
    """A side whose caption plan holds one item with `parts` (None: no plan in the cache)."""
    files = {} if parts is None else {"build/compiled/caption.json": json.dumps(
        {"items": [{"id": "cat_mug-00000", "parts": parts}]}).encode()}

    def open_file(name: str) -> io.BytesIO:
        if name not in files:
            raise FileNotFoundError(name)
        return io.BytesIO(files[name])
    return Plans(Snapshot(label, None, None, {}, {}, {}, open_file))


def caption_keyed(key: str) -> Sample:
    return Sample("s.tar", {"item_keys": {"caption": key}, "concepts": [], "background": {}})


def test_causes_name_the_code_module_the_library_the_options_and_the_recipe_inputs():
    parts = {"code": {"stages.caption": "c1", "stages.templating": "t1"}, "environment": {"jinja2": "3.1.5"},
             "backend": {"name": "template", "version": "1", "params": {"style": "a"}},
             "templates": {"captions/short.j2": "s1"}, "phrases": {"grass": "on the grass"}, "seed": 7}
    edited = json.loads(json.dumps(parts))
    edited["code"]["stages.caption"] = "c2"  # a code fingerprint: one module's syntax tree changed
    edited["environment"]["jinja2"] = "3.1.6"
    old, new = caption_keyed("k1"), caption_keyed("k2")
    assert sample_causes("cat_mug-00000", old, new, plans_of("A", parts), plans_of("B", edited)) == [
        "code changed: stages.caption", "library jinja2 3.1.5 -> 3.1.6"]

    edited = json.loads(json.dumps(parts))
    edited["backend"]["params"]["style"] = "b"
    edited["phrases"]["grass"] = "on a lawn"
    edited["templates"]["captions/detailed.j2"] = "d1"
    assert sample_causes("cat_mug-00000", old, new, plans_of("A", parts), plans_of("B", edited)) == [
        "caption backend template options: style a -> b", "caption inputs from the recipe changed: phrases",
        "template templates/captions/detailed.j2 added"]

    # Same plans, other key: what an earlier stage produced (the layout) changed; no plan: said so.
    assert sample_causes("cat_mug-00000", old, new, plans_of("A", parts), plans_of("B", parts)) == [
        "caption: an earlier stage's output changed"]
    assert sample_causes("cat_mug-00000", old, new, plans_of("A", None), plans_of("B", parts)) == [
        "caption: unknown (A: no build plan of it in build/compiled/caption.json, e.g. not in the DVC cache)"]


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed (`apt-get install -y chromium`, "
                    "as .ci/run does)")
def test_html_page_renders_in_headless_chromium(history, monkeypatch, capsys, tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' installs playwright"
                                          ).sync_playwright
    flips = json.loads(diff(monkeypatch, capsys, history["root"], "c", "HEAD~1", "--json")[1])["compositions"]
    groups = sum(len({tuple(entry["reasons"]) for entry in comp["now_kept"].values()}) for comp in flips.values())
    expected = {"changes": (("a", "b"), 3), "flips": (("c", "HEAD~1"), groups)}  # a card per composition and reason
    for name, (revisions, cards) in expected.items():
        assert diff(monkeypatch, capsys, history["root"], *revisions, "--html", str(tmp_path / f"{name}.html"))[0] == 0
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            for name, (_, cards) in expected.items():
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                errors = []
                page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto((tmp_path / f"{name}.html").as_uri(), wait_until="load")
                widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete && i.naturalWidth)")
                assert page.locator(".card").count() == cards
                assert widths and all(width > 0 for width in widths), widths
                assert errors == []
                page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)  # kept as a test artifact
        finally:
            browser.close()


def dataset_copy(history, tmp_path: Path, keep_shards: bool = True) -> Path:
    """The workspace's dataset/ copied into a folder of its own (with or without its shards)."""
    shutil.copytree(history["root"] / "dataset", tmp_path / "copy/dataset",
                    ignore=None if keep_shards else shutil.ignore_patterns("*.tar"))
    return tmp_path / "copy"


def test_a_diff_reads_manifests_not_shards(history, tmp_path):
    """Without its shards, the dataset compares the same: the manifest holds each sample's
    provenance and member digests, equal to the shards' (checked by --verify)."""
    original = workspace(history["root"], verify=True)
    assert original.mismatches == [] and original.problems == [] and original.notes == []
    assert len(original.samples) == len(history["built"]["c"])
    without_shards = workspace(dataset_copy(history, tmp_path, keep_shards=False))
    assert {k: (s.shard, s.provenance, s.digests) for k, s in without_shards.samples.items()} == {
        k: (s.shard, s.provenance, s.digests) for k, s in original.samples.items()}
    assert without_shards.samples["cat_mug-00000"].provenance == history["built"]["c"]["cat_mug-00000"]
    assert not compare(original, without_shards)["differs"]


def test_verify_reports_a_shard_that_differs_from_its_manifest(history, monkeypatch, capsys, tmp_path):
    copy = dataset_copy(history, tmp_path)
    row = json.loads((copy / "dataset/manifest.jsonl").read_text().splitlines()[0])
    shard = copy / "dataset" / row["shard"]
    with tarfile.open(shard) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar.getmembers()]
    shard.unlink()
    with tarfile.open(shard, "w") as tar:  # the first sample's short caption edited in the shard only
        for info, data in members:
            data = b"edited" if info.name == f"{row['key']}.txt" else data
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert workspace(copy).mismatches == []  # not read without --verify
    assert workspace(copy, verify=True).mismatches == [
        f"workspace: verify: {row['key']}: members differ from the manifest's sha256: txt"]
    code, _, err = diff(monkeypatch, capsys, history["root"], "HEAD", "--verify")
    assert code == 0 and "verify: every shard holds what its manifest says" in err


def test_a_dataset_packed_before_manifest_digests_is_read_from_its_shards(history, tmp_path):
    copy = dataset_copy(history, tmp_path)
    manifest = copy / "dataset/manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({k: v for k, v in row.items() if k not in ("members", "provenance")}) + "\n"
                                for row in rows))
    old = workspace(copy)
    assert old.notes == [f"workspace: its manifest.jsonl has no member digests (packed before they were "
                         f"recorded); read its {len({row['shard'] for row in rows})} shards instead"]
    new = workspace(history["root"])
    assert {k: (s.provenance, s.digests) for k, s in old.samples.items()} == {
        k: (s.provenance, s.digests) for k, s in new.samples.items()}
    assert not compare(old, new)["differs"]
