"""Copy-paste composition: alpha compositing, occlusion-aware masks, background fitting."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from stages.backends.compose.paste import Backend, Params, decontaminate, fit_background
from stages.backends.compose.photometric import CONTRAST_RANGE, MAX_SHIFT
from tests.conftest import REPO


def square(colour, size=40, alpha=255) -> Image.Image:
    image = Image.new("RGBA", (size, size), colour + (alpha,))
    return image


def test_opaque_paste_without_feather_or_harmonisation_copies_pixels_exactly():
    background = Image.new("RGB", (100, 100), (0, 0, 255))
    result = Backend(Params(feather=1, harmonize=0)).compose([[10, 10, 40, 40]], [square((255, 0, 0))], background)
    pixels = np.asarray(result["image"])
    assert (pixels[10:50, 10:50] == [255, 0, 0]).all()
    assert (pixels[60:, 60:] == [0, 0, 255]).all()
    assert np.asarray(result["mask"])[10:50, 10:50].min() == 255
    assert result["stats"][0] == {"full": 1600.0, "inside": 1600.0, "visible": 1600.0}


def test_later_pastes_occlude_earlier_masks_and_union_adds_up():
    background = Image.new("RGB", (100, 100))
    boxes = [[10, 10, 40, 40], [30, 30, 40, 40]]
    result = Backend(Params(feather=1, harmonize=0)).compose(boxes, [square((255, 0, 0)), square((0, 255, 0))],
                                                             background)
    first, second = (np.asarray(m) for m in result["masks"])
    assert first[35, 35] == 0 and second[35, 35] == 255  # the overlap belongs to the later paste
    assert result["stats"][0]["visible"] == pytest.approx(1600 - 400)
    union = np.asarray(result["mask"]).astype(int)
    assert np.abs(union - np.minimum(first.astype(int) + second, 255)).max() <= 1


def test_truncation_by_the_canvas_edge_is_measured():
    background = Image.new("RGB", (50, 50))
    result = Backend(Params(feather=1, harmonize=0)).compose([[30, 30, 40, 40]], [square((9, 9, 9))], background)
    assert result["stats"][0]["full"] == 1600 and result["stats"][0]["inside"] == 400


def test_feather_softens_the_alpha_edge_with_a_box_blur():
    background = Image.new("RGB", (100, 100))
    result = Backend(Params(feather=5, harmonize=0)).compose([[20, 20, 40, 40]], [square((255, 255, 255))], background)
    mask = np.asarray(result["mask"])
    assert mask[40, 40] == 255 and 0 < mask[40, 20] < 255


def test_a_feathered_edge_mixes_the_objects_colour_with_the_background_only():
    """A red disc (green under its transparent pixels, as a cut-out's old photo would be) on
    white: every pixel of the soft edge lies between red and white, (255, v, v), never darker."""
    disc = np.zeros((60, 60, 4), np.uint8)
    disc[..., :3] = (0, 160, 0)
    inside = np.hypot(*np.mgrid[-29.5:30.5, -29.5:30.5]) < 25
    disc[inside] = (255, 0, 0, 255)
    background = Image.new("RGB", (100, 100), (255, 255, 255))
    for size in (60, 45, 90):  # as cut, reduced, enlarged
        result = Backend(Params(feather=5, harmonize=0, decontaminate=False)).compose(
            [[5, 5, size, size]], [Image.fromarray(disc, "RGBA")], background)
        pixels = np.asarray(result["image"]).astype(int)
        edge = (np.asarray(result["mask"]) > 0) & (np.asarray(result["mask"]) < 255)
        assert edge.sum() > 100
        assert (pixels[edge][:, 0] >= 254).all() and (np.abs(pixels[edge][:, 1] - pixels[edge][:, 2]) <= 1).all()


def lab_mean(pixels: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(pixels.reshape(1, -1, 3).astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[0].mean(axis=0)


@pytest.mark.parametrize("strength", [0.25, 1.0])
def test_harmonisation_moves_lightness_toward_the_background_and_keeps_chroma(strength):
    """A sand-coloured square (L 71) on dark green (L 34): its CIELAB L moves `strength` of the
    way to the lawn's, at most MAX_SHIFT (12: strength 1 is capped), its a* and b* stay within
    8-bit rounding, where the old mean-colour pull turned it green."""
    lawn, sand = (30, 90, 30), (200, 170, 120)
    background = Image.new("RGB", (120, 120), lawn)
    result = Backend(Params(feather=1, harmonize=strength)).compose([[30, 30, 50, 50]], [square(sand, 50)], background)
    pasted = lab_mean(np.asarray(result["image"])[30:80, 30:80])
    before, scene = lab_mean(np.array(sand)), lab_mean(np.array(lawn))
    assert pasted[0] == pytest.approx(before[0] + max(strength * (scene[0] - before[0]), -MAX_SHIFT), abs=0.5)
    assert np.hypot(*(pasted[1:] - before[1:])) < 1.0
    assert (np.asarray(result["image"])[0, 0] == lawn).all()


def test_harmonisation_scales_contrast_within_bounds():
    """A two-tone object on a flat background keeps at least 0.85 of its contrast (CONTRAST_RANGE)."""
    piece = square((200, 60, 60))
    piece.paste((90, 20, 20, 255), (0, 20, 40, 40))
    result = Backend(Params(feather=1, harmonize=1.0)).compose([[30, 30, 40, 40]], [piece], Image.new("RGB", (100, 100), (0, 120, 0)))
    pixels = np.asarray(result["image"])
    step = lab_mean(pixels[30:50, 30:70])[0] - lab_mean(pixels[50:70, 30:70])[0]
    original = lab_mean(np.array((200, 60, 60)))[0] - lab_mean(np.array((90, 20, 20)))[0]
    assert step == pytest.approx(original * CONTRAST_RANGE[0], rel=0.03)


def test_fit_background_centre_crops_to_the_canvas():
    photo = Image.new("RGB", (300, 100), (255, 0, 0))
    photo.paste((0, 255, 0), (100, 0, 200, 100))
    fitted = fit_background(photo, 64, 64)
    assert fitted.size == (64, 64)
    assert (np.asarray(fitted)[:, 8:56] == [0, 255, 0]).all()


def test_grayscale_backgrounds_become_rgb():
    assert fit_background(Image.new("L", (80, 60), 128), 32, 32).mode == "RGB"


def soft_disc_photo(size=64, radius=20, ramp=3):
    """A red disc photographed on flat blue: alpha ramps over `ramp` pixels at the rim and the
    rim's colours mix red and blue by that alpha, as a real photo's do."""
    yy, xx = np.mgrid[:size, :size]
    alpha = np.clip((radius - np.hypot(xx - size / 2 + 0.5, yy - size / 2 + 0.5)) / ramp + 0.5, 0, 1)
    red, blue = np.array([220.0, 30, 30]), np.array([20.0, 40, 230])
    rgb = alpha[..., None] * red + (1 - alpha[..., None]) * blue
    return Image.fromarray(np.dstack([rgb, alpha * 255]).round().astype(np.uint8), "RGBA"), alpha, red


def ring_error(params, size=64):
    """Mean colour error (0-255) on the rim pixels of the disc pasted on green, against the
    exact composite of pure red over green with the same alpha."""
    cutout, alpha, red = soft_disc_photo(size)
    green = np.array([30.0, 200, 40])
    result = Backend(params).compose([[0, 0, size, size]], [cutout], Image.new("RGB", (size, size), (30, 200, 40)))
    pasted = np.asarray(result["image"], dtype=np.float64)
    a = np.asarray(cutout.getchannel("A"), dtype=np.float64)[..., None] / 255
    expected = a * red + (1 - a) * green
    rim = (alpha > 0.02) & (alpha < 0.98)
    return float(np.abs(pasted - expected)[rim].mean())


def test_decontamination_removes_the_old_background_from_the_rim():
    """Measured: 23.6 without decontamination, 0.24 with it (mean error in colour levels, 0-255)."""
    before = ring_error(Params(feather=1, harmonize=0, decontaminate=False))
    after = ring_error(Params(feather=1, harmonize=0, decontaminate=True))
    assert before > 15 and after < before / 5


def test_decontamination_keeps_opaque_pixels_exactly():
    cutout, alpha, _ = soft_disc_photo()
    result = Backend(Params(feather=1, harmonize=0)).compose([[0, 0, 64, 64]], [cutout], Image.new("RGB", (64, 64)))
    inside = alpha >= 1
    assert (np.asarray(result["image"])[inside] == np.asarray(cutout)[..., :3][inside]).all()


def test_contact_shadow_darkens_under_a_standing_object_only():
    background = Image.new("RGB", (100, 100), (200, 200, 200))
    box, piece = [30, 20, 40, 60], square((255, 0, 0), 40).resize((40, 60))
    standing = np.asarray(Backend(Params(feather=1, harmonize=0)).compose([box], [piece], background, ["ground"])["image"])
    free = np.asarray(Backend(Params(feather=1, harmonize=0)).compose([box], [piece], background, ["free"])["image"])
    off = np.asarray(Backend(Params(feather=1, harmonize=0, shadow=0)).compose([box], [piece], background,
                                                                               ["ground"])["image"])
    assert standing[82, 50].max() < 170 and standing[99, 50].min() > 190  # under the foot, fading
    assert (free[82, 50] == 200).all() and (off == free).all()
    assert (standing[:80] == free[:80]).all() or (standing[20:80, 30:70] == free[20:80, 30:70]).all()


def test_poisson_blending_keeps_the_object_where_the_alpha_puts_it():
    background = Image.new("RGB", (100, 100), (0, 120, 0))
    piece = square((200, 60, 60))
    piece.paste((90, 20, 20, 255), (0, 20, 40, 40))  # two tones: its own contrast must survive
    result = Backend(Params(feather=1, harmonize=0, blend="poisson")).compose([[30, 30, 40, 40]], [piece], background)
    pixels = np.asarray(result["image"], dtype=int)
    step = (pixels[49, 40:60] - pixels[50, 40:60]).mean(axis=0)
    assert abs(step[0] - 110) < 15  # the red step between its halves (110 in the piece) is kept: measured 102
    assert pixels[45, 50, 0] > 60  # still reddish, though shifted toward the green around it
    assert (pixels[5, 5] == [0, 120, 0]).all()  # the background away from it untouched
    assert result["stats"][0]["visible"] == 1600


def test_bad_compose_options_name_the_valid_values():
    with pytest.raises(ValueError, match="blend 'soft': valid alpha, poisson"):
        Params(blend="soft")


FORK_AFTER_NUMBA = """
import sys
import stages
import pymatting  # loads numba's cached kernels first, as an earlier import of rembg does
from concurrent.futures import ProcessPoolExecutor
import numpy as np
from PIL import Image
from stages.backends.compose.paste import decontaminate

cutout = Image.open(sys.argv[1])
expected = np.asarray(decontaminate(cutout))
with ProcessPoolExecutor(2) as pool:
    results = list(pool.map(decontaminate, [cutout, cutout]))
assert all((np.asarray(result) == expected).all() for result in results)
print("forked workers agree")
"""


def test_a_stage_forks_its_workers_safely_after_decontaminating_in_process(tmp_path):
    """numba's GNU OpenMP layer kills a process forked after it ran; importing `stages` keeps
    numba on its fork-safe layer, even when its kernels come from numba's on-disk cache (warmed
    here first) and were loaded before the composer ran, so a worker pool still works."""
    import subprocess
    import sys

    cutout, _, _ = soft_disc_photo()
    decontaminate(cutout)  # compiles or loads the kernels, so the child loads them from the cache
    cutout.save(tmp_path / "cutout.png")
    run = subprocess.run([sys.executable, "-c", FORK_AFTER_NUMBA, str(tmp_path / "cutout.png")],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "forked workers agree" in run.stdout


def standing_post(light, cast=0.6, size=300):
    """A 20 x 100 post standing at (140-160, 100-200) on flat grey, composed with `light`."""
    background = Image.new("RGB", (size, size), (200, 200, 200))
    post = Image.new("RGBA", (20, 100), (90, 60, 40, 255))
    return np.asarray(Backend(Params(feather=1, harmonize=0, shadow=0, cast_shadow=cast)).compose(
        [[140, 100, 20, 100]], [post], background, ["ground"], light)["image"]).astype(int)


def test_a_light_casts_the_silhouette_along_it_dark_at_the_feet_lighter_far_away():
    """Light from the left, shadows 0.8 as long as the post: the shadow lies right of the post,
    from its foot (x 160) to about x 160 + 80, lightening with distance; nothing else changes."""
    from stages.scene import Light

    lit = standing_post(Light(90, 0.8, 0.2))
    plain = standing_post(None)
    shade = 200 - lit[:, :, 0]
    assert (lit[:100] == plain[:100]).all() and (lit[:, :140] == plain[:, :140]).all()  # not above, not left
    near, far = shade[190:200, 165:180].max(), shade[190:200, 215:230].max()
    assert near > 40 and 0 < far < near  # darkens multiplicatively: 200 x (1 - 0.6 x 0.88) = 94 at the foot
    assert shade[:, 250:].max() == 0  # ends near x 240 (+ its blur)


def test_without_a_light_only_the_contact_shadow_remains_byte_for_byte():
    assert (standing_post(None, cast=0.6) == standing_post(None, cast=0)).all()


def test_a_light_behind_the_scene_casts_the_shadow_toward_the_camera():
    from stages.scene import Light

    shade = 200 - standing_post(Light(180, 0.6, 0.3))[:, :, 0]
    assert shade[200:240, 140:160].max() > 30 and shade[:100].max() == 0 and shade[100:195, 165:].max() == 0
