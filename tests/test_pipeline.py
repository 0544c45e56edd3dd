"""The whole pipeline on the tiny recipe, in process: outputs, provenance, determinism, bad input."""

from __future__ import annotations

import copy
import json

import pytest
import webdataset as wds
import yaml

from stages.templating import TemplateInvalid
from tests.conftest import TINY_RECIPE, build_in_process, dataset_bytes, model_libraries_imported, write_recipe


def test_build_produces_a_webdataset_with_provenance(project):
    reports = build_in_process(project)
    for stage in ("extract", "plan", "compose", "caption", "score", "pack"):
        assert {"items", "computed", "reused", "failed", "seconds"} <= set(reports[stage])
    assert reports["extract"]["computed"] == 4 and reports["compose"]["computed"] == 10
    sizes = json.loads((project / "dataset/sizes.json").read_text())
    manifest = (project / "dataset/manifest.jsonl").read_text().splitlines()
    assert sum(sizes.values()) == len(manifest) == reports["pack"]["packed"]
    assert reports["pack"]["packed"] + reports["pack"]["rejected"] == 10

    urls = [str(project / "dataset" / name) for name in sorted(sizes)]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert len(samples) == len(manifest)
    sample = samples[0]
    assert "." not in sample["__key__"]
    assert sample["jpg"].size == (256, 256) and sample["mask.png"].size == (256, 256)
    meta = sample["json"]
    assert sample["txt"] == meta["captions"]["short"] and sample["txt"].endswith(("in the garden", "on the grass"))
    for concept in meta["concepts"]:
        assert f"mask.{concept['id']}.png" in sample
        assert concept["token"] in sample["txt"]
        assert len(concept["cutout"]["sha256"]) == 64 and len(concept["box"]) == 4
    assert meta["recipe"]["name"] == "tiny" and meta["backends"]["extract"]["name"] == "u2netp"
    assert set(meta["item_keys"]) == {"plan", "compose", "caption", "score"}
    assert meta["score"]["keep"] is True


def test_same_recipe_gives_the_same_bytes_whatever_the_throughput_settings(project, tmp_path, monkeypatch):
    build_in_process(project)
    first = dataset_bytes(project)
    monkeypatch.setenv("G4G_CACHE_DIR", str(tmp_path / "other-cache"))
    monkeypatch.setenv("G4G_WORKERS", "2")
    monkeypatch.setenv("G4G_BATCH_SIZE", "3")
    reports = build_in_process(project)
    assert reports["compose"]["computed"] == 10  # a cold cache: everything really recomputed
    assert dataset_bytes(project) == first


def test_second_build_reuses_every_item(project):
    build_in_process(project)
    reports = build_in_process(project)
    for stage in ("extract", "plan", "compose", "caption", "score"):
        assert reports[stage]["computed"] == 0 and reports[stage]["reused"] == reports[stage]["items"]


def test_bad_photos_are_reported_and_the_build_goes_on(project):
    photos = project / "photos"
    photos.mkdir()
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    from PIL import Image

    Image.new("RGB", (64, 64), (90, 90, 90)).save(photos / "blank.png")
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["concepts"]["mug"]["images"] += ["photos/*.*"]
    recipe["concepts"]["ghost"] = {"class_noun": "ghost", "token": "<ghost1>", "images": ["photos/blank.png"]}
    recipe["compositions"]["ghost_cat"] = {"concepts": ["ghost", "cat"], "backgrounds": ["grass"], "num_images": 2}
    write_recipe(project, recipe)
    reports = build_in_process(project)
    failures = reports["extract"]["failures"]
    assert "photos/broken.jpg: not a readable image" in failures["mug/broken"]
    assert "no salient object found" in failures["mug/blank"]
    assert reports["plan"]["skipped"] == 2
    assert "no usable cut-out of ghost" in reports["plan"]["skipped_items"]["ghost_cat-00000"]
    rejected = [json.loads(line) for line in (project / "dataset/rejected.jsonl").read_text().splitlines()]
    assert {r["key"] for r in rejected if r["stage"] == "plan"} == {"ghost_cat-00000", "ghost_cat-00001"}
    assert reports["pack"]["packed"] > 0


def test_unplaceable_composition_is_reported_per_item(project):
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["backends"] = {"plan": {"name": "solver", "coverage": [0.95, 0.99], "max_overlap": 0.0, "attempts": 3}}
    write_recipe(project, recipe)
    reports = build_in_process(project)
    assert reports["plan"]["failed"] == 10
    assert "cannot place 3 concepts (cat, mug, plant)" in reports["plan"]["failures"]["cat_mug_plant-00000"]
    assert reports["pack"]["packed"] == 0 and reports["pack"]["rejected"] == 10


def test_template_with_an_undefined_variable_stops_the_caption_stage(project):
    (project / "templates/captions/short.j2").write_text("{{ concepts | length }} things {{ backdrop }}")
    with pytest.raises(TemplateInvalid, match=r"captions/short\.j2, line 1: UndefinedError: 'backdrop' is undefined"):
        build_in_process(project)


def test_the_demo_recipe_builds(project):
    """The shipped demo, shrunk by Hydra overrides: every concept cuts out, every image stands on
    its scene template, and the filter keeps some of every composition's images."""
    compositions = ("cat_dog", "cat_houseplant", "dog_houseplant", "cat_dog_houseplant")
    overrides = [f"compositions.{c}.num_images=4" for c in compositions]
    (project / "params.yaml").write_text(yaml.safe_dump(
        {"recipe": "demo", "overrides": overrides + ["output.resolution=256"], "runtime": {"workers": 1}}))
    reports = build_in_process(project)
    assert reports["extract"]["computed"] == 7 and reports["extract"]["failed"] == 0
    assert reports["compose"]["computed"] == 16 and reports["plan"]["failed"] == 0
    assert not {"floating", "scale", "blocked"} & set(reports["score"]["rejections_by_check"])
    shards = json.loads((project / "dataset/sizes.json").read_text())
    assert {name.rsplit("-", 1)[0] for name in shards} == set(compositions)


@pytest.mark.parametrize("image_format", ["png", "webp"])
def test_other_image_formats_are_packed_under_their_extension(project, image_format):
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["output"]["image_format"] = image_format
    recipe["compositions"] = {"cat_mug": {**recipe["compositions"]["cat_mug"], "num_images": 2}}
    write_recipe(project, recipe)
    build_in_process(project)
    shard = sorted((project / "dataset").glob("*.tar"))[0]
    sample = next(iter(wds.WebDataset(str(shard), shardshuffle=False).decode("pil")))
    assert image_format in sample and "jpg" not in sample and sample[image_format].size == (256, 256)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("G4G_WORKERS", "two", r"runtime\.workers \(or G4G_WORKERS\): 'two' is not a whole number"),
    ("G4G_CPU_OFFLOAD", "maybe", r"runtime\.cpu_offload .*'maybe' is not a boolean"),
    ("G4G_PRECISION", "fp8", r"runtime\.precision 'fp8'; valid: auto, fp32, fp16, bf16"),
])
def test_bad_runtime_settings_name_the_setting_and_valid_values(project, monkeypatch, variable, value, message):
    from base.settings import SettingsError, load_settings

    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message):
        load_settings(project / "params.yaml")


def test_a_stage_with_nothing_to_compute_imports_no_model_library(project):
    """Each stage's process, as dvc.yaml runs it, after a build: every item is reused, so the
    backends' libraries (torch, rembg and its numba, onnxruntime, ...) are never imported."""
    build_in_process(project)
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    for name in ("extract", "plan", "compose", "caption", "score", "pack"):
        _python, _m, module, *args = stages[name]["cmd"].split()
        code = f"import runpy; sys.argv = ['{module}', *{args!r}]; runpy.run_module('{module}', run_name='__main__')"
        assert model_libraries_imported(project, code) == [], name
