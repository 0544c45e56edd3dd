"""Mirrored views: a concept with `mirror: true` draws mirrored poses, per item and seeded."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from base.errors import ItemError
from stages import compose as compose_stage
from stages.backends.plan.replay import Backend as Replay, Params as ReplayParams
from stages.backends.plan.solver import Backend, Params
from stages.plan import requests
from tests.conftest import write_recipe


def document(mirror: bool) -> dict:
    concepts = [{"id": "cat", "class_noun": "cat", "size": 1.0, "cutouts": ["cat_1"], **({"mirror": True} if mirror else {})},
                {"id": "mug", "class_noun": "mug", "size": 0.5, "cutouts": ["mug_1"]}]
    items = [{"id": f"c-{i:05d}", "composition": "c", "index": i, "seed": 1000 + i, "parts": {}} for i in range(40)]
    backgrounds = [{"id": "garden", "phrase": "in the garden", "photos": 1}]
    return {"canvas": [512, 512], "ignores": [], "compositions": {"c": {"concepts": concepts, "backgrounds": backgrounds}},
            "items": items}


CUTOUTS = [{"id": "cat_1", "concept": "cat", "size": [300, 200], "fill": 0.6},
           {"id": "mug_1", "concept": "mug", "size": [100, 120], "fill": 0.7}]


def test_a_mirrored_concept_offers_each_view_twice_and_the_other_once():
    items, skipped = requests(document(True), CUTOUTS)
    cat, mug = items[0]["request"]["concepts"]
    assert not skipped
    assert cat["views"] == [{"id": "cat_1", "aspect": 1.5, "fill": 0.6},
                            {"id": "cat_1", "aspect": 1.5, "fill": 0.6, "mirrored": True}]
    assert mug["views"] == [{"id": "mug_1", "aspect": 100 / 120, "fill": 0.7}]
    assert "mirror" not in requests(document(False), CUTOUTS)[0][0]["request"]["concepts"][0]


def test_the_solver_draws_mirrored_poses_per_item_deterministically():
    items, _ = requests(document(True), CUTOUTS)
    planner = Backend(Params())
    layouts = [planner.plan(item["request"]) for item in items]
    cats = [next(o for o in layout["objects"] if o["concept"] == "cat") for layout in layouts]
    mirrored = sum(1 for cat in cats if cat.get("mirrored"))
    assert 10 <= mirrored <= 30  # about half of 40, each drawn with the item's own seed
    assert all(cat.get("mirrored", False) in (False, True) for cat in cats)
    assert all("mirrored" not in o for layout in layouts for o in layout["objects"] if o["concept"] == "mug")
    assert layouts == [planner.plan(item["request"]) for item in items]
    plain = [planner.plan(item["request"]) for item in requests(document(False), CUTOUTS)[0]]
    assert not any(o.get("mirrored") for layout in plain for o in layout["objects"])


def test_compose_flips_the_cut_out_of_a_mirrored_object(tmp_path):
    cutout = Image.new("RGBA", (4, 2), (0, 0, 0, 255))
    cutout.putpixel((0, 0), (255, 0, 0, 255))
    cutout.save(tmp_path / "cat_1.png")
    layout = {"background": {"id": "plain", "photo": None},
              "objects": [{"concept": "cat", "cutout": "cat_1", "box": [0, 0, 4, 2]},
                          {"concept": "cat", "cutout": "cat_1", "mirrored": True, "box": [0, 0, 4, 2]}]}
    digest = hashlib.blake2b((tmp_path / "cat_1.png").read_bytes(), digest_size=20).hexdigest()
    context = {"canvas": [8, 8], "root": str(tmp_path), "cutouts_dir": str(tmp_path),
               "cutout_digests": {"cat_1": digest}, "backgrounds": {"plain": {"phrase": "plain", "photos": []}}}
    plain, flipped = compose_stage.job_for({"layout": layout, "seed": 1}, context)["cutouts"]
    assert np.asarray(plain)[0, 0, 0] == 255 and np.asarray(flipped)[0, 3, 0] == 255 and np.asarray(flipped)[0, 0, 0] == 0


@pytest.mark.parametrize("mirrored, allowed, problem", [
    (True, False, "is mirrored: True; valid: true only for a concept with mirror: true"),
    ("yes", True, "mirrored: 'yes'"),
    (True, True, None),
])
def test_replay_accepts_mirrored_objects_only_of_mirrored_concepts(tmp_path, mirrored, allowed, problem):
    import json

    items, _ = requests(document(allowed), CUTOUTS)
    request = items[0]["request"]
    objects = [{"concept": "cat", "cutout": "cat_1", "mirrored": mirrored, "box": [0, 0, 30, 20]},
               {"concept": "mug", "cutout": "mug_1", "box": [100, 100, 20, 24]}]
    (tmp_path / "plans.json").write_text(json.dumps({"layouts": [{"id": request["id"], "objects": objects,
                                                                  "background": {"id": "garden", "photo": 0}}]}))
    result = Replay(ReplayParams(file="plans.json"), root=str(tmp_path)).plan_batch([request])[0]
    if problem is None:
        assert result["objects"][0]["mirrored"] is True
    else:
        assert isinstance(result, ItemError) and problem in str(result)


def test_validate_warns_about_a_concept_with_one_view_unless_it_may_be_mirrored(project, capsys):
    from compiler import cli
    from tests.conftest import TINY_RECIPE

    assert cli.main(["validate"]) == 0
    err = capsys.readouterr().err
    assert "concepts.cat has a single view (1 photo) and mirror off" in err and "concepts.mug" in err
    assert "concepts.plant" not in err  # two views
    recipe = {**TINY_RECIPE, "concepts": {**TINY_RECIPE["concepts"], "cat": {**TINY_RECIPE["concepts"]["cat"], "mirror": True}}}
    write_recipe(project, recipe)
    assert cli.main(["validate"]) == 0
    err = capsys.readouterr().err
    assert "concepts.cat has" not in err and "concepts.mug has a single view" in err
