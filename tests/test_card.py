"""The dataset card (dataset/README.md's header, dataset/card.html, `g4g card`) and pack's DVC
plots, on real builds of the tiny recipe in a temporary git + DVC repository:

  a  the tiny recipe with a larger mug (every image kept; a mug of the tiny recipe's size is
     held at the solver's smallest box in every three-concept image, so no threshold on its
     area would reject some of them and keep the others)
  b  score's min_area raised, so that some images are rejected (the workspace is b too)

dvc.yaml is the project's, with what PLOTS_YAML declares for pack's plots added where it is
missing.
"""

from __future__ import annotations

import fnmatch
import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from compiler import compile as compile_stage
from compiler.cli import main
from stages import pack
from stages.card import figures, page as card_page
from stages.card.page import SHEET
from tests.conftest import THROUGHPUT_VARIABLES, build_in_process, copy_project, run_tool

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
PLOTS_YAML = """
stages:
  pack:
    deps: [stages/card]  # added to pack's deps
    outs:
      - dataset
      - reports/pack_plots  # written by pack; shown by the plots below (in DVC's cache, not git)
plots:
  - reports/pack_plots/keep_rate.csv:  # column paper_keep_rate: Gen4Gen's human rating kept 53% / 32% / 22%
      template: bar_horizontal
      x: keep_rate
      y: composition
      title: Keep rate per composition
  - caption_lengths:
      template: linear
      x: {reports/pack_plots/caption_lengths.csv: words}
      y: {reports/pack_plots/caption_lengths.csv: [short, detailed]}
      y_label: captions
      title: Caption length in words (Gen4Gen detailed captions average 17.7)
  - reports/pack_plots/contact_sheets  # each composition's first samples (those on dataset/card.html)
"""
CAPTION_PLOT = "caption_lengths"


def patch_dvc_yaml(root: Path) -> None:
    """Add what PLOTS_YAML declares and the copied dvc.yaml lacks (nothing, once the project's has it)."""
    pipeline, plots = yaml.safe_load((root / "dvc.yaml").read_text()), yaml.safe_load(PLOTS_YAML)
    stage = pipeline["stages"]["pack"]
    stage["deps"] += [dep for dep in plots["stages"]["pack"]["deps"] if dep not in stage["deps"]]
    stage["outs"] = plots["stages"]["pack"]["outs"]
    declared = {next(iter(plot)) if isinstance(plot, dict) else plot for plot in pipeline["plots"]}
    pipeline["plots"] += [plot for plot in plots["plots"]
                          if (next(iter(plot)) if isinstance(plot, dict) else plot) not in declared]
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))


def edit_recipe(root: Path, edit) -> None:
    path = root / "recipes/tiny.yaml"
    recipe = yaml.safe_load(path.read_text())
    edit(recipe)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))


def commit(root: Path, tag: str) -> None:
    run_tool(root, "git", "add", "-A")
    run_tool(root, "git", "commit", "-qm", tag, **GIT_ENV)


def samples(root: Path) -> list[dict]:
    """Every packed sample's provenance JSON, in shard order."""
    rows = []
    for shard in sorted((root / "dataset").glob("*.tar")):
        with tarfile.open(shard) as tar:
            rows += [json.load(tar.extractfile(m)) for m in tar if m.name.endswith(".json")]
    return rows


def rejected(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "dataset/rejected.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def history(tmp_path_factory, reference_data) -> Path:
    """The repository after builds a (`dvc repro`) and b (the same stages in this process, which
    is faster); two of b's images are rejected for their size."""
    root = copy_project(tmp_path_factory.mktemp("card") / "project")
    edit_recipe(root, lambda recipe: recipe["concepts"]["mug"].update(size=0.5))
    patch_dvc_yaml(root)
    (root / ".gitignore").write_text("/.g4g/\n/dvc_plots/\n")
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        run_tool(root, *command)
    run_tool(root, "dvc", "repro", "-q", "pack", G4G_CACHE_DIR=str(root / ".g4g/cache"))
    assert "up to date" in run_tool(root, "dvc", "status", "pack").stdout  # pack wrote every declared output
    commit(root, "a")
    areas = sorted(min(c["area"] for c in s["score"]["concepts"]) for s in samples(root))
    threshold = (areas[1] + areas[2]) / 2  # rejects the two images with the smallest object
    edit_recipe(root, lambda recipe: recipe.update(backends={"score": {"name": "geometric", "min_area": threshold}}))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for variable in THROUGHPUT_VARIABLES:
            patch.delenv(variable, raising=False)
        build_in_process(root)
    commit(root, "b")
    assert len(rejected(root)) == 2 and {s["composition"] for s in samples(root)} == {"cat_mug", "cat_mug_plant"}
    return root


def front_matter(root: Path) -> dict:
    text = (root / "dataset/README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


HUB_KEYS = ["license", "pretty_name", "task_categories", "size_categories", "tags", "configs", "dataset_info"]


def test_readme_header_describes_the_dataset_for_the_hub(history):
    text = (history / "dataset/README.md").read_text()
    assert len(text.split("---\n", 2)[1].splitlines()) < 60  # what the Hub reads, no per-sample lists
    header = front_matter(history)
    assert list(header) == HUB_KEYS
    assert header["license"] == "unknown" and header["pretty_name"] == "tiny"
    assert header["task_categories"] == ["text-to-image"] and header["size_categories"] == ["n<1K"]
    assert "gen4gen" in header["tags"]
    shards = json.loads((history / "dataset/sizes.json").read_text())
    configs = {c["config_name"]: sorted(fnmatch.filter(shards, c["data_files"])) for c in header["configs"]}
    assert configs.pop("all") == sorted(shards)
    assert configs == {c: sorted(s for s in shards if s.rsplit("-", 1)[0] == c) for c in ("cat_mug", "cat_mug_plant")}
    features = {info["config_name"]: {f["name"]: f["dtype"] for f in info["features"]} for info in header["dataset_info"]}
    assert features["cat_mug"] == {"__key__": "string", "__url__": "string", "detailed.txt": "string", "jpg": "image",
                                   "json": "json", "mask.png": "image", "mask.cat.png": "image",
                                   "mask.mug.png": "image", "txt": "string"}
    assert set(features["all"]) == set(features["cat_mug"]) | {"mask.plant.png"}
    assert "`card.html`" in text


def test_header_stays_short_for_many_shards_and_compositions():
    from stages.card.readme import dataset_card

    compositions = {f"c{n}-x": {"shards": [f"c{n}-x-{i:06d}.tar" for i in range(200)], "fields": {"jpg", "json"},
                                "provenance": [{"key": i, "nested": {"deep": [1, 2]}} for i in range(20000)]}
                    for n in range(3)}
    text = dataset_card({"name": "big", "key": "k", "license": "mit", "card_html": False}, compositions)
    lines = text.split("---\n", 2)[1].splitlines()
    assert len(lines) < 30 and max(map(len, lines)) < 400
    assert "size_categories: [10K<n<100K]" in lines and "- {config_name: c1-x, data_files: 'c1-x-??????.tar'}" in lines


def test_size_categories_follow_the_hub_buckets():
    from stages.card.readme import size_category

    assert [size_category(n) for n in (0, 999, 1000, 9999, 10_000, 2 * 10**9)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "n>1B"]


def test_plot_files_count_what_the_dataset_holds(history):
    kept = Counter(s["composition"] for s in samples(history))
    dropped = Counter(row["key"].rsplit("-", 1)[0] for row in rejected(history))
    rows = (history / "reports/pack_plots/keep_rate.csv").read_text().splitlines()
    assert rows[0] == "composition,concepts,images,kept,keep_rate,paper_keep_rate"
    assert rows[1:] == [f"{c},{n},{kept[c] + dropped[c]},{kept[c]},{round(kept[c] / (kept[c] + dropped[c]), 4)},0.53"
                        for c, n in (("cat_mug", 2), ("cat_mug_plant", 3))]
    lengths = [line.split(",") for line in (history / "reports/pack_plots/caption_lengths.csv").read_text().splitlines()]
    assert lengths[0] == ["words", "short", "detailed"]
    for column, kind in ((1, "short"), (2, "detailed")):
        counted = {int(row[0]): int(row[column]) for row in lengths[1:] if int(row[column])}
        assert counted == Counter(len(s["captions"][kind].split()) for s in samples(history))
    sheets = sorted(p.name for p in (history / "reports/pack_plots/contact_sheets").iterdir())
    assert sheets == [f"{c}.jpg" for c in sorted(kept)]


def plots(root: Path, *command: str) -> dict:
    """`dvc plots ... --json`: our plots' data, none of them in error (the plots of train and
    evaluate, which this build does not run, are)."""
    shown = json.loads(run_tool(root, "dvc", "plots", *command, "--json").stdout)
    ours = [e for e in shown.get("errors", []) if e["name"].startswith("reports/pack_plots") or e["name"] == CAPTION_PLOT]
    assert not ours
    return shown["data"]


def test_dvc_plots_show_and_diff(history, tmp_path):
    data = plots(history, "show", "-o", str(tmp_path / "show"))
    rates = data["reports/pack_plots/keep_rate.csv"][0]["content"]["data"]["values"]
    assert [row["composition"] for row in rates] == ["cat_mug", "cat_mug_plant"]
    assert {row["field"] for row in data[CAPTION_PLOT][0]["content"]["data"]["values"]} == {"short", "detailed"}
    images = {name for name, entries in data.items() if entries and entries[0]["type"] == "image"}
    assert images == {f"reports/pack_plots/contact_sheets/{c}.jpg" for c in ("cat_mug", "cat_mug_plant")}

    data = plots(history, "diff", "HEAD~1", "-o", str(tmp_path / "diff"))
    rates = data["reports/pack_plots/keep_rate.csv"][0]["content"]["data"]["values"]
    by_rev = {(row["rev"], row["composition"]): float(row["keep_rate"]) for row in rates}
    assert {rev for rev, _ in by_rev} == {"HEAD~1", "workspace"}
    assert all(by_rev["HEAD~1", c] == 1.0 for c in ("cat_mug", "cat_mug_plant"))
    assert sum(by_rev["workspace", c] < 1.0 for c in ("cat_mug", "cat_mug_plant")) >= 1
    sheets = data["reports/pack_plots/contact_sheets/cat_mug_plant.jpg"]
    assert sorted(entry["revisions"][0] for entry in sheets) == ["HEAD~1", "workspace"]


def test_card_is_byte_stable_and_g4g_card_rewrites_it(history, tmp_path, monkeypatch):
    """A second build of the same recipe in another folder, from an empty item cache, writes the
    same card and plot bytes; `g4g card` rewrites the same card from the dataset folder."""
    other = copy_project(tmp_path / "other")
    (other / "recipes/tiny.yaml").write_bytes((history / "recipes/tiny.yaml").read_bytes())
    monkeypatch.chdir(other)
    for variable in THROUGHPUT_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    build_in_process(other)
    card = (history / "dataset/card.html").read_bytes()
    assert (other / "dataset/card.html").read_bytes() == card
    for plot in sorted((history / "reports/pack_plots").rglob("*.*")):
        assert (other / plot.relative_to(history)).read_bytes() == plot.read_bytes(), plot.name

    assert main(["card", "--dataset", str(history / "dataset"), "-o", str(tmp_path / "again.html")]) == 0
    assert (tmp_path / "again.html").read_bytes() == card
    written = sorted(p.name for p in (history / "dataset/card").iterdir())
    assert written and sorted(p.name for p in (tmp_path / "card").iterdir()) == written
    assert all((tmp_path / "card" / name).read_bytes() == (history / "dataset/card" / name).read_bytes() for name in written)
    assert main(["card", "--dataset", str(tmp_path)]) == 2  # not a dataset: a clear error, no page

    params = yaml.safe_load((other / "params.yaml").read_text())
    (other / "params.yaml").write_text(yaml.safe_dump({**params, "overrides": ["output.card_html=false"]}))
    assert compile_stage.main(["--params", str(other / "params.yaml"), "--out", str(other / "build/compiled")]) == 0
    pack.run(other / "build/compiled/pack.json", other / "build", other / "dataset")
    assert not (other / "dataset/card.html").exists()
    assert "card.html" not in (other / "dataset/README.md").read_text()


def test_reason_kinds_group_rejections_with_one_example():
    rows = [{"key": "a-00001", "stage": "score", "reasons": ["mug: covers 0.77% of the image, below min_area 1.00%"]},
            {"key": "a-00002", "stage": "score", "reasons": ["mug: covers 0.91% of the image, below min_area 1.00%",
                                                             "cat: 52% visible, below min_visible 60%"]}]
    assert card_page.reasons(rows) == [
        {"stage": "score", "kind": "mug: covers #% of the image, below min_area #%", "images": 2,
         "example": "a-00001: mug: covers 0.77% of the image, below min_area 1.00%"},
        {"stage": "score", "kind": "cat: #% visible, below min_visible #%", "images": 1,
         "example": "a-00002: cat: 52% visible, below min_visible 60%"}]


def test_heat_maps_count_boxes_where_they_are():
    cells = figures.POSITION_CELLS
    position = figures.position_counts([[0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 0.5]])  # left half, bottom half
    assert position[: cells // 2, : cells // 2].min() == position[: cells // 2, : cells // 2].max() == 1
    assert (position[cells // 2:, : cells // 2] == 2).all() and (position[: cells // 2, cells // 2:] == 0).all()
    size = figures.size_counts([[0, 0, 0.5, 1.0], [0, 0, 0.5, 1.0], [0, 0, 0.01, 0.01]])
    bins = figures.SIZE_BINS
    assert size.sum() == 3 and size[0, bins // 2] == 2 and size[bins - 1, 0] == 1  # tall boxes at the top
    image = np.asarray(figures.colorize(size))
    assert tuple(image[0, bins // 2]) == (253, 231, 37) and tuple(image[1, 1]) == figures.EMPTY


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed (`apt-get install -y chromium`, "
                    "as .ci/run does)")
def test_card_renders_in_headless_chromium(history, tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' installs playwright"
                                          ).sync_playwright
    kept = Counter(s["composition"] for s in samples(history))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: errors.append(f"fetched {request.url}")
                    if not request.url.startswith(("file:", "data:")) else None)
            page.goto((history / "dataset/card.html").as_uri(), wait_until="load")
            widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete && i.naturalWidth)")
            assert widths and all(width > 0 for width in widths), widths
            for composition, count in kept.items():
                assert page.locator(f'.sheet[data-composition="{composition}"] figure.sample').count() == min(count, SHEET)
            assert page.locator(".sheet.rejected figure.reject").count() == 2  # b's two rejected images
            assert page.locator(".sheet.rejected .reason").first.inner_text().startswith(("cat:", "mug:", "plant:"))
            links = page.eval_on_selector_all("figure a", "anchors => anchors.map(a => a.getAttribute('href'))")
            assert links and all((history / "dataset" / link).is_file() for link in links)
            page.locator("figure.sample a").first.click()  # opens the full image, offline
            page.wait_for_load_state()
            assert page.url.endswith(links[0]) and page.evaluate("document.images[0].naturalWidth") == 256
            page.go_back()
            assert "unknown" in page.locator("p.licence").inner_text()  # the tiny recipe states no licence
            assert page.locator("img.heat").count() == 2 * len(kept)
            assert page.locator("svg").count() == 2  # caption-length histograms
            reasons = page.locator("td:has-text('below min_area')").all_inner_texts()
            assert reasons and errors == []
            page.screenshot(path=str(tmp_path / "card.png"), full_page=True)  # kept as a test artifact
        finally:
            browser.close()


def test_card_credits_the_photos_cites_gen4gen_and_states_its_limits():
    from stages.card.readme import dataset_card

    text = dataset_card({"name": "pets", "key": "k", "license": "cc-by-4.0", "card_html": False,
                         "credits": [("concept `cat`", "Ann on Unsplash")], "example": True, "repainted": False},
                        {"cat_dog": {"shards": ["cat_dog-000000.tar"], "fields": {"jpg", "txt"}, "provenance": [{}]}})
    assert "license: cc-by-4.0" in text and "![Samples of the dataset](example.jpg)" in text
    assert "## Credits\n\n- concept `cat`: Ann on Unsplash\n" in text
    assert "## Limitations" in text and "without a diffusion model repainting" in text
    assert "@inproceedings{yeh2025gen4gen," in text and "arXiv:2402.15504" in text


def test_an_unset_licence_is_warned_about_naming_the_key(project, capsys):
    from compiler import compile as compile_stage

    assert compile_stage.main(["--params", str(project / "params.yaml"), "--out", str(project / "build/compiled")]) == 0
    assert "warning: recipe 'tiny': output.license is not set" in capsys.readouterr().err


def test_the_sample_is_random_seeded_and_in_key_order():
    from stages.card.sample import pick

    keys = [f"c-{i:05d}" for i in range(100)]
    chosen = pick(reversed(keys), "recipe-key:c", 12)
    assert chosen == sorted(chosen) and len(set(chosen)) == 12 and set(chosen) <= set(keys)
    assert chosen != keys[:12]  # not the first samples
    assert pick(keys, "recipe-key:c", 12) == chosen and pick(keys, "recipe-key:d", 12) != chosen
    assert pick(keys[:5], "recipe-key:c", 12) == keys[:5]


def test_a_rejected_image_is_looked_up_by_its_key_and_only_inside_its_folder(tmp_path):
    from stages.card.sample import ComposedImages

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("3fa1.png", "3fa1.jpg", "3fa1.mask.png", "77b0.png"):
        (folder / name).write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"not an image of the dataset")
    (folder / "linked.jpg").symlink_to(tmp_path / "secret.jpg")  # as DVC's symlink cache type checks out
    os.mkfifo(folder / "pipe.jpg")
    images = ComposedImages(folder, ("jpg", "png"))
    assert images.get("3fa1") == folder / "3fa1.jpg" and images.get("77b0") == folder / "77b0.png"
    assert images.get("9e9e") is None and images.get("3fa1.mask") is None  # absent; a mask is not an image
    assert images.get("../secret") is None and images.get("") is None  # a hostile rejected.jsonl row
    assert images.get("linked") == folder / "linked.jpg" and images.get("pipe") is None  # never blocks on a pipe


def test_card_samples_open_their_full_images_and_rejected_ones_show_their_reasons(history, monkeypatch):
    """With a sheet of 2, each composition shows the 2 keys the seeded draw picks; every thumbnail
    links to card/<key>.jpg, whose bytes are the shard's (kept) or compose's (rejected)."""
    from stages.card.sample import pick

    recipe = json.loads((history / "dataset/recipe.json").read_text())
    monkeypatch.setattr(card_page, "SHEET", 2)
    summary = card_page.read_dataset(history / "dataset")
    by_composition = {}
    for s in samples(history):
        by_composition.setdefault(s["composition"], []).append(s["key"])
    for name, composition in summary["compositions"].items():
        assert [s["key"] for s in composition["sheet"]] == pick(by_composition[name], f"{recipe['key']}:{name}", 2)
    sheet = summary["compositions"]["cat_mug"]["sheet"][0]
    rows = [json.loads(line) for line in (history / "dataset/manifest.jsonl").read_text().splitlines()]
    shard = next(row["shard"] for row in rows if row["key"] == sheet["key"])
    with tarfile.open(history / "dataset" / shard) as tar:
        assert tar.extractfile(f"{sheet['key']}.jpg").read() == sheet["full"] and sheet["file"] == f"card/{sheet['key']}.jpg"
    shown = [s for c in summary["compositions"].values() for s in c["rejected_sheet"]]
    assert sorted(s["key"] for s in shown) == sorted(row["key"] for row in rejected(history))
    for entry in shown:
        assert entry["full"] == (history / "build/images" / f"{entry['key']}.jpg").read_bytes()
        assert entry["reasons"] and "below min_area" in entry["reasons"][0]
    html = (history / "dataset/card.html").read_text()
    assert all(f'<a href="card/{s["key"]}.jpg">' in html for s in shown)


def test_card_counts_images_per_background(history):
    summary = card_page.read_dataset(history / "dataset")
    counts = summary["backgrounds"]
    judged = Counter(s["background"]["id"] for s in samples(history)) + Counter(r["background"] for r in rejected(history))
    assert counts == {name: {"images": judged[name], "kept": Counter(s["background"]["id"] for s in samples(history))[name]}
                      for name in judged}
    assert sum(b["images"] for b in counts.values()) == 10  # every planned image of the tiny recipe was judged
    html = (history / "dataset/card.html").read_text()
    assert '<table class="backgrounds">' in html and all(f"<td>{name}</td>" in html for name in counts)


@pytest.mark.parametrize(("sources", "chosen", "expected"), [
    (["unsplash", "unsplash"], "unknown",
     {"license": "other", "license_name": "unsplash", "license_link": "https://unsplash.com/license"}),
    (["cc-by-4.0", "cc-by-4.0"], "unknown", {"license": "cc-by-4.0"}),
    (["cc-by-4.0", "unsplash"], "unknown", {"license": "other", "license_name": "cc-by-4.0 + unsplash"}),
    (["unsplash", ""], "unknown", {"license": "unknown"}),
    (["unsplash", ""], "cc0-1.0", {"license": "cc0-1.0"}),  # the builder's own decision
])
def test_the_licence_follows_the_photos_unless_the_recipe_sets_it(sources, chosen, expected):
    from stages.card.readme import dataset_card, dataset_license

    recipe = {"concepts": {"cat": {"license": sources[0]}}, "backgrounds": {"park": {"license": sources[1]}},
              "output": {"license": chosen}}
    licence = dataset_license(recipe)
    assert {k: v for k, v in licence.items() if k != "sources"} == expected
    assert licence["sources"] == [("concept `cat`", sources[0]), ("background `park`", sources[1])]
    text = dataset_card({"name": "pets", "key": "k", "card_html": False, **licence},
                        {"c": {"shards": ["c-000000.tar"], "fields": {"jpg"}, "provenance": [{}]}})
    header = yaml.safe_load(text.split("---\n", 2)[1])
    assert {k: header[k] for k in expected} == expected
    assert "## Licence" in text and f"- concept `cat`: {sources[0] or 'not stated'}" in text


def test_the_demo_s_card_says_its_images_derive_from_unsplash_photos(project):
    from compiler.compile import compile_recipe
    from stages.card.readme import dataset_license

    licence = dataset_license(compile_recipe(project, "demo", [])["pack"]["recipe"])
    assert licence["license"] == "other" and licence["license_name"] == "unsplash"
    assert {name for _, name in licence["sources"]} == {"unsplash"}


def test_pack_writes_the_card_without_opening_a_shard_it_knows(project, monkeypatch):
    """Pack keeps each shard's contents in its records and takes the thumbnails from the composed
    images (verified against compose's records, the bytes the shards hold): a rebuild writes the
    same card and opens no shard for it."""
    build_in_process(project)
    before = (project / "dataset/card.html").read_bytes()
    assert b"<figure class=\"sample\">" in before  # the card shows thumbnails

    def refuse(path):
        raise AssertionError(f"the card opened {path}")

    monkeypatch.setattr(card_page, "open_regular", refuse)
    (project / "dataset/card.html").unlink()
    build_in_process(project)
    assert (project / "dataset/card.html").read_bytes() == before
