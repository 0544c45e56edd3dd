"""Contact on the silhouette and the camera of a view (issue 33, item 2): the foot profile
extract records, the feet it gives a pasted box (mirrored with the view), holes in the
ground, and views seen from above kept where the camera looks down on them; the one check
(`CanvasScene.support_under` / `judge`) the solver, the LLM repair and the score stage share."""

from __future__ import annotations

import numpy as np
import pytest

from base.errors import ItemError
from stages.backends.plan import views_for_scene
from stages.backends.plan.scene_fit import fit_to_scene
from stages.backends.plan.solver import Backend, Params
from stages.extract import foot_profile
from stages.scene import feet, judge, on_canvas
from stages.score import geometry_reasons
from tests.test_scene import TEMPLATE

# TEMPLATE: a 200 x 100 photo on a 100 x 100 canvas (canvas x = photo x * 200 - 50), horizon at
# row 40, camera 100 cm high, ground below row 60. A hole (a flower bed) at canvas x 40-60, rows 85-100.
HOLED = {**TEMPLATE, "holes": [[[0.45, 0.85], [0.55, 0.85], [0.55, 1.0], [0.45, 1.0]]]}
LYING = [1.0] * 16  # its whole underside on the ground
STANDING = [1.0] * 3 + [0.7] * 10 + [1.0] * 3  # legs at both sides, its belly higher
LEFT_FOOT = [1.0] * 3 + [0.7] * 13  # touches only at its left


def canvas_scene(template=HOLED):
    return on_canvas(template, (200, 100), (100, 100))


def test_foot_profile_is_the_lowest_opaque_row_per_column():
    alpha = np.zeros((10, 8), np.uint8)
    alpha[0:10, 0:2] = 255  # a leg down to the bottom row
    alpha[0:6, 2:6] = 200  # the body, its lowest opaque row 5
    alpha[6:8, 2:6] = 100  # a soft fringe under it: not opaque
    alpha[0:9, 6:8] = 255  # another leg, one row short
    assert foot_profile(alpha, columns=4) == [1.0, 0.6, 0.6, 0.9]
    assert foot_profile(np.zeros((4, 4), np.uint8), columns=2) == [None, None]


def test_feet_are_the_profile_columns_in_the_bottom_band_and_follow_a_mirror():
    box = [0, 0, 160, 100]
    assert [x for x, _ in feet(box, {"foot": STANDING})] == [5, 15, 25, 135, 145, 155]
    assert [x for x, _ in feet(box, {"foot": LEFT_FOOT})] == [5, 15, 25]
    assert [x for x, _ in feet(box, {"foot": LEFT_FOOT, "mirrored": True})] == [135, 145, 155]
    assert [x for x, _ in feet(box, {})] == [32, 80, 128]  # no profile: the box's bottom edge


def test_a_hole_under_the_middle_holds_legs_at_the_sides_but_not_a_lying_body():
    s = canvas_scene()
    box = [35, 65, 30, 30]  # foot row 95, 30 px for 50 cm there (27.5 expected, within tolerance)
    assert judge(s, box, "ground", 50, {"foot": STANDING}) == []  # its legs stand beside the flower bed
    assert [c for c, _ in judge(s, box, "ground", 50, {"foot": LYING})] == ["floating"]
    assert judge(canvas_scene(TEMPLATE), box, "ground", 50, {"foot": LYING}) == []  # no hole: it lies there
    problem = judge(s, box, "ground", 50, {"foot": LYING})[0][1]
    assert problem.startswith("10 of 16 feet off the ground or in a hole (first at (42, 95))")


def test_feet_not_at_the_box_corners_decide_contact_with_the_mirror():
    s = canvas_scene()
    right_of_hole = [55, 65, 30, 30]  # box x 55-85: its left third over the hole (x < 60)
    assert [c for c, _ in judge(s, right_of_hole, "ground", 50, {"foot": LEFT_FOOT})] == ["floating"]
    assert judge(s, right_of_hole, "ground", 50, {"foot": LEFT_FOOT, "mirrored": True}) == []


def test_score_judges_the_pasted_silhouette():
    context = {"canvas": [100, 100], "scenes": {"park": {"template": HOLED, "sizes": [[200, 100]]}},
               "geometry": {"dog": {"size_cm": 50.0, "placement": "ground"}},
               "views": {"dog/lying": {"foot": LYING}, "dog/standing": {"foot": STANDING}}}
    layout = {"background": {"id": "park", "photo": 0},
              "objects": [{"concept": "dog", "cutout": "dog/lying", "box": [35, 65, 30, 30]}]}
    assert [r["check"] for r in geometry_reasons(layout, context)] == ["floating"]
    layout["objects"][0]["cutout"] = "dog/standing"
    assert geometry_reasons(layout, context) == []


def test_a_view_from_above_reads_right_only_where_the_camera_looks_down_on_it():
    s = canvas_scene(TEMPLATE)  # fov 50: focal 107 px; at row 100 the camera looks down 29 degrees
    assert s.looks_down(100) == pytest.approx(29.2, abs=0.1)
    above = {"foot": LYING, "elevation_deg": 45}  # reads right from 20 degrees down: rows below 79
    assert judge(s, [35, 65, 30, 30], "ground", 50, above) == []  # foot row 95: 25 degrees
    near_far = judge(s, [42, 54, 17, 17], "ground", 50, above)  # foot row 71: 16 degrees
    assert [c for c, _ in near_far] == ["camera"]
    assert near_far[0][1] == ("a view seen from 45 degrees above, where the camera looks down at 16 "
                              "(reads right from 20)")
    assert judge(s, [42, 54, 17, 17], "ground", 50, {"foot": LYING}) == []  # a level view goes there


def dog_request(views: list[dict], template=TEMPLATE, seed: int = 0) -> dict:
    return {"id": "x", "seed": seed, "canvas": [100, 100], "filter": {},
            "concepts": [{"id": "dog", "class_noun": "dog", "size": 1.0, "size_cm": 30.0, "placement": "ground",
                          "views": views}],
            "backgrounds": [{"id": "park", "phrase": "in a park", "photos": 1,
                             "scene": {"template": template, "sizes": [[200, 100]]}}]}


def test_the_solver_places_a_view_from_above_only_near_the_camera_and_never_where_it_is_low():
    above = {"id": "dog/lying", "aspect": 1.5, "fill": 0.6, "foot": LYING, "elevation_deg": 45}
    level = {"id": "dog/sitting", "aspect": 0.8, "fill": 0.6, "foot": STANDING}
    solver = Backend(Params(min_size=0.05))
    rows = [solver.plan(dog_request([above], seed=seed))["objects"][0]["box"] for seed in range(20)]
    assert all(box[1] + box[3] >= 79 for box in rows)  # where the camera looks down 20 degrees or more
    low = {**TEMPLATE, "horizon": 0.9, "camera_height_cm": 20.0}  # near the ground: 5 degrees down at most
    cutouts = {solver.plan(dog_request([above, level], low, seed))["objects"][0]["cutout"] for seed in range(20)}
    assert cutouts == {"dog/sitting"}
    with pytest.raises(ItemError, match="every view of dog is seen from above and the camera looks down at 5"):
        solver.plan(dog_request([above], low))


def test_views_for_scene_keeps_what_fits_and_draws_again_what_does_not():
    low = canvas_scene({**TEMPLATE, "horizon": 0.9})
    concept = {"id": "dog", "views": [{"id": "a", "elevation_deg": 60}, {"id": "b"}]}
    shown = views_for_scene([concept], [concept["views"][0]], low, np.random.default_rng(0))
    assert shown == [{"id": "b"}]


def test_the_llm_repair_moves_a_lying_body_off_the_hole():
    s = canvas_scene()
    concept = {"id": "dog", "size_cm": 50.0, "placement": "ground"}
    view = {"aspect": 1.0, "foot": LYING}
    boxes, supports, rules, _ = fit_to_scene(s, [[35, 65, 30, 30]], [concept], [view], "repair")
    assert supports == ["ground"] and rules == [["snapped", "rescaled"]]
    assert judge(s, boxes[0], "ground", 50, view) == []


def test_the_llm_prompt_names_the_holes_and_what_stands_in_front():
    from types import SimpleNamespace

    from stages.backends.plan.llm import describe

    post = {"name": "post", "front": 0.9, "polygon": [[0.3, 0.5], [0.35, 0.5], [0.35, 0.9], [0.3, 0.9]]}
    s = on_canvas({**HOLED, "occluders": [post]}, (200, 100), (100, 100), masks={})
    job = SimpleNamespace(names=["dog"], request={"concepts": [{"size_cm": 50.0, "placement": "ground"}]})
    told = describe(s, job)
    assert told["holes"] == [[[40, 85], [60, 85], [60, 100], [40, 100]]]
    assert told["occluders"] == [{"name": "post", "box": [10, 50, 11, 41], "front": 90}]  # its matte, edges included


LION = {"id": "lion", "class_noun": "lion", "size": 1.0, "size_cm": 300.0, "placement": "ground"}


def test_a_concept_taller_than_the_view_everywhere_is_named_with_counts():
    from stages.backends.plan.reach import cannot_hold, feet_map

    s = canvas_scene(TEMPLATE)  # 12 grid points on the ground (rows 72 and 88); 300 cm is 96+ px there
    square = [{"aspect": 1.0, "fill": 1.0}]
    assert cannot_hold(s, LION, square, {}, 0.0) == (
        "lion is taller or wider than the view at 300 cm (12 outside the canvas (taller or wider than the view "
        "there) of 12 places)")
    assert cannot_hold(s, {**LION, "size_cm": 50.0}, square, {}, 0.0) is None
    good, failed = feet_map(s, {**LION, "size_cm": 50.0}, square, {"min_area": 0.05}, 0.0)
    assert len(good) + sum(failed.values()) == 12 and failed  # the far row is too small for 5% of the image


def test_validate_warns_of_a_background_a_composition_cannot_use():
    from compiler.scene_reach import scene_warnings

    park = {"id": "park", "phrase": "in a park", "photos": 1, "scene": {"template": TEMPLATE, "sizes": [[200, 100]]}}
    beach = {"id": "beach", "phrase": "on a beach", "photos": 1}
    documents = {"pack": {"recipe": {"name": "zoo"}},
                 "plan": {"backend": {"params": {"min_size": 0.0}}, "canvas": [100, 100], "filter": {},
                          "compositions": {"lion_cat": {"concepts": [LION], "backgrounds": [park, beach]}},
                          "items": [{"composition": "lion_cat"}] * 80}}
    assert scene_warnings(documents) == [
        "warning: recipe 'zoo': compositions.lion_cat: background park cannot be used (0 of 80 images; they go to "
        "beach): lion is taller or wider than the view at 300 cm (12 outside the canvas (taller or wider than the "
        "view there) of 12 places)"]


def test_the_plan_report_names_a_background_no_layout_used_and_why():
    from stages.plan import unused_backgrounds

    park = {"id": "park", "phrase": "in a park", "photos": 1, "scene": {"template": TEMPLATE, "sizes": [[200, 100]]}}
    beach = {"id": "beach", "phrase": "on a beach", "photos": 1}
    lion = {**LION, "views": [{"id": "lion/a", "aspect": 1.0, "fill": 1.0}]}
    request = {"canvas": [100, 100], "filter": {}, "concepts": [lion], "backgrounds": [park, beach]}
    items = [{"composition": "zoo", "request": request}] * 3
    layouts = [{"composition": "zoo", "background": {"id": "beach"}}] * 3
    assert unused_backgrounds(items, layouts, 0.0) == [
        "zoo: park: 0 of 3 images: lion is taller or wider than the view at 300 cm (12 outside the canvas (taller "
        "or wider than the view there) of 12 places)"]
    assert unused_backgrounds(items, [{"composition": "zoo", "background": {"id": "park"}}], 0.0) == [
        "zoo: beach: 0 of 3 images: no layout was placed there (see the failed items)"]
