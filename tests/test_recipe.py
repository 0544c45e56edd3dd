"""Recipes: Hydra composition, schema errors naming file and key, cross-reference checks."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from base.errors import RecipeError
from compiler.compile import compile_recipe, read_params
from tests.conftest import REPO, TINY_RECIPE, write_recipe


def compile_tiny(root: Path, recipe: dict | None = None, overrides: list[str] | None = None):
    if recipe is not None:
        write_recipe(root, recipe)
    return compile_recipe(root, "tiny", overrides or [])


def test_demo_recipe_composes_from_config_groups():
    documents = compile_recipe(REPO, "demo", [])
    recipe = documents["pack"]["recipe"]
    assert set(recipe["concepts"]) == {"cat", "dog", "houseplant"}  # the paper's own example
    assert all(recipe["backgrounds"][b]["scene"] for b in recipe["backgrounds"])
    assert recipe["strategy"]["token_style"] == "token"
    assert documents["plan"]["backend"]["name"] == "solver"
    assert len(documents["pack"]["items"]) >= 200
    assert all(2 <= len(c["concepts"]) <= 5 for c in recipe["compositions"].values())


def test_switching_a_backend_by_name_says_how_to_drop_the_groups_other_options(project):
    """`backends: embedded` sets the solver's options; naming another planner keeps them, and the
    error names each and the overrides that drop them (which then work)."""
    with pytest.raises(RecipeError) as error:
        compile_recipe(project, "demo", ["backends.plan.name=replay"])
    message = str(error.value)
    assert "backends.plan.coverage: Key 'coverage' not in 'Params' (options of plan backend 'replay': file)" in message
    drops = ["~backends.plan.coverage", "~backends.plan.max_overlap", "~backends.plan.ground",
             "~backends.plan.paste_order", "~backends.plan.min_size"]
    assert f"drop them with the overrides {' '.join(drops)}" in message
    with pytest.raises(RecipeError, match=r"backends\.plan\.file: file .*plans/layouts\.json not found"):
        compile_recipe(project, "demo", ["backends.plan.name=replay", *drops])


def test_typo_in_a_group_file_names_that_file_and_key(project):
    group = project / "recipes" / "concepts" / "gen4gen.yaml"
    group.write_text(group.read_text().replace("class_noun: cat", "class_nuon: cat"))
    with pytest.raises(RecipeError) as error:
        compile_recipe(project, "demo", [])
    assert "concepts/gen4gen.yaml" in str(error.value)
    assert "concepts.cat.class_nuon" in str(error.value)


def test_typo_in_the_recipe_names_the_recipe_file(project):
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["compositions"]["cat_mug"]["num_imagse"] = 3
    with pytest.raises(RecipeError, match=r"tiny\.yaml.*compositions\.cat_mug\.num_imagse"):
        compile_tiny(project, recipe)


def test_wrong_type_is_reported_with_its_key(project):
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["compositions"]["cat_mug"]["num_images"] = "many"
    with pytest.raises(RecipeError, match=r"compositions\.cat_mug\.num_images"):
        compile_tiny(project, recipe)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["compositions"]["cat_mug"].update(concepts=["cat", "dgo"]),
         r"compositions\.cat_mug\.concepts\[1\]: unknown concept 'dgo'; valid: cat, mug, plant"),
        (lambda r: r["compositions"]["cat_mug"].update(concepts=["cat"]),
         r"compositions\.cat_mug\.concepts: 1 concepts; a composition has 2-5"),
        (lambda r: r["compositions"]["cat_mug"].update(concepts=["cat", "mug", "plant", "a", "b", "c"]),
         r"6 concepts; a composition has 2-5"),
        (lambda r: r["compositions"]["cat_mug"].update(backgrounds=["beach"]),
         r"unknown background 'beach'; valid: garden, grass"),
        (lambda r: r["concepts"]["cat"].update(images=["photos/missing/*.jpg"]),
         r"concepts\.cat\.images\[0\]: 'photos/missing/\*\.jpg' matches no image file"),
        (lambda r: r["concepts"]["mug"].update(token="<cat1>"),
         r"concepts\.mug\.token: '<cat1>' is also the token of 'cat'"),
        (lambda r: r.update(backends={"plan": {"name": "gpt"}}),
         r"backends\.plan\.name: 'gpt'; valid: hf, openai, replay, solver"),
        (lambda r: r.update(backends={"plan": {"name": "solver", "max_overlpa": 0.2}}),
         r"backends\.plan\.max_overlpa.*options of plan backend 'solver': coverage, max_overlap"),
        (lambda r: r.update(backends={"score": {"name": "geometric", "min_visible": 3}}),
         r"backends\.score.*min_visible and min_area are fractions"),
        (lambda r: r["compositions"].update({"a.b": {"concepts": ["cat", "mug"], "backgrounds": ["grass"],
                                                     "num_images": 1}}),
         r"compositions\.a\.b: ids use letters"),
        (lambda r: r.update(strategy={"token_style": "emoji"}), r"strategy\.token_style: 'emoji'; valid: token, token_noun"),
        (lambda r: r.update(output={"resolution": 100}), r"output\.resolution: 100; valid: a multiple of 8 from 64 to 4096"),
        (lambda r: r.update(output={"image_format": "gif"}), r"output\.image_format: 'gif'; valid: jpg, png, webp"),
    ],
)
def test_invalid_recipes_fail_with_key_and_valid_values(project, edit, message):
    recipe = copy.deepcopy(TINY_RECIPE)
    edit(recipe)
    with pytest.raises(RecipeError, match=message) as error:
        compile_tiny(project, recipe)
    assert "tiny.yaml" in str(error.value)


def test_unknown_recipe_lists_available_ones(project):
    with pytest.raises(RecipeError, match=r"recipe 'nope' not found.*available: demo, tiny"):
        compile_recipe(project, "nope", [])


def test_overrides_from_params_apply(project):
    (project / "params.yaml").write_text("recipe: tiny\noverrides: ['compositions.cat_mug.num_images=2']\n")
    name, overrides = read_params(project / "params.yaml")
    documents = compile_recipe(project, name, overrides)
    assert [i["id"] for i in documents["plan"]["items"] if i["composition"] == "cat_mug"] == [
        "cat_mug-00000", "cat_mug-00001"]


def test_package_resources_and_globs_resolve(project, reference_data):
    documents = compile_tiny(project)
    sources = {item["id"]: item["source"] for item in documents["extract"]["items"]}
    assert sources["cat/chelsea"] == "pkg:skimage/data/chelsea.png"
    assert sources["plant/houseplant_01"].endswith("houseplant_01.png")
    assert set(sources) == {"cat/chelsea", "mug/coffee", "plant/houseplant_01", "plant/houseplant_02"}


def test_a_model_backend_without_the_models_extra_says_what_to_install(project, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "torch" else real(name, *rest))
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["backends"] = {"score": {"name": "clip"}}
    with pytest.raises(RecipeError, match=r"backends\.score\.name: 'clip' runs PyTorch models, and torch is not "
                                          r"installed here: pip install -e '\.\[models\]'"):
        compile_tiny(project, recipe)
