"""SDXL inpainting composer on tiny random SDXL-architecture pipelines built in code (64x64,
4 steps): the real stage code end to end, paste-back, batch invariance, missing weights."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from compiler.errors import RecipeError
from stages.backends.compose.sdxl_inpaint import Backend, Params, repaint_mask
from stages.metrics.models import ModelMissing
from tests.conftest import REPO, TINY_RECIPE, build_in_process, write_recipe
from tests.test_recipe import compile_tiny
from tests.tiny_models import save_tiny_sdxl


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory):
    paths = save_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))
    return {"model": str(paths["inpaint"]), "refiner": str(paths["refiner"]), "background_model": str(paths["base"]),
            "steps": 4}


def composer(tiny_sdxl, **options) -> Backend:
    return Backend(Params(**{**tiny_sdxl, **options}), templates_dir=str(REPO / "templates"), device="cpu")


def job(seed: int, background=True) -> dict:
    rng = np.random.default_rng(seed)
    photo = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) if background else None
    cutout = Image.new("RGBA", (20, 30), (250, 20, 20, 255))
    return {"boxes": [[5, 20, 20, 30], [30, 10, 24, 36]], "cutouts": [cutout, cutout.resize((24, 36))],
            "background": photo, "phrase": "in the garden", "seed": seed, "canvas": [64, 64]}


def test_repaint_produces_canvas_sized_images_and_pastes_the_concepts_back(tiny_sdxl):
    backend = composer(tiny_sdxl, keep_unpasted=True)
    result, = backend.compose_batch([job(1)])
    assert result["image"].size == (64, 64) and result["unpasted"].size == (64, 64)
    blurred = job(1)["background"].filter(ImageFilter.GaussianBlur(1.0))
    pasted = backend.paste.compose(job(1)["boxes"], job(1)["cutouts"], blurred)
    solid = np.asarray(result["mask"]) == 255
    assert solid.sum() > 100
    final, original = np.asarray(result["image"]), np.asarray(pasted["image"])
    assert (final[solid] == original[solid]).all()  # cut-out pixels exactly where the mask is 1
    assert not (np.asarray(result["unpasted"])[solid] == original[solid]).all()  # repainting did touch them
    assert not (final[~solid] == original[~solid]).all()  # the background was repainted


def test_the_same_item_gives_the_same_pixels_in_any_batch(tiny_sdxl):
    backend = composer(tiny_sdxl)
    alone = np.asarray(backend.compose_batch([job(7)])[0]["image"]).astype(int)
    batch = [np.asarray(r["image"]).astype(int) for r in backend.compose_batch([job(3), job(7), job(5)])]
    difference = np.abs(alone - batch[1])
    # Per-item generators: the same noise in any batch. Batched float kernels reduce in another
    # order, which can move a value across a rounding boundary: at most one level, very rarely.
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
    assert np.abs(alone - batch[0]).mean() > 10  # another item (seed) really is another image


def test_background_without_photo_is_generated_from_its_phrase(tiny_sdxl):
    result, = composer(tiny_sdxl, refiner="").compose_batch([job(2, background=False)])
    assert result["image"].size == (64, 64)


def test_repaint_mask_is_inverted_stretched_and_blurred():
    union = Image.new("L", (20, 20), 0)
    union.paste(200, (5, 5, 15, 15))
    mask = np.asarray(repaint_mask(union, 5))
    assert mask[10, 10] == 0 and mask[0, 0] == 255 and 0 < mask[10, 5] < 255


def test_missing_model_directory_says_what_to_download(tiny_sdxl, tmp_path):
    backend = composer({**tiny_sdxl, "model": str(tmp_path / "nothing-here")})
    with pytest.raises(ModelMissing, match=r"backends.compose.model: .*huggingface-cli download"):
        backend.compose_batch([job(1)])
    with pytest.raises(ModelMissing, match=r"huggingface-cli download diffusers/stable-diffusion-xl-1.0-inpainting-0.1"):
        Backend(Params(), templates_dir=str(REPO / "templates"), device="cpu").pipeline("inpaint")


def sdxl_recipe(tiny_sdxl, **options) -> dict:
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["output"]["resolution"] = 64
    recipe["compositions"]["cat_mug"]["num_images"] = 3
    recipe["compositions"]["cat_mug_plant"]["num_images"] = 2
    recipe["backends"] = {"compose": {"name": "sdxl-inpaint", **tiny_sdxl, **options},
                          "score": {"name": "geometric", "min_visible": 0.0, "min_area": 0.0}}
    return recipe


def test_compose_stage_with_sdxl_inpaint_end_to_end(project, tiny_sdxl):
    recipe = sdxl_recipe(tiny_sdxl, keep_unpasted=True)
    recipe["backgrounds"]["dusk"] = {"phrase": "on a beach at dusk"}  # no photo: generated
    recipe["compositions"]["cat_mug"]["backgrounds"] = ["dusk"]
    write_recipe(project, recipe)
    reports = build_in_process(project)
    assert reports["compose"]["computed"] == 5 and reports["compose"]["failed"] == 0
    images = json.loads((project / "build/images.json").read_text())["images"]
    dusk = [i for i in images if i["id"].startswith("cat_mug-")]
    assert dusk and all(i["background"]["generated"] for i in dusk)
    for image in images:
        assert Image.open(project / "build/images" / image["image"]).size == (64, 64)
        assert (project / "build/images" / image["unpasted"]).is_file()
    assert reports["pack"]["packed"] == 5


def test_background_without_photos_needs_a_generating_composer(project):
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["backgrounds"]["dusk"] = {"phrase": "on a beach at dusk"}
    with pytest.raises(RecipeError, match=r"backgrounds\.dusk\.images: .*sdxl-inpaint"):
        compile_tiny(project, recipe)
