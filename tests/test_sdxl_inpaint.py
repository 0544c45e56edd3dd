"""SDXL inpainting composer on tiny random SDXL-architecture pipelines built in code (64x64,
4 steps): the real stage code end to end, paste-back, batch invariance, missing weights, and
fidelity to Gen4Gen's s3_background_repainting.py (mask, refiner flow, negative prompt)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image, ImageDraw, ImageFilter

from base.errors import RecipeError
from base.keys import item_seed
from stages.backends.compose.sdxl_inpaint import PAPER_NEGATIVE_PROMPT, Backend, Params, repaint_mask
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
    # order, which can move a value across a rounding boundary: at most one level, on a few values
    # (measured: 16 of 12,288 on the tiny model).
    assert difference.max() <= 1 and (difference > 0).mean() < 5e-3
    assert np.abs(alone - batch[0]).mean() > 10  # another item (seed) really is another image


def test_background_without_photo_is_generated_from_its_phrase(tiny_sdxl):
    result, = composer(tiny_sdxl, refiner="").compose_batch([job(2, background=False)])
    assert result["image"].size == (64, 64)


PAPER_NEGATIVE_PROMPT_LIST = (  # Gen4Gen's s3_background_repainting.py, NEG_PROMPT
    "semi-realistic, cgi, 3d, render, sketch, cartoon, drawing, anime, text, close up, cropped, out of frame, "
    "worst quality, low quality, jpeg artifacts, ugly, duplicate, morbid, mutilated, extra fingers, mutated hands, "
    "poorly drawn hands, poorly drawn face, mutation, deformed, blurry, dehydrated, bad anatomy, bad proportions, "
    "extra limbs, cloned face, disfigured, gross proportions, malformed limbs, missing arms, missing legs, "
    "extra arms, extra legs, fused fingers, too many fingers, long neck, mixture")


def paper_repaint_mask(union: Image.Image, blur_size: int) -> np.ndarray:
    """Gen4Gen's mask, ported: RGB mask, PIL BoxBlur(blur_size), skimage's
    rescale_intensity(in_range=(127.5, 255), out_range=(0, 255)) in numpy, np.uint8, inverted."""
    blurred = np.asarray(union.convert("RGB").filter(ImageFilter.BoxBlur(blur_size)), dtype=np.float64)[..., 0]
    stretched = (np.clip(blurred, 127.5, 255) - 127.5) / (255 - 127.5) * 255
    return 255 - np.uint8(stretched)


def disk(size: int = 64, radius: int = 20) -> Image.Image:
    union = Image.new("L", (size, size), 0)
    centre = size // 2
    ImageDraw.Draw(union).ellipse((centre - radius, centre - radius, centre + radius, centre + radius), fill=255)
    return union


@pytest.mark.parametrize("radius", [5, 2])
def test_repaint_mask_is_the_papers_stretched_mask_and_repaints_a_band_inside_the_edge(radius):
    union = disk()
    mask = repaint_mask(union, radius)
    assert (np.asarray(mask) == paper_repaint_mask(union, radius)).all()
    # The inpainting pipeline binarises its mask at 0.5: count the object pixels it repaints.
    binarise = VaeImageProcessor(do_normalize=False, do_binarize=True, do_convert_grayscale=True)
    repainted = binarise.preprocess(mask).numpy()[0, 0] == 1
    inside = np.asarray(union) == 255
    rim = inside & (np.asarray(union.filter(ImageFilter.MinFilter(3))) < 255)
    assert repainted[~inside].all() and repainted[rim].sum() == {5: 160, 2: 136}[radius]  # of 160 edge pixels
    assert (repainted & inside).sum() == {5: 332, 2: 136}[radius]  # a min-max stretch repaints 40 and 0


def test_paste_back_is_a_single_alpha_blend_over_the_repainted_image(tiny_sdxl):
    result, = composer(tiny_sdxl, keep_unpasted=True).compose_batch([job(1)])
    alpha = np.asarray(result["mask"], dtype=np.float64)[..., None] / 255  # the boxes do not overlap
    red = np.array([250, 20, 20], dtype=np.float64)
    expected = alpha * red + (1 - alpha) * np.asarray(result["unpasted"], dtype=np.float64)
    soft = (alpha[..., 0] > 0.2) & (alpha[..., 0] < 0.8)
    assert soft.sum() > 20  # the feathered edge
    # Compositing the pasted photo again would leave a(1-a) of the old background at the edge.
    assert np.abs(np.asarray(result["image"]) - expected).max() <= 1


def test_refiner_redoes_the_end_of_the_denoising_on_the_finished_inpainting(tiny_sdxl):
    """The paper's flow: inpainting runs to the end and is decoded; the refiner re-encodes that
    image and redoes the denoising from 0.75 (no noisy latents handed over)."""
    backend = composer(tiny_sdxl, keep_unpasted=True)
    result, = backend.compose_batch([job(4)])
    pasted = backend.paste.compose(job(4)["boxes"], job(4)["cutouts"],
                                   job(4)["background"].filter(ImageFilter.GaussianBlur(1.0)))
    prompt = "a realistic photo in the garden"
    assert " ".join(backend.templates.render("prompts/repaint.j2", background="in the garden").split()) == prompt
    common = {"prompt": [prompt], "negative_prompt": [PAPER_NEGATIVE_PROMPT], "strength": 0.9,
              "mask_image": [Image.fromarray(paper_repaint_mask(pasted["mask"], 5))], "guidance_scale": 6.0,
              "num_inference_steps": 4, "height": 64, "width": 64}  # the paper: 1024, the default of SDXL
    inpainted = backend.pipeline("inpaint")(
        **common, image=[pasted["image"]], generator=[torch.Generator().manual_seed(item_seed(4, "inpaint"))]).images
    refined = backend.pipeline("refiner")(
        **common, image=inpainted, denoising_start=0.75,
        generator=[torch.Generator().manual_seed(item_seed(4, "refiner"))]).images
    assert (np.asarray(result["unpasted"]) == np.asarray(refined[0])).all()
    assert not (np.asarray(inpainted[0]) == np.asarray(refined[0])).all()  # the refiner's output is kept


def test_negative_prompt_is_the_papers_list_as_far_as_clip_reads(tiny_sdxl):
    assert PAPER_NEGATIVE_PROMPT_LIST.startswith(PAPER_NEGATIVE_PROMPT + ", ")
    tokenizer = composer(tiny_sdxl).pipeline("inpaint").tokenizer
    count = len(tokenizer(PAPER_NEGATIVE_PROMPT).input_ids)
    next_item = PAPER_NEGATIVE_PROMPT_LIST[:PAPER_NEGATIVE_PROMPT_LIST.index(",", len(PAPER_NEGATIVE_PROMPT) + 1)]
    assert count <= tokenizer.model_max_length < len(tokenizer(next_item).input_ids)


def test_strength_that_ends_before_the_refiner_starts_is_a_recipe_error(project, tiny_sdxl):
    with pytest.raises(ValueError, match=r"strength 0.2 must exceed 1 - refiner_start \(0.25\).*refiner: ''"):
        Params(strength=0.2)
    assert Params(strength=0.2, refiner="").strength == 0.2
    with pytest.raises(RecipeError, match=r"backends\.compose: strength 0.25 must exceed 1 - refiner_start \(0.25\)"):
        compile_tiny(project, sdxl_recipe(tiny_sdxl, strength=0.25))


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
