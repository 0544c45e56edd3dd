"""A file saved while a build runs is never built under the key of its old bytes.

`compile` hashes photos and templates into the item keys; the stages read them later. Each
edit below lands between the two (as a save during `dvc repro` would): the stage must fail
the items that read it, commit nothing under their keys, and exit non-zero so that DVC
records nothing; the next build then gives a clean build's bytes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from base.compiled import read_compiled
from base.files import read_json
from base.keys import content_key
from compiler import compile as compile_stage
from stages import caption, compose, extract, plan
from stages.runtime.cache import ItemCache
from stages.runtime.runner import StageFailed
from tests.conftest import REFERENCE_DATA, build_in_process, copy_project, dataset_bytes

CAT = REFERENCE_DATA / "sources/cat/cat_01.jpg"
OTHER_CAT = REFERENCE_DATA / "sources/dog/dog_05.jpg"
GARDEN = REFERENCE_DATA / "backgrounds/garden/garden1.jpg"
CHANGED = "changed during the build"


@pytest.fixture
def local_project(project):
    """The tiny project with its cat photo and garden background as files of the project."""
    (project / "photos").mkdir()
    shutil.copy(CAT, project / "photos/cat.jpg")
    shutil.copy(GARDEN, project / "photos/garden.jpg")
    path = project / "recipes/tiny.yaml"
    recipe = yaml.safe_load(path.read_text())
    recipe["concepts"]["cat"]["images"] = ["photos/cat.jpg"]
    recipe["backgrounds"]["garden"]["images"] = ["photos/garden.jpg"]
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return project


def compile_project(root: Path) -> None:
    assert compile_stage.main(["--params", str(root / "params.yaml"), "--out", str(root / "build/compiled")]) == 0


def cached_keys(root: Path, stage: str) -> set[str]:
    """The item keys of `stage` whose entry the cache holds."""
    document = read_compiled(root / f"build/compiled/{stage}.json")
    cache = ItemCache(root / ".g4g/cache", stage)
    return {item["id"] for item in document["items"] if cache.has(content_key(stage, item["parts"]))}


def clean_build_bytes(root: Path, tmp_path: Path) -> dict[str, bytes]:
    """The dataset a fresh copy of `root`'s recipe and photos builds."""
    clean = copy_project(tmp_path / "clean")
    shutil.copytree(root / "photos", clean / "photos")
    shutil.copy(root / "recipes/tiny.yaml", clean / "recipes/tiny.yaml")
    build_in_process(clean)
    return dataset_bytes(clean)


def test_a_photo_saved_during_extract_is_not_cut_out_under_its_old_key(local_project, tmp_path):
    root = local_project
    compile_project(root)
    original = (root / "photos/cat.jpg").read_bytes()
    shutil.copy(OTHER_CAT, root / "photos/cat.jpg")  # saved after compile hashed it
    build = root / "build"
    with pytest.raises(StageFailed, match="changed during the build"):
        extract.run(build / "compiled/extract.json", build / "cutouts", build / "cutouts.json")
    index = read_json(build / "cutouts.json")
    assert [f["id"] for f in index["failed"]] == ["cat/cat"] and CHANGED in index["failed"][0]["reason"]
    assert "cat/cat" not in cached_keys(root, "extract") and len(cached_keys(root, "extract")) == 3

    (root / "photos/cat.jpg").write_bytes(original)  # restored: the next build is the clean one
    build_in_process(root)
    assert dataset_bytes(root) == clean_build_bytes(root, tmp_path)


def test_a_background_or_cut_out_saved_during_compose_fails_its_images_only(local_project, tmp_path):
    root = local_project
    compile_project(root)
    build = root / "build"
    extract.run(build / "compiled/extract.json", build / "cutouts", build / "cutouts.json")
    plan.run(build / "compiled/plan.json", build / "cutouts.json", build / "layouts.json")
    layouts = read_json(build / "layouts.json")["layouts"]
    on_garden = {layout["id"] for layout in layouts if layout["background"]["id"] == "garden"}
    with_mug = {layout["id"] for layout in layouts if any(o["concept"] == "mug" for o in layout["objects"])}
    assert on_garden and with_mug
    original = (root / "photos/garden.jpg").read_bytes()
    (root / "photos/garden.jpg").write_bytes(original + b"\0")  # same pixels, other bytes: another key
    mug = next(build.glob("cutouts/mug/*.png"))
    mug.write_bytes(mug.read_bytes() + b"\0")  # a cut-out edited by hand between extract and compose

    with pytest.raises(StageFailed, match="changed during the build"):
        compose.run(build / "compiled/compose.json", build / "layouts.json", build / "cutouts", build / "images",
                    build / "images.json")
    index = read_json(build / "images.json")
    assert {f["id"] for f in index["failed"]} == on_garden | with_mug
    assert all(CHANGED in f["reason"] for f in index["failed"])
    assert cached_keys(root, "compose").isdisjoint(on_garden | with_mug)

    (root / "photos/garden.jpg").write_bytes(original)
    shutil.rmtree(build / "cutouts")  # as DVC would check it out again
    build_in_process(root)
    assert dataset_bytes(root) == clean_build_bytes(root, tmp_path)


def test_a_template_saved_during_caption_stops_the_stage(project):
    compile_project(project)
    build = project / "build"
    extract.run(build / "compiled/extract.json", build / "cutouts", build / "cutouts.json")
    plan.run(build / "compiled/plan.json", build / "cutouts.json", build / "layouts.json")
    template = project / "templates/captions/short.j2"
    template.write_text(template.read_text().replace("in", "inside", 1))
    with pytest.raises(Exception, match="changed during the build") as failure:
        caption.run(build / "compiled/caption.json", build / "layouts.json", project / "templates",
                    build / "captions.json")
    assert "rerun `dvc repro`" in str(failure.value)
    assert not cached_keys(project, "caption")
