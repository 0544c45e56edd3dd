"""Copy-paste composition: alpha compositing, occlusion-aware masks, background fitting."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stages.backends.compose.paste import Backend, Params, fit_background


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


def test_harmonisation_moves_colours_toward_the_background():
    background = Image.new("RGB", (100, 100), (0, 0, 200))
    plain = Backend(Params(feather=1, harmonize=0)).compose([[0, 0, 50, 50]], [square((200, 0, 0), 50)], background)
    tuned = Backend(Params(feather=1, harmonize=0.5)).compose([[0, 0, 50, 50]], [square((200, 0, 0), 50)], background)
    assert np.asarray(tuned["image"])[25, 25, 2] > np.asarray(plain["image"])[25, 25, 2]


def test_fit_background_centre_crops_to_the_canvas():
    photo = Image.new("RGB", (300, 100), (255, 0, 0))
    photo.paste((0, 255, 0), (100, 0, 200, 100))
    fitted = fit_background(photo, 64, 64)
    assert fitted.size == (64, 64)
    assert (np.asarray(fitted)[:, 8:56] == [0, 255, 0]).all()


def test_grayscale_backgrounds_become_rgb():
    assert fit_background(Image.new("L", (80, 60), 128), 32, 32).mode == "RGB"
