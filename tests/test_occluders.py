"""Occluders: what stands in front of the ground behind it hides the objects standing behind
it. Hand-made photos and mattes with pixel values worked out by hand, the planner's estimate
of the hidden share, the mask PNG in the keys, and schema errors naming the key."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from PIL import Image

from base.errors import ItemError, RecipeError
from compiler.compile import compile_recipe
from stages import backends
from stages.backends.compose.occlusion import Occlusion
from stages.backends.compose.paste import Backend, Params
from stages.scene import on_canvas
from tests.conftest import build_in_process, write_recipe
from tests.test_scene import TEMPLATE, scene_recipe

GREY, POST, WHITE, GREEN = (100, 100, 100), (200, 50, 0), (255, 255, 255), (0, 200, 0)


def post_photo() -> Image.Image:
    """A 10 x 10 grey photo with a post in columns 4-5."""
    pixels = np.full((10, 10, 3), GREY, np.uint8)
    pixels[:, 4:6] = POST
    return Image.fromarray(pixels)


def post_matte() -> np.ndarray:
    """The post (columns 4-5, opaque) and a soft edge in column 6 (128)."""
    matte = np.zeros((10, 10), np.uint8)
    matte[:, 4:6] = 255
    matte[:, 6] = 128
    return matte


def opaque(colour: tuple[int, int, int], width: int, height: int) -> Image.Image:
    return Image.new("RGBA", (width, height), colour + (255,))


def test_the_post_hides_the_object_behind_it_and_not_the_one_in_front():
    """The post meets the ground at row 7. A (white, foot at row 4) stands behind it: its columns
    4-5 show the post, column 6 half of it. B (green, foot at row 9) stands in front: all green."""
    composer = Backend(Params(feather=1, harmonize=0, decontaminate=False, shadow=0, cast_shadow=0))
    a, b = [2, 1, 5, 3], [3, 6, 4, 3]  # columns 2-6 rows 1-3; columns 3-6 rows 6-8
    result = composer.compose([a, b], [opaque(WHITE, 5, 3), opaque(GREEN, 4, 3)], post_photo(),
                              occlusion=Occlusion([(7.0, post_matte(), None)], [4.0, 9.0]))
    image = np.asarray(result["image"]).astype(int)
    assert (image[1:4, 2:4] == WHITE).all() and (image[1:4, 4:6] == POST).all()
    # column 6, the matte's soft edge: 128/255 of the photo's grey there over the white:
    # (100 * 128 + 255 * 127) / 255 = 177.2
    assert np.abs(image[1:4, 6] - (177, 177, 177)).max() <= 1
    assert (image[6:9, 3:7] == GREEN).all()  # in front of the post
    assert (image[0, 4:6] == POST).all() and (image[5, 0] == GREY).all()  # the photo elsewhere
    mask_a, mask_b = (np.asarray(m).astype(int) for m in result["masks"])
    assert (mask_a[1:4, 2:4] == 255).all() and (mask_a[1:4, 4:6] == 0).all() and (mask_a[1:4, 6] == 127).all()
    assert (mask_b[6:9, 3:7] == 255).all()
    # A: 6 opaque pixels and 3 at 127/255 show (7.49); 6 + 3 * 128/255 = 7.51 hidden; B: all 12 show
    assert result["stats"][0] == {"full": 15.0, "inside": 15.0, "visible": 7.5, "behind_occluders": 7.5}
    assert result["stats"][1] == {"full": 12.0, "inside": 12.0, "visible": 12.0, "behind_occluders": 0.0}
    union = np.asarray(result["mask"]).astype(int)
    assert (union[1:4, 4:6] == 0).all() and (union[6:9, 3:7] == 255).all()


def test_a_bench_never_hides_what_stands_on_its_seat_but_hides_what_is_under_it():
    """A seat (rows 5-6, the post's colour) meeting the ground at row 8, holding `seat`: a
    plant standing on it (foot at row 5, ground row 7) keeps every pixel, a cat on the ground
    behind its front edge (ground row 7.5) loses rows 5-6 to it."""
    pixels = np.full((10, 10, 3), GREY, np.uint8)
    pixels[5:7] = POST
    matte = np.zeros((10, 10), np.uint8)
    matte[5:7] = 255
    composer = Backend(Params(feather=1, harmonize=0, decontaminate=False, shadow=0, cast_shadow=0))
    result = composer.compose([[1, 2, 3, 4], [5, 3, 3, 4]], [opaque(WHITE, 3, 4), opaque(GREEN, 3, 4)],
                              Image.fromarray(pixels), ["seat", "ground"],
                              occlusion=Occlusion([(8.0, matte, "seat")], [7.0, 7.5], ["seat", "ground"]))
    image = np.asarray(result["image"]).astype(int)
    assert (image[2:6, 1:4] == WHITE).all()  # on the seat: row 5 is the plant, not the seat
    assert (image[3:5, 5:8] == GREEN).all() and (image[5:7, 5:8] == POST).all()
    assert [s["visible"] for s in result["stats"]] == [12.0, 6.0]
    assert [s["behind_occluders"] for s in result["stats"]] == [0.0, 6.0]


def test_without_occluders_nothing_changes():
    composer = Backend(Params(feather=1, harmonize=0, decontaminate=False, shadow=0, cast_shadow=0))
    plain = composer.compose([[2, 1, 5, 3]], [opaque(WHITE, 5, 3)], post_photo())
    assert "behind_occluders" not in plain["stats"][0]
    assert (np.asarray(plain["image"])[1:4, 2:7] == WHITE).all()


def test_a_mask_png_maps_through_the_view_and_a_polygon_clips_it():
    """A 100 x 50 mask over a 200 x 100 photo (half size), canvas 100 x 100 (photo columns
    50-150): mask columns 40-49 are photo columns 80-99, canvas columns 30-49."""
    mask = np.zeros((50, 100), np.uint8)
    mask[:, 40:50] = 255
    template = {**TEMPLATE, "occluders": [
        {"front": 0.8, "mask": {"source": "m.png", "sha256": "x"}},
        {"front": 0.8, "mask": {"source": "m.png", "sha256": "x"}, "polygon": [[0, 0], [1, 0], [1, 0.5], [0, 0.5]]}]}
    s = on_canvas(template, (200, 100), (100, 100), {"m.png": Image.fromarray(mask)})
    whole, clipped = s.occluders[0].matte, s.occluders[1].matte
    assert s.occluders[0].front == 80
    assert (whole[:, 32:48] == 255).all() and (whole[:, :28] == 0).all() and (whole[:, 52:] == 0).all()
    assert (clipped[:50, 32:48] == 255).all() and (clipped[52:, :] == 0).all()
    assert s.hidden([32, 50, 16, 20], depth=70) == pytest.approx(1.0)  # behind: wholly hidden
    assert s.hidden([32, 50, 16, 20], depth=85) == 0.0  # in front of both
    # columns 24-39: 31-39 opaque, bilinear edge 29 (a quarter) and 30 (three quarters): 10 / 16
    assert s.hidden([24, 50, 16, 20], depth=70) == pytest.approx(0.625, abs=0.005)


PARK_POST = {**TEMPLATE, "forbidden": [],
             # a wide post over photo columns 0.25-0.4 (canvas columns 0-30), meeting the ground at the bottom
             "occluders": [{"front": 1.0, "polygon": [[0.25, 0.0], [0.4, 0.0], [0.4, 1.0], [0.25, 1.0]]}]}


def dog(cm: float = 40.0) -> list[dict]:
    return [{"id": "dog", "class_noun": "dog", "size": 1.0, "size_cm": cm, "placement": "ground",
             "views": [{"id": "dog/a", "aspect": 1.0, "fill": 0.6}]}]


def test_the_solver_stands_objects_behind_an_occluder_but_not_hidden_beyond_min_visible():
    solver = backends.create("plan", backends.describe("plan", "solver", {"min_size": 0.05}))
    park = {"id": "park", "phrase": "in a park", "photos": 1, "scene": {"template": PARK_POST, "sizes": [[200, 100]]}}
    s = on_canvas(PARK_POST, (200, 100), (100, 100), {})
    shares = []
    for seed in range(60):
        layout = solver.plan({"id": f"x-{seed}", "seed": seed, "canvas": [100, 100], "concepts": dog(),
                              "backgrounds": [park], "filter": {"min_visible": 0.6}})
        box = layout["objects"][0]["box"]
        shares.append(s.hidden(box, s.ground_row(box[1] + box[3], 0)))
    assert max(shares) <= 0.6 * (1 - 0.6) + 1e-9  # never more hidden than the filter allows, with a margin
    assert any(0.05 < share for share in shares)  # behind the post is a place to stand (forbidden would refuse it)
    everywhere = {**PARK_POST, "occluders": [{"front": 1.0, "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]}]}
    hidden = {**park, "scene": {"template": everywhere, "sizes": [[200, 100]]}}
    with pytest.raises(ItemError, match=r"no place for dog .*hidden behind occluders \(100% of its box\)"):
        solver.plan({"id": "x", "seed": 0, "canvas": [100, 100], "concepts": dog(), "backgrounds": [hidden],
                     "filter": {"min_visible": 0.6}})


def bench_with_mask(project, value: int = 255) -> dict:
    """The scene recipe with a painted occluder over the bench photo (its left half)."""
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = value
    Image.fromarray(mask).save(project / "bench-occluders.png")
    recipe = scene_recipe()
    recipe["backgrounds"]["bench"]["scene"]["occluders"] = [{"front": 0.9, "mask": "bench-occluders.png"}]
    return recipe


def test_the_mask_png_is_keyed_and_changing_it_replans_and_recomposes_its_background_only(project):
    write_recipe(project, bench_with_mask(project))
    first = build_in_process(project)
    assert first["plan"]["failed"] == 0
    layouts = json.loads((project / "build/layouts.json").read_text())["layouts"]
    on_bench = sum(layout["background"]["id"] == "bench" for layout in layouts)
    compose = json.loads((project / "build/compiled/compose.json").read_text())
    mask = compose["backgrounds"]["bench"]["scene"]["template"]["occluders"][0]["mask"]
    assert mask["source"] == "bench-occluders.png" and len(mask["sha256"]) == 64
    assert "scene" not in compose["backgrounds"]["path"]  # no occluders: keyed as before
    images = json.loads((project / "build/images.json").read_text())["images"]
    assert all("behind_occluders" in c for image in images if image["background"]["id"] == "bench"
               for c in image["concepts"])
    bench_with_mask(project, value=200)  # the same recipe, a repainted mask
    second = build_in_process(project)
    assert 0 < on_bench and second["compose"]["computed"] >= on_bench
    assert second["compose"]["reused"] == 6 - second["compose"]["computed"]
    assert second["plan"]["computed"] + second["plan"]["reused"] == 6 and second["plan"]["computed"] > 0


@pytest.mark.parametrize(("occluder", "message"), [
    ({"front": 0.8}, r"backgrounds\.bench\.scene\.occluders\[0\]: neither polygon nor mask"),
    ({"front": 1.5, "polygon": [[0, 0], [1, 0], [1, 1]]}, r"scene\.occluders\[0\]\.front: 1\.5; valid: the row"),
    ({"front": 0.8, "polygon": [[0, 0], [1, 0]]}, r"scene\.occluders\[0\]\.polygon: a polygon of at least 3"),
    ({"front": 0.8, "mask": "fence.jpg"}, r"scene\.occluders\[0\]\.mask: 'fence\.jpg'; valid: a grey PNG"),
    ({"front": 0.8, "mask": "missing.png"}, r"backgrounds\.bench\.scene\.occluders\[0\]\.mask: 'missing\.png' "
                                            r"matches no image file"),
    ({"front": 0.8, "polygon": [[0, 0], [1, 0], [1, 1]], "depth": 3}, r"depth: Key 'depth' not in 'Occluder'"),
    ({"front": 0.8, "polygon": [[0, 0], [1, 0], [1, 1]], "support": "table"},
     r"scene\.occluders\[0\]\.support: 'table'; valid: a surface of this template \(seat\), or none"),
])
def test_bad_occluders_name_the_key(project, occluder, message):
    recipe = scene_recipe()
    recipe["backgrounds"]["bench"]["scene"]["occluders"] = [occluder]
    write_recipe(project, recipe)
    with pytest.raises(RecipeError, match=message):
        compile_recipe(project, "tiny", [])


def test_the_preview_tints_occluders_blue_over_their_mask_and_forbidden_regions_red():
    from compiler.scene_preview import render

    photo = Image.new("RGB", (200, 100), (128, 128, 128))
    mask = np.zeros((100, 200), np.uint8)
    mask[20:50, 120:140] = 255  # photo columns 120-139, rows 20-49
    template = {**TEMPLATE, "forbidden": [{"polygon": [[0.05, 0.42], [0.2, 0.42], [0.2, 0.58], [0.05, 0.58]], "front": 0.6}],
                "occluders": [{"front": 0.5, "mask": "post.png", "name": "post"}]}
    drawn = np.asarray(render(photo, template, masks={"post.png": Image.fromarray(mask)})).astype(int)
    occluder, forbidden, elsewhere = drawn[35, 125], drawn[50, 25], drawn[50, 170]
    assert occluder[2] > occluder[0] + 40 and forbidden[0] > forbidden[2] + 40  # blue, red
    assert abs(elsewhere[0] - elsewhere[2]) < 10  # the photo's grey


def test_g4g_scene_writes_its_preview_to_an_ignored_folder_and_says_where(tmp_path, monkeypatch, capsys):
    from compiler import cli

    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 48), (90, 90, 90)).save(tmp_path / "photo.jpg")
    assert cli.main(["scene", "photo.jpg"]) == 0
    assert (tmp_path / ".g4g/previews/photo.scene.png").is_file() and not (tmp_path / "photo.scene.png").exists()
    assert "wrote .g4g/previews/photo.scene.png" in capsys.readouterr().out
