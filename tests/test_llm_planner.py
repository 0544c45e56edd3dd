"""LLM planning against a real chat-completions server on 127.0.0.1, a tiny local causal LM,
and replay."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import yaml

from base.errors import BackendUnavailable
from stages.templating import TemplateInvalid
from tests.conftest import TINY_RECIPE, build_in_process, dataset_bytes, run_tool, write_recipe
from tests.llm_server import ChatServer, good_reply


def openai_recipe(url: str, **options) -> dict:
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["backends"] = {"plan": {"name": "openai", "base_url": url, "model": "test-model",
                                   "max_retries": 0, "timeout": 5.0, **options}}
    return recipe


# The builder's runtime settings approve the loopback test servers and name the key variable.
LOCAL_LLM = {"G4G_LLM_ENDPOINTS": "http://127.0.0.1", "G4G_LLM_API_KEY_ENV": "G4G_TEST_KEY"}


@pytest.fixture(autouse=True)
def local_llm(monkeypatch):
    for variable, value in LOCAL_LLM.items():
        monkeypatch.setenv(variable, value)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("G4G_TEST_KEY", "local")


def test_good_replies_build_the_dataset_and_a_rebuild_asks_nothing(project, api_key):
    with ChatServer(lambda prompt, n: (200, good_reply(prompt, reorder=n % 2 == 0))) as server:
        write_recipe(project, openai_recipe(server.url))
        reports = build_in_process(project)
        first = server.requests
        assert reports["plan"]["computed"] == 10 and reports["plan"]["failed"] == 0
        assert first == 10 + 6  # a layout per image, plus a background choice where two are allowed
        assert reports["pack"]["packed"] > 0
        layouts = json.loads((project / "build/layouts.json").read_text())["layouts"]
        attempt = layouts[0]["llm"]["attempts"][-1]
        assert attempt["step"] == "layout" and '"objects"' in attempt["reply"] and len(attempt["request"]) == 20
        build_in_process(project)
        assert server.requests == first


def test_garbage_replies_are_retried_then_rejected_and_the_rest_is_built(project, api_key):
    def script(prompt, n):
        if "houseplant" in prompt or "Which of these" in prompt:
            return 200, good_reply(prompt)
        return 200, "I am sorry, I cannot help with boxes." if n % 2 else '{"objects": [{"name": "cat"'

    with ChatServer(script) as server:
        write_recipe(project, openai_recipe(server.url, max_attempts=3))
        reports = build_in_process(project)
    plan = reports["plan"]
    assert plan["failed"] == 6 and plan["computed"] == 4  # cat_mug fails, cat_mug_plant is planned
    assert "layout: 3 replies rejected" in plan["failures"]["cat_mug-00000"]
    assert plan["rejections_by_reason"] == {"malformed_json": 18}
    assert reports["pack"]["packed"] + reports["pack"]["rejected"] == 10 and reports["pack"]["packed"] > 0


def test_server_errors_are_retried_by_the_client(project, api_key):
    with ChatServer(lambda prompt, n: (500, "overloaded") if n <= 2 else (200, good_reply(prompt))) as server:
        recipe = openai_recipe(server.url, max_retries=2)
        recipe["compositions"] = {"cat_mug": {**recipe["compositions"]["cat_mug"], "num_images": 1,
                                              "backgrounds": ["grass"]}}
        write_recipe(project, recipe)
        reports = build_in_process(project)
    assert reports["plan"]["computed"] == 1 and server.requests == 3


@pytest.mark.parametrize("case", ["timeout", "unreachable", "http_500"])
def test_request_failures_are_reported_per_item(project, api_key, case):
    with ChatServer(lambda prompt, n: (200, good_reply(prompt), 3.0) if case == "timeout" else (500, "down")) as server:
        url = "http://127.0.0.1:9/v1" if case == "unreachable" else server.url
        recipe = openai_recipe(url, timeout=0.5)
        recipe["compositions"] = {"cat_mug": {**recipe["compositions"]["cat_mug"], "num_images": 2,
                                              "backgrounds": ["grass"]}}
        write_recipe(project, recipe)
        reports = build_in_process(project)
    plan = reports["plan"]
    assert plan["failed"] == 2 and plan["rejections_by_reason"] == {"request_failed": 2}
    expected = {"timeout": "APITimeoutError", "unreachable": "APIConnectionError", "http_500": "InternalServerError"}
    assert expected[case] in plan["failures"]["cat_mug-00000"]


def test_missing_api_key_stops_the_stage_naming_the_variable(project, monkeypatch):
    monkeypatch.delenv("G4G_TEST_KEY", raising=False)
    write_recipe(project, openai_recipe("http://127.0.0.1:9/v1"))
    with pytest.raises(BackendUnavailable, match="G4G_TEST_KEY"):
        build_in_process(project)


def test_prompt_template_reaching_python_internals_is_refused(project, api_key):
    (project / "templates/prompts/evil.j2").write_text("{{ objects.__class__.__mro__[1].__subclasses__() }}")
    write_recipe(project, openai_recipe("http://127.0.0.1:9/v1", layout_template="prompts/evil.j2"))
    with pytest.raises(TemplateInvalid, match="evil.j2"):
        build_in_process(project)


def test_replay_reproduces_the_dataset_without_any_llm(project, api_key, tmp_path, monkeypatch):
    with ChatServer(lambda prompt, n: (200, good_reply(prompt))) as server:
        write_recipe(project, openai_recipe(server.url))
        build_in_process(project)
    original = dataset_bytes(project)
    (project / "plans").mkdir()
    shutil.copy(project / "build/layouts.json", project / "plans/layouts.json")
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["backends"] = {"plan": {"name": "replay", "file": "plans/layouts.json"}}
    write_recipe(project, recipe)
    monkeypatch.setenv("G4G_CACHE_DIR", str(tmp_path / "fresh-cache"))
    reports = build_in_process(project)
    assert reports["plan"]["computed"] == 10
    replayed = dataset_bytes(project)
    # The same samples in the same shards with the same pixels and captions; only each sample's
    # JSON member (its provenance: the plan backend and the item keys) tells the builds apart.
    assert same_pixels_and_captions(replayed["manifest.jsonl"]) == same_pixels_and_captions(original["manifest.jsonl"])
    assert {k: v for k, v in replayed.items() if k.endswith(".tar")}.keys() == \
        {k for k in original if k.endswith(".tar")}


def same_pixels_and_captions(manifest: bytes) -> list[dict]:
    rows = [json.loads(line) for line in manifest.decode().splitlines()]
    return [{"key": r["key"], "shard": r["shard"], "caption": r["caption"],
             "members": [m for m in r["members"] if m["name"] != "json"]} for r in rows]


def test_dvc_repro_with_a_local_server_then_zero_requests(dvc_project):
    with ChatServer(lambda prompt, n: (200, good_reply(prompt))) as server:
        recipe_file = dvc_project / "recipes/tiny.yaml"
        recipe_file.write_text(yaml.safe_dump(openai_recipe(server.url), sort_keys=False))
        run_tool(dvc_project, "dvc", "repro", G4G_TEST_KEY="local")
        first = server.requests
        assert first > 0
        run_tool(dvc_project, "dvc", "repro", G4G_TEST_KEY="local")
        assert server.requests == first
    plan = json.loads((dvc_project / "reports/plan.json").read_text())
    assert plan["failed"] == 0


def test_hf_planner_with_a_tiny_random_model_goes_through_the_rejection_path(project, tmp_path):
    from tests.tiny_models import save_tiny_causal_lm

    model_dir = save_tiny_causal_lm(tmp_path / "tiny-lm")
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe["compositions"] = {"cat_mug": {**recipe["compositions"]["cat_mug"], "num_images": 2,
                                          "backgrounds": ["grass"]}}
    recipe["backends"] = {"plan": {"name": "hf", "model": str(model_dir), "max_tokens": 12, "max_attempts": 2,
                                   "temperature": 0.0}}
    write_recipe(project, recipe)
    reports = build_in_process(project)
    plan = reports["plan"]
    assert plan["failed"] == 2 and plan["computed"] == 0
    assert plan["rejections_by_reason"] and sum(plan["rejections_by_reason"].values()) == 4
    assert reports["pack"]["rejected"] == 2
