"""Differential test: after every edit, an incremental `dvc repro` gives the bytes of a clean build.

A project in a folder named `dev` (as ~/dev/proj) goes through a seeded sequence of the edits
users make: recipe counts and options, a template, a photo's bytes with and without a pixel
change, a renamed photo folder, a replaced photo, a code edit, a concept added and removed.
After each, `dvc repro` builds incrementally (the item cache and DVC's own skipping at work),
and a fresh copy of the same files is built from nothing in another folder: `dataset/` must be
the same, byte for byte.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import REFERENCE_DATA, REPO, copy_files, copy_project, dataset_bytes, run_tool

SEED = 31
PROJECT_COPY = ("base", "compiler", "stages", "recipes", "templates", "photos", "dvc.yaml", "params.yaml",
                ".dvcignore", ".gitignore")
DRIVER = ("import sys; from pathlib import Path; sys.path.append({repo!r}); "
          "from tests.conftest import build_in_process; build_in_process(Path.cwd())")


def edit_recipe(root: Path, change: Callable[[dict], None]) -> None:
    path = root / "recipes/tiny.yaml"
    recipe = yaml.safe_load(path.read_text())
    change(recipe)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))


def recipe_count(root: Path) -> None:
    edit_recipe(root, lambda r: r["compositions"]["cat_mug"].update(num_images=r["compositions"]["cat_mug"]["num_images"] + 1))


def recipe_option(root: Path) -> None:
    edit_recipe(root, lambda r: r["output"].update(shard_size=3 if r["output"]["shard_size"] == 4 else 4))


def template(root: Path) -> None:
    path = root / "templates/captions/short.j2"
    path.write_text(path.read_text().rstrip("\n") + " \n")  # rendered captions collapse whitespace: same text


def template_wording(root: Path) -> None:
    path = root / "templates/captions/detailed.j2"
    path.write_text(path.read_text().replace("A photo of", "A picture of", 1))


def photo_bytes_same_pixels(root: Path) -> None:
    photo = next((root / "photos").glob("*/cat*.jpg"))
    photo.write_bytes(photo.read_bytes() + b"\0trailing bytes after the JPEG's end")


def photo_pixels(root: Path) -> None:
    photo = next((root / "photos").glob("*/cat*.jpg"))
    pixels = np.asarray(Image.open(photo)).copy()
    pixels[:8, :8] = 255  # a corner, away from the cat
    Image.fromarray(pixels).save(photo, quality=95)


def rename_folder(root: Path) -> None:
    folder = next(p for p in (root / "photos").iterdir() if p.name.startswith("cat"))
    renamed = folder.with_name("kitty" if folder.name == "cat" else "cat")
    folder.rename(renamed)
    edit_recipe(root, lambda r: r["concepts"]["cat"].update(images=[f"photos/{renamed.name}/*.jpg"]))


def replace_photo(root: Path) -> None:
    photo = next((root / "photos").glob("*/cat*.jpg"))
    shutil.copy(REFERENCE_DATA / "sources/dog/dog_06.jpg", photo)


def code(root: Path) -> None:
    module = root / "stages/backends/compose/paste.py"
    module.write_text(module.read_text() + "\nEDITED = True  # a code edit: new keys, the same pixels\n")


def add_concept(root: Path) -> None:
    def change(recipe: dict) -> None:
        recipe["concepts"]["dog"] = {"class_noun": "dog", "token": "<dog1>", "images": ["photos/dog/*.jpg"],
                                     "size": 0.5}
        recipe["compositions"]["cat_dog"] = {"concepts": ["cat", "dog"], "backgrounds": ["grass"], "num_images": 2}
    edit_recipe(root, change)


def remove_concept(root: Path) -> None:
    def change(recipe: dict) -> None:
        recipe["concepts"].pop("dog", None)
        recipe["compositions"].pop("cat_dog", None)
    edit_recipe(root, change)


EDITS = [recipe_count, recipe_option, template, template_wording, photo_bytes_same_pixels, photo_pixels,
         rename_folder, replace_photo, code]


def clean_build(root: Path, folder: Path) -> dict[str, bytes]:
    """`root`'s files (code, recipe, templates, photos) copied to `folder` and built from nothing."""
    copy_files(root, folder, PROJECT_COPY)
    result = subprocess.run([sys.executable, "-c", DRIVER.format(repo=str(REPO))], cwd=folder,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return dataset_bytes(folder)


@pytest.mark.slow
def test_incremental_builds_equal_clean_builds_after_every_edit(tmp_path):
    (tmp_path / "dev").mkdir()
    root = copy_project(tmp_path / "dev" / "proj")
    for concept, source in (("cat", "sources/cat/cat_01.jpg"), ("dog", "sources/dog/dog_05.jpg")):
        (root / "photos" / concept).mkdir(parents=True)
        shutil.copy(REFERENCE_DATA / source, root / "photos" / concept / f"{concept}_1.jpg")
    edit_recipe(root, lambda r: (r["concepts"]["cat"].update(images=["photos/cat/*.jpg"]),
                                 r["compositions"]["cat_mug"].update(num_images=3),
                                 r["compositions"]["cat_mug_plant"].update(num_images=2),
                                 r["output"].update(resolution=128, shard_size=4)))
    run_tool(root, "git", "init", "-q")
    run_tool(root, "dvc", "init", "-q")
    run_tool(root, "dvc", "config", "core.analytics", "false")

    edits = EDITS[:]
    random.Random(SEED).shuffle(edits)
    edits = [*edits[:4], add_concept, *edits[4:], remove_concept]
    run_tool(root, "dvc", "repro")
    for number, edit in enumerate([None, *edits]):
        if edit is not None:
            edit(root)
            run_tool(root, "dvc", "repro")
        name = edit.__name__ if edit else "initial"
        clean = clean_build(root, tmp_path / f"clean-{number}")
        incremental = dataset_bytes(root)
        differing = sorted(n for n in set(clean) | set(incremental) if clean.get(n) != incremental.get(n))
        assert not differing, f"after edit {number} ({name}): {differing} differ from a clean build"
