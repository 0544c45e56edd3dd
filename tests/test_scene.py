"""Scene templates: perspective and supports on hand-made cases, the solver standing every
object on its support, the score stage's geometry checks, recipe errors, the preview, and
rebuilds limited to the edited background."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from PIL import Image

from base.errors import ItemError, RecipeError
from compiler.compile import compile_recipe
from compiler.scene_preview import feet_of_concepts, load_template, preview_recipe, render
from stages import backends
from stages.scene import Light, centre_crop, judge, light_of, on_canvas
from stages.score import geometry_reasons
from tests.conftest import REFERENCE_DATA, TINY_RECIPE, build_in_process, write_recipe

# A 200 x 100 photo shown on a 100 x 100 canvas: the centre crop is x 50-150, scale 1.
# Horizon at row 40, camera 100 cm high; ground below row 60; a seat 50 cm high at rows 70-80.
TEMPLATE = {
    "horizon": 0.4, "camera_height_cm": 100.0, "size_tolerance": 0.25, "view": None,
    "ground": [[0.0, 0.6], [1.0, 0.6], [1.0, 1.0], [0.0, 1.0]],
    "surfaces": {"seat": {"polygon": [[0.4, 0.7], [0.6, 0.7], [0.6, 0.8], [0.4, 0.8]], "height_cm": 50.0,
                          "max_size_cm": 30.0}},
    "forbidden": [{"polygon": [[0.25, 0.0], [0.35, 0.0], [0.35, 0.9], [0.25, 0.9]], "front": 0.9}],
}


PARK = {"id": "park", "phrase": "in a park", "photos": 1, "scene": {"template": TEMPLATE, "sizes": [[200, 100]]}}


def scene(template=TEMPLATE):
    return on_canvas(template, (200, 100), (100, 100))


def dog_and_plant(dog_cm: float, dog_aspect: float) -> list[dict]:
    """Plan-request concepts: a dog on the ground and a 20 cm houseplant for a surface."""
    return [{"id": "dog", "class_noun": "dog", "size": 1.0, "size_cm": dog_cm, "placement": "ground",
             "views": [{"id": "dog/a", "aspect": dog_aspect, "fill": 0.6}]},
            {"id": "plant", "class_noun": "houseplant", "size": 0.4, "size_cm": 20.0, "placement": "surface",
             "views": [{"id": "plant/a", "aspect": 1.0, "fill": 0.5}]}]


def test_centre_crop_and_view_select_the_part_of_the_photo_the_canvas_shows():
    assert centre_crop((200, 100), (100, 100)) == (50, 0, 100, 100)
    assert centre_crop((200, 100), (100, 100), [0.5, 0.5, 0.5, 0.5]) == (125, 50, 50, 50)
    mapped = on_canvas({**TEMPLATE, "view": [0.5, 0.5, 0.5, 0.5]}, (200, 100), (100, 100))
    assert mapped.horizon == pytest.approx((40 - 50) * 2)  # row 40 of the photo, 10 px above the view


def test_perspective_sizes_by_distance_below_the_horizon_and_support_height():
    s = scene()
    ground, seat = s.supports
    assert (s.horizon, ground.name, seat.name) == (40, "ground", "seat")
    assert s.size_at(100, ground, 50) == pytest.approx(30)  # 50 cm * 60 px / 100 cm
    assert s.size_at(80, seat, 20) == pytest.approx(16)  # 20 cm * 40 px / (100 - 50) cm
    assert s.size_at(30, ground, 50) == 0  # above the horizon nothing stands
    assert s.ground_row(80, 50) == pytest.approx(120)  # the seat at row 80 is as near as ground row 120


def test_supports_follow_placement_and_what_a_surface_holds():
    s = scene()
    assert [x.name for x in s.supports_for("ground", 20)] == ["ground"]
    assert [x.name for x in s.supports_for("surface", 20)] == ["seat"]
    assert [x.name for x in s.supports_for("surface", 40)] == ["ground"]  # too big for the seat
    assert s.supports_for("free", 20) == []


def test_judge_names_floating_scale_and_blocked():
    s = scene()
    assert judge(s, [60, 70, 30, 30], "ground", 50) == []  # foot row 100: 30 px expected, 30 px placed
    assert [c for c, _ in judge(s, [60, 20, 30, 30], "ground", 50)] == ["floating"]  # foot row 50
    assert [c for c, _ in judge(s, [55, 60, 40, 40], "ground", 50)] == ["scale"]  # 40 px: x1.33
    # the trunk covers canvas columns 0-20 down to row 90: 7 of the 8 probed columns of a box over x 0-24
    assert [c for c, _ in judge(s, [0, 64, 24, 24], "ground", 50)] == ["blocked"]  # foot row 88: behind it
    assert judge(s, [0, 64, 24, 24], "free", 50) == [("blocked", "covers a forbidden region for 88% of its box")]
    assert judge(s, [0, 70, 30, 30], "ground", 50) == []  # foot row 100: in front of the trunk
    assert judge(s, [42, 64, 16, 16], "surface", 20) == []  # on the seat: 16 px at row 80


def test_solver_stands_every_object_on_its_support_at_the_perspectives_size():
    solver = backends.create("plan", backends.describe("plan", "solver", {"min_size": 0.1, "max_overlap": 0.3}))
    concepts, background = dog_and_plant(dog_cm=60.0, dog_aspect=0.8), PARK
    s = scene()
    for seed in range(20):
        layout = solver.plan({"id": f"x-{seed}", "seed": seed, "canvas": [100, 100], "concepts": concepts,
                              "backgrounds": [background]})
        placed = {o["concept"]: o for o in layout["objects"]}
        assert placed["plant"]["support"] == "seat" and placed["dog"]["support"] == "ground"
        assert layout["background"]["crop"] == [50, 0, 100, 100]
        for o in layout["objects"]:
            concept = next(c for c in concepts if c["id"] == o["concept"])
            assert judge(s, o["box"], concept["placement"], concept["size_cm"]) == []
        feet = [o["box"][1] + o["box"][3] for o in layout["objects"]]
        depth = [s.ground_row(f, 50 if o["support"] == "seat" else 0) for f, o in zip(feet, layout["objects"])]
        assert depth == sorted(depth)  # pasted far to near


def test_solver_tries_the_other_scenes_and_says_why_none_holds_them():
    solver = backends.create("plan", backends.describe("plan", "solver", {"min_size": 0.5}))
    concepts = [{"id": c, "class_noun": c, "size": 1.0, "size_cm": 20.0, "placement": "ground",
                 "views": [{"id": f"{c}/a", "aspect": 1.0, "fill": 0.7}]} for c in ("cat", "mug")]
    with pytest.raises(ItemError, match=r"cannot stand cat, mug in any scene: park: no place for (cat|mug) "
                                        r"\(20 cm, ground\): \d+ shorter than backends.plan.min_size 0.5 of the canvas"):
        solver.plan({"id": "x", "seed": 0, "canvas": [100, 100], "concepts": concepts, "backgrounds": [PARK]})


def test_solver_names_an_object_taller_than_the_view_and_counts_each_failure():
    """A lion at its real size does not fit the view anywhere: the reason says so, not min_size."""
    solver = backends.create("plan", backends.describe("plan", "solver", {"min_size": 0.1}))
    lion = {"id": "lion", "class_noun": "lion", "size": 1.0, "size_cm": 400.0, "placement": "ground",
            "views": [{"id": "lion/a", "aspect": 0.5, "fill": 0.7}]}
    with pytest.raises(ItemError) as raised:
        solver.plan({"id": "x", "seed": 0, "canvas": [100, 100], "concepts": [lion], "backgrounds": [PARK]})
    message = str(raised.value)
    assert "no place for lion (400 cm, ground): " in message and "outside the canvas (taller or wider" in message
    counts = [int(part.split(" ", 1)[0]) for part in message.split("): ", 1)[1].split(", ")]
    assert sum(counts) == 4 * 50 + 2 * 200  # every try of every layout, each counted under what failed


def test_solver_plans_what_the_filter_keeps():
    """Each box is big enough, given its cut-out's fill, for the score stage's min_area."""
    solver = backends.create("plan", backends.describe("plan", "solver", {"min_size": 0.05, "max_overlap": 0.3}))
    concepts = dog_and_plant(dog_cm=40.0, dog_aspect=1.2)
    fills = {"dog": 0.6, "plant": 0.5}
    passes = {"min_area": 0.008, "min_visible": 0.6}
    smallest = []
    for seed in range(40):
        layout = solver.plan({"id": f"x-{seed}", "seed": seed, "canvas": [100, 100], "concepts": concepts,
                              "backgrounds": [PARK], "filter": passes})
        for o in layout["objects"]:
            smallest.append(o["box"][2] * o["box"][3] * fills[o["concept"]] / (100 * 100))
    assert min(smallest) >= 0.008 * 1.1
    unfiltered = [o["box"][2] * o["box"][3] * fills[o["concept"]] / 1e4 for seed in range(40) for o in solver.plan(
        {"id": f"x-{seed}", "seed": seed, "canvas": [100, 100], "concepts": concepts, "backgrounds": [PARK]})["objects"]]
    assert min(unfiltered) < 0.008  # without the filter's threshold, some would have been thrown away


def test_near_and_far_are_drawn_not_decided_by_size():
    """A small cat and a large dog: each stands in front in about half the images."""
    solver = backends.create("plan", backends.describe("plan", "solver", {"min_size": 0.05, "max_overlap": 0.3}))
    concepts = [{"id": "cat", "class_noun": "cat", "size": 0.5, "size_cm": 30.0, "placement": "ground",
                 "views": [{"id": "cat/a", "aspect": 1.0, "fill": 0.6}]},
                {"id": "dog", "class_noun": "dog", "size": 1.0, "size_cm": 60.0, "placement": "ground",
                 "views": [{"id": "dog/a", "aspect": 1.2, "fill": 0.6}]}]
    s, cat_in_front = scene(), 0
    for seed in range(200):
        layout = solver.plan({"id": f"x-{seed}", "seed": seed, "canvas": [100, 100], "concepts": concepts,
                              "backgrounds": [PARK], "filter": {"min_area": 0.01}})
        cat_in_front += layout["objects"][-1]["concept"] == "cat"  # pasted far to near: the last is in front
        feet = [s.ground_row(o["box"][1] + o["box"][3], 0) for o in layout["objects"]]
        assert feet[0] < feet[1]
    assert 0.4 <= cat_in_front / 200 <= 0.6


def test_score_rejects_a_floating_object_on_a_templated_background():
    context = {"canvas": [100, 100], "scenes": {"park": {"template": TEMPLATE, "sizes": [[200, 100]]}},
               "geometry": {"dog": {"size_cm": 50.0, "placement": "ground"}}}
    layout = {"background": {"id": "park", "photo": 0}, "objects": [{"concept": "dog", "box": [60, 20, 30, 30]}]}
    reasons = geometry_reasons(layout, context)
    assert [(r["check"], r["concept"]) for r in reasons] == [("floating", "dog")]
    assert reasons[0]["message"] == "dog: 3 of 3 feet off the ground or in a hole (first at (66, 50))"
    assert geometry_reasons({**layout, "background": {"id": "other", "photo": 0}}, context) == []


def scene_recipe() -> dict:
    recipe = copy.deepcopy(TINY_RECIPE)
    for cid, size in (("cat", 40), ("mug", 25), ("plant", 30)):
        recipe["concepts"][cid].update(size_cm=size)
    recipe["concepts"]["mug"]["placement"] = "surface"
    garden = str(REFERENCE_DATA / "backgrounds/garden")
    recipe["backgrounds"] = {
        "bench": {"phrase": "by a bench", "images": [f"{garden}/garden2.jpg"], "scene": {
            "horizon": 0.51, "camera_height_cm": 100, "view": [0.2, 0.35, 0.6, 0.65],
            "ground": [[0, 0.7], [1, 0.7], [1, 1], [0, 1]],
            "surfaces": {"seat": {"polygon": [[0.385, 0.645], [0.615, 0.645], [0.63, 0.675], [0.37, 0.675]],
                                  "height_cm": 45, "max_size_cm": 60}}}},
        "path": {"phrase": "on a path", "images": [f"{garden}/garden3.jpg"], "scene": {
            "horizon": 0.52, "camera_height_cm": 120, "view": [0.15, 0.45, 0.7, 0.55],
            "ground": [[0.41, 0.59], [0.535, 0.59], [0.93, 1.0], [0.04, 1.0]]}},
    }
    recipe["compositions"] = {"cat_mug": {"concepts": ["cat", "mug"], "backgrounds": ["bench", "path"], "num_images": 6}}
    recipe["backends"] = {"plan": {"name": "solver", "min_size": 0.08}}
    return recipe


def test_editing_one_scene_template_rebuilds_only_the_images_on_that_background(project):
    recipe = scene_recipe()
    write_recipe(project, recipe)
    first = build_in_process(project)
    assert first["plan"]["failed"] == 0 and first["compose"]["computed"] == 6
    layouts = json.loads((project / "build/layouts.json").read_text())["layouts"]
    on_path = sum(layout["background"]["id"] == "path" for layout in layouts)
    assert 0 < on_path < 6
    recipe["backgrounds"]["path"]["scene"]["camera_height_cm"] = 110
    write_recipe(project, recipe)
    second = build_in_process(project)
    assert second["compose"]["computed"] == on_path and second["compose"]["reused"] == 6 - on_path
    assert second["score"]["computed"] == on_path


def test_a_light_recomposes_only_its_background_and_plans_nothing_again(project):
    recipe = scene_recipe()
    write_recipe(project, recipe)
    first = build_in_process(project)
    documents = json.loads((project / "build/compiled/compose.json").read_text())
    assert all("light" not in background for background in documents["backgrounds"].values())
    on_path = sum(layout["background"]["id"] == "path"
                  for layout in json.loads((project / "build/layouts.json").read_text())["layouts"])
    recipe["backgrounds"]["path"]["scene"]["light"] = {"direction_deg": 90, "length": 0.8, "softness": 0.2}
    write_recipe(project, recipe)
    second = build_in_process(project)
    assert first["compose"]["computed"] == 6 and second["plan"]["computed"] == 0
    assert second["compose"]["computed"] == on_path and second["compose"]["reused"] == 6 - on_path


def test_light_gives_the_shadow_vector_of_a_height():
    """Shadows 100 px tall casters at half their length: up, right, down and left."""
    for direction, expected in ((0, (0, -50)), (90, (50, 0)), (180, (0, 50)), (270, (-50, 0))):
        assert Light(direction, 0.5, 0.3).shadow_of(100) == pytest.approx(expected, abs=1e-9)
    assert light_of(TEMPLATE) is None
    assert light_of({**TEMPLATE, "light": {"direction_deg": 45, "length": 1, "softness": 0}}) == Light(45, 1, 0)


def test_preview_draws_each_pole_s_shadow_along_the_light():
    photo = Image.new("RGB", (200, 100), (200, 200, 200))
    plain = np.asarray(render(photo, TEMPLATE)).astype(int)
    lit = np.asarray(render(photo, {**TEMPLATE, "light": {"direction_deg": 90, "length": 1.0, "softness": 0}})).astype(int)
    darker = (lit.sum(axis=2) < plain.sum(axis=2) - 60)
    rows, columns = np.nonzero(darker[62:])  # on the ground: shadows lie right of their poles, level with the feet
    assert rows.size > 0 and (rows <= 38).all()


def test_preview_maps_where_each_concept_of_the_recipe_may_stand(project, monkeypatch):
    recipe = scene_recipe()
    recipe["concepts"]["plant"]["size_cm"] = 400  # taller than the path's view wherever it stands
    write_recipe(project, recipe)
    monkeypatch.chdir(project)
    photo = Image.open(recipe["backgrounds"]["path"]["images"][0])
    template = load_template("path", project, None)
    maps = {legend.split(" ")[0]: (legend, points)
            for legend, points, _ in feet_of_concepts(template, photo.size, {}, preview_recipe(None), [])}

    legend, points = maps["cat"]
    assert points and all(y >= 0.59 * photo.height for _, y in points)  # on the path's ground, below its far end
    assert legend.startswith(f"cat (40 cm, ground): feet may go on {len(points)} of ")
    legend, points = maps["plant"]
    assert not points and "outside the canvas (taller or wider than the view there)" in legend


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.update(horizon=1.5), r"backgrounds\.bench\.scene\.horizon: 1\.5; the row of the horizon"),
    (lambda s: s.update(ground=[[0, 1], [1, 1]]), r"scene\.ground: a polygon of at least 3 \[x, y\] points"),
    (lambda s: s["surfaces"]["seat"].update(height_cm=120), r"surfaces\.seat\.height_cm: 120.*below the camera"),
    (lambda s: s.update(view=[0.5, 0.5, 0.6, 0.2]), r"scene\.view: .*a region inside the photo"),
    (lambda s: s.update(light={"direction_deg": 90, "length": 0.5, "softness": 2}),
     r"scene\.light\.softness: 2\.0; valid: 0 \(hard sun\) to 1 \(overcast\)"),
    (lambda s: s.update(light={"direction_deg": 90, "length": 0}), r"scene\.light\.length: 0\.0; valid: > 0"),
    (lambda s: s.update(light={"direction_deg": 400, "length": 1}), r"scene\.light\.direction_deg: 400\.0; valid: -360"),
    (lambda s: s.update(light={"azimuth": 90, "length": 1}), r"light\.azimuth.*valid keys: direction_deg, length, softness"),
])
def test_bad_scene_templates_name_the_key(project, edit, message):
    recipe = scene_recipe()
    edit(recipe["backgrounds"]["bench"]["scene"])
    write_recipe(project, recipe)
    with pytest.raises(RecipeError, match=message):
        compile_recipe(project, "tiny", [])


def test_a_concept_on_a_templated_background_needs_its_real_size(project):
    recipe = scene_recipe()
    del recipe["concepts"]["mug"]["size_cm"]
    write_recipe(project, recipe)
    with pytest.raises(RecipeError, match=r"concepts\.mug\.size_cm: not given; composition 'cat_mug' uses "
                                          r"background 'bench'"):
        compile_recipe(project, "tiny", [])


def test_preview_draws_the_template_over_the_photo():
    photo = Image.new("RGB", (200, 100), (0, 0, 0))
    plain, drawn = np.asarray(render(photo, None)), np.asarray(render(photo, TEMPLATE))
    assert drawn.shape == (100, 200, 3)
    assert drawn[95, 5, 1] > drawn[95, 5, 0]  # the ground is tinted green
    assert drawn[75, 100, 0] > 0 and drawn[75, 100, 0] >= drawn[75, 100, 2]  # the seat yellow
    assert (drawn[40, 190] != plain[40, 190]).any()  # the horizon line


def test_llm_boxes_off_the_template_are_snapped_to_the_ground_and_rescaled_about_the_foot():
    from stages.backends.plan.scene_fit import fit_to_scene

    s = scene()
    concepts = [{"id": "dog", "size_cm": 50.0, "placement": "ground"},
                {"id": "plant", "size_cm": 20.0, "placement": "surface"},
                {"id": "cat", "size_cm": 50.0, "placement": "ground"}]
    boxes = [[60, 10, 20, 20],  # in the sky: foot row 30, above the horizon
             [42, 64, 16, 16],  # already right: on the seat, 16 px at row 80
             [20, 50, 50, 50]]  # on the ground at row 100, but 50 px where 30 are expected
    fitted, supports, rules, order = fit_to_scene(s, boxes, concepts, [{"aspect": a} for a in (1.0, 1.0, 0.6)], "repair")
    assert fitted[0] == [65, 50, 10, 10] and rules[0] == ["snapped", "rescaled"]  # foot to row 60: 10 px there
    assert fitted[1] == [42, 64, 16, 16] and rules[1] == [] and supports[1] == "seat"
    assert fitted[2] == [36, 70, 18, 30] and rules[2] == ["rescaled"]  # about the foot (45, 100), 0.6 wide
    assert order == [0, 2, 1]  # ground rows 60, 100 and 120 (the seat's row 80 is that near): far to near
    assert all(judge(s, b, c["placement"], c["size_cm"]) == [] for b, c in zip(fitted, concepts))


def test_llm_boxes_off_the_template_are_rejected_when_asked():
    from stages.backends.plan.reply import ReplyRejected
    from stages.backends.plan.scene_fit import fit_to_scene

    concepts = [{"id": "dog", "size_cm": 50.0, "placement": "ground"}]
    with pytest.raises(ReplyRejected, match=r"\[floating\] dog: 3 of 3 feet off the ground or in a hole \(first at \(64, 30\)\) \(off_scene: reject\)"):
        fit_to_scene(scene(), [[60, 10, 20, 20]], concepts, [{"aspect": 1.0}], "reject")


def test_llm_planner_tells_the_model_the_scene_and_repairs_its_boxes(tmp_path):
    from stages.backends.plan.llm import LlmParams, LlmPlanner
    from tests.conftest import REPO

    class Canned(LlmPlanner):
        """A model that always gives the same layout: a dog in the sky, a plant on the seat."""

        def __init__(self):
            super().__init__(LlmParams(), str(REPO / "templates"), str(tmp_path))
            self.identity, self.prompts = {"backend": "canned"}, []

        def complete(self, prompts):
            self.prompts += [text for text, _ in prompts]
            return ['{"objects": [{"name": "dog", "box": [300, 20, 80, 80]}, '
                    '{"name": "houseplant", "box": [215, 330, 80, 80]}]}' for _ in prompts]

    concepts, background = dog_and_plant(dog_cm=50.0, dog_aspect=1.0), PARK
    planner = Canned()
    [layout] = planner.plan_batch([{"id": "x", "seed": 3, "canvas": [100, 100], "concepts": concepts,
                                    "backgrounds": [background]}])
    assert "Its horizon (eye level) is at y = 205" in planner.prompts[0]
    assert "- the ground: [[0, 307], [512, 307], [512, 512], [0, 512]]\n" in planner.prompts[0]
    assert "- the seat, for objects up to 30.0 cm: [[154, 358], [358, 358], [358, 410], [154, 410]]\n" in planner.prompts[0]
    assert "- dog (50.0 cm): 77 px tall standing at y = 358, 153 px tall at y = 511" in planner.prompts[0]
    placed = {o["concept"]: o for o in layout["objects"]}
    assert placed["dog"]["repaired"] == ["snapped", "rescaled"] and placed["dog"]["support"] == "ground"
    assert layout["background"] == {"id": "park", "photo": 0, "crop": [50, 0, 100, 100]}
    s = scene()
    assert all(judge(s, o["box"], c["placement"], c["size_cm"]) == [] for o, c in
               zip([placed["dog"], placed["plant"]], concepts))


def test_g4g_scene_draws_a_background_of_the_recipe_and_names_the_valid_ones(project):
    from tests.conftest import run_tool

    write_recipe(project, scene_recipe())
    photo = str(REFERENCE_DATA / "backgrounds/garden/garden2.jpg")
    run_tool(project, "g4g", "scene", photo, "--template", "bench", "-o", "bench.png")
    assert Image.open(project / "bench.png").size == Image.open(photo).size
    wrong = run_tool(project, "g4g", "scene", photo, "--template", "garden", check=False)
    assert wrong.returncode == 2 and "--template garden: no background with a scene template" in wrong.stderr
    assert "valid: bench, path" in wrong.stderr


def test_in_front_shares_count_each_pair_by_paste_order():
    from stages.dataset_metrics import in_front_shares

    def layout(*far_to_near: str) -> dict:
        return {"objects": [{"concept": c} for c in far_to_near]}

    layouts = [layout("cat", "dog"), layout("dog", "cat"), layout("dog", "cat"), layout("plant", "dog", "cat")]
    assert in_front_shares(layouts) == {"cat_in_front_of_dog": 0.75, "cat_in_front_of_plant": 1.0,
                                        "dog_in_front_of_plant": 1.0}
