"""The dataset loads where users load datasets: webdataset, Hugging Face `datasets` (per
composition and whole), open_clip's webdataset pipeline, diffusers' loading call, Parquet; and
the documented loading snippets (docs/pipeline.md) run as written."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from base import files
from base.errors import RecipeError
from compiler.compile import compile_recipe
from stages.manifest import dataset_wide
from stages.pack import portable_source
from stages.shard_layout import chunks, shard_name
from tests.conftest import REPO, THROUGHPUT_VARIABLES, TINY_RECIPE, build_in_process, copy_project, write_recipe

datasets = pytest.importorskip("datasets", reason="`pip install -e '.[dev]'` installs datasets")


def built_project(root: Path, params: dict) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(copy_project(root, **params))
        for variable in THROUGHPUT_VARIABLES:
            patch.delenv(variable, raising=False)
        build_in_process(root)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny recipe built once: cat_mug (6 images, shard_size 4) and cat_mug_plant (4)."""
    return built_project(tmp_path_factory.mktemp("loaders") / "project", {"recipe": "tiny"})


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """Keep `datasets`' Arrow cache in the test's folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def manifest(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "dataset/manifest.jsonl").read_text().splitlines()]


def composition_concepts(root: Path) -> dict[str, set[str]]:
    return {row["composition"]: set(row["concepts"]) for row in manifest(root)}


def sample_json(root: Path) -> list[dict]:
    rows = []
    for shard in sorted((root / "dataset").glob("*.tar")):
        with tarfile.open(shard) as tar:
            rows += [json.load(tar.extractfile(m)) for m in tar if m.name.endswith(".json")]
    return rows


def test_each_composition_loads_with_every_column(tiny):
    counts = Counter(row["composition"] for row in manifest(tiny))
    assert set(counts) == {"cat_mug", "cat_mug_plant"}
    for composition, concepts in composition_concepts(tiny).items():
        table = datasets.load_dataset(str(tiny / "dataset"), composition, split="train")
        masks = {f"mask.{concept}.png" for concept in concepts}
        common = {"__key__", "__url__", "jpg", "mask.png", "txt", "detailed.txt", "json"}
        assert set(table.column_names) == common | masks
        assert table.num_rows == counts[composition]
        for row in table:
            assert all(row[mask].mode == "L" and row[mask].size == (256, 256) for mask in masks | {"mask.png"})
            assert {c["id"] for c in row["json"]["score"]["concepts"]} == concepts == {
                c["id"] for c in row["json"]["concepts"]}
            assert row["txt"] == row["json"]["captions"]["short"]


def test_the_whole_directory_loads_and_writes_parquet(tiny, tmp_path):
    rows = manifest(tiny)
    table = datasets.load_dataset(str(tiny / "dataset"), split="train")
    assert table.num_rows == len(rows) and sorted(table["__key__"]) == sorted(r["key"] for r in rows)
    plants = {row["__key__"]: row["mask.plant.png"] for row in table}
    assert all((plants[r["key"]] is None) == ("plant" not in r["concepts"]) for r in rows)
    table.to_parquet(tmp_path / "all.parquet")
    assert pq.read_table(tmp_path / "all.parquet").num_rows == len(rows)


def test_diffusers_loading_call_finds_the_image_and_caption_columns(tiny):
    """What train_text_to_image does with --dataset_name dataset --dataset_config_name cat_mug."""
    dataset = datasets.load_dataset(str(tiny / "dataset"), "cat_mug", cache_dir=None, data_dir=None)
    train = dataset["train"]
    assert {"jpg", "txt"} <= set(train.column_names)
    assert train[0]["jpg"].convert("RGB").size == (256, 256) and "<cat1>" in train[0]["txt"]


def test_open_clip_pipeline_reads_every_sample_once_per_epoch_with_a_worker_per_shard(tiny):
    """open_clip_train's get_wds_dataset without resampling, workers == shards."""
    shards = sorted(str(p) for p in (tiny / "dataset").glob("cat_mug-*.tar"))
    assert len(shards) >= 2
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(shards), wds.split_by_node, wds.split_by_worker, wds.tarfile_to_samples(),
        wds.select(lambda s: "txt" in s and any(k in s for k in ("png", "jpg", "jpeg", "webp"))),
        wds.decode("pilrgb"), wds.rename(image="jpg;png;jpeg;webp", text="txt", key="__key__"),
        wds.to_tuple("key", "image", "text"),
    )
    loader = wds.WebLoader(pipeline, batch_size=None, shuffle=False, num_workers=len(shards))
    for _ in range(2):
        keys = Counter(key for key, image, text in loader)
        assert keys == Counter(r["key"] for r in manifest(tiny) if r["composition"] == "cat_mug")


def test_shards_follow_the_keys_and_are_named_by_their_first_sample(tiny):
    sizes = json.loads((tiny / "dataset/sizes.json").read_text())
    expected = {}
    for composition in ("cat_mug", "cat_mug_plant"):
        keys = sorted(r["key"] for r in manifest(tiny) if r["composition"] == composition)
        for shard in chunks(keys, 4, key=lambda k: k):
            expected[shard_name(composition, int(shard[0].rsplit("-", 1)[1]))] = len(shard)
    assert sizes == expected and sorted(sizes) == sorted(p.name for p in (tiny / "dataset").glob("*-??????.tar"))
    assert all(row["shard"] in sizes and row["shard"].startswith(f"{row['composition']}-") for row in manifest(tiny))


def test_the_manifest_loads_as_a_table_and_matches_the_shards(tiny):
    """manifest.jsonl: one flat-ish row per sample, for pandas and `datasets`; its member
    digests and provenance are the shards' (`g4g diff` reads it instead of them)."""
    pandas = pytest.importorskip("pandas")
    rows = manifest(tiny)
    table = datasets.load_dataset("json", data_files=str(tiny / "dataset/manifest.jsonl"), split="train")
    assert table.num_rows == len(rows) == len(pandas.read_json(tiny / "dataset/manifest.jsonl", lines=True))
    assert {"key", "shard", "composition", "concepts", "caption", "members", "provenance"} <= set(table.column_names)
    recipe = json.loads((tiny / "dataset/recipe.json").read_text())
    by_key = {record["key"]: record for record in sample_json(tiny)}
    for row in rows:
        assert {**row["provenance"], **dataset_wide(recipe)} == by_key[row["key"]]
        with tarfile.open(tiny / "dataset" / row["shard"]) as tar:
            found = {m.name.split(".", 1)[1]: hashlib.sha256(tar.extractfile(m).read()).hexdigest()
                     for m in tar if m.name.startswith(row["key"] + ".")}
        assert {m["name"]: m["sha256"] for m in row["members"]} == found


def test_no_machine_path_and_no_empty_struct_in_any_sample(tiny):
    def walk(value, path=""):
        if isinstance(value, dict):
            assert value, f"empty object at {path}"
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")
        elif isinstance(value, str):
            assert not value.startswith("/") and str(REPO.parent) not in value, f"{path}: {value}"

    rows = sample_json(tiny)
    for row in rows:
        walk(row)
    sources = {c["cutout"]["source"] for row in rows for c in row["concepts"]}
    assert {"pkg:skimage/data/chelsea.png", "pkg:skimage/data/coffee.png"} <= sources <= {
        "pkg:skimage/data/chelsea.png", "pkg:skimage/data/coffee.png", "houseplant_01.png", "houseplant_02.png"}
    assert {row["background"]["source"] for row in rows} <= {"garden1.jpg", "pkg:skimage/data/grass.png"}


def test_portable_source_keeps_project_paths_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_source(str(tmp_path / "photos/cat.jpg")) == "photos/cat.jpg"
    assert portable_source("photos/cat.jpg") == "photos/cat.jpg"
    assert portable_source("/elsewhere/me/cat.jpg") == "cat.jpg"
    assert portable_source("pkg:skimage/data/chelsea.png") == "pkg:skimage/data/chelsea.png"


@pytest.mark.parametrize("ident", ["Cat", "cat\n", "_cat"])
def test_a_concept_id_that_is_not_lowercase_is_a_schema_error(project, ident):
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["concepts"][ident] = recipe["concepts"].pop("cat")
    for composition in recipe["compositions"].values():
        composition["concepts"] = [ident if c == "cat" else c for c in composition["concepts"]]
    write_recipe(project, recipe)
    with pytest.raises(RecipeError, match=r"(?s)tiny\.yaml: concepts\..*: ids use letters a-z, digits.*no capitals"):
        compile_recipe(project, "tiny", [])


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_replace_dir_swaps_the_whole_directory(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(files, "_exchange", lambda first, second: False)
    target, staging = tmp_path / "dataset", tmp_path / ".dataset.partial"
    (target / "old").mkdir(parents=True)
    (target / "old.tar").write_bytes(b"old")
    staging.mkdir()
    (staging / "new.tar").write_bytes(b"new")
    files.replace_dir(staging, target)
    assert sorted(p.name for p in target.iterdir()) == ["new.tar"] and (target / "new.tar").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_the_readme_loading_snippets_run_on_the_demo(tmp_path, monkeypatch):
    """Every Python block of docs/pipeline.md's "The dataset" section, as written, on a small demo build."""
    sizes = {"cat_dog": 6, "cat_houseplant": 2, "dog_houseplant": 2, "cat_dog_houseplant": 2}
    overrides = [f"compositions.{c}.num_images={n}" for c, n in sizes.items()] + ["output.resolution=256"]
    root = built_project(tmp_path / "project", {"recipe": "demo", "overrides": overrides})
    section = REPO.joinpath("docs/pipeline.md").read_text().split("## The dataset\n", 1)[1].split("\n## ", 1)[0]
    snippets = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(snippets) == 2
    monkeypatch.chdir(root)
    for snippet in snippets:
        scope: dict = {}
        exec(compile(snippet, "docs/pipeline.md", "exec"), scope)
    assert scope["cat_dog"].num_rows == sum(1 for r in manifest(root) if r["composition"] == "cat_dog") > 0
    assert (root / "demo.parquet").is_file()


def test_a_composition_named_like_the_whole_dataset_config_is_refused(project):
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["compositions"]["all"] = recipe["compositions"].pop("cat_mug")
    write_recipe(project, recipe)
    with pytest.raises(RecipeError, match=r"compositions\.all: 'all' names the whole dataset"):
        compile_recipe(project, "tiny", [])
