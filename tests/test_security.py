"""Issue 17: a recipe (or template, or LLM server) from someone else cannot leak secrets, run
code or poison the build. One test per attack, each a malicious input written here, replies
from a loopback server on 127.0.0.1, and a check that no secret reaches a file or the terminal."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import yaml

from base.errors import BackendUnavailable, ItemError, RecipeError
from base.keys import content_key
from base.settings import SettingsError, load_settings
from base.sources import expand
from compiler import cli
from compiler import compile as compile_stage
from compiler.compile import compile_recipe
from stages import plan as plan_stage
from stages.backends.plan import openai as openai_planner
from stages.backends.plan import replay as replay_planner
from stages.backends.plan.reply import ReplyRejected, extract_json, parse_layout
from stages.templating import TemplateInvalid, Templates
from tests.conftest import REPO, TINY_RECIPE, run_tool, write_recipe
from tests.llm_server import ChatServer, good_reply

SECRET = "sk-TOP-SECRET-0123456789"
BUILDER_KEY = "builder-key-9876543210"


@pytest.fixture
def secrets(monkeypatch):
    """The builder's environment: secrets a recipe must not reach, and the key the builder
    chose for the loopback endpoint it approved."""
    for variable in ("OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(variable, SECRET)
    monkeypatch.setenv("G4G_TEST_KEY", BUILDER_KEY)
    monkeypatch.setenv("G4G_LLM_API_KEY_ENV", "G4G_TEST_KEY")
    monkeypatch.setenv("G4G_LLM_ENDPOINTS", "http://127.0.0.1")


def assert_not_leaked(root: Path, *printed: str, secret: str = SECRET) -> None:
    """`secret` is in no file under `root` (outputs, reports, caches) and in nothing printed."""
    for text in printed:
        assert secret not in text
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert secret.encode() not in path.read_bytes(), path


def validate_cli(capsys) -> tuple[int, str]:
    """`g4g validate` on the project: exit code and everything it printed."""
    code = cli.main(["validate"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def recipe_with(**changes) -> dict:
    recipe = copy.deepcopy(TINY_RECIPE)
    recipe.update(changes)
    return recipe


def openai_backend(url: str, root: Path, cache: Path, **options) -> openai_planner.Backend:
    params = openai_planner.Params(base_url=url, model="test-model", max_retries=0, timeout=5.0, **options)
    return openai_planner.Backend(params, templates_dir=str(REPO / "templates"), cache_dir=str(cache), root=str(root))


def layout_request() -> dict:
    """One plan request: a cat and a mug on a 256x256 canvas, one background with one photo."""
    concepts = [{"id": "cat", "class_noun": "cat", "size": 0.6, "views": [{"id": "cat/chelsea", "aspect": 1.2}]},
                {"id": "mug", "class_noun": "mug", "size": 0.4, "views": [{"id": "mug/coffee", "aspect": 0.8}]}]
    return {"id": "cat_mug-00000", "seed": 11, "canvas": [256, 256], "concepts": concepts,
            "backgrounds": [{"id": "grass", "phrase": "on the grass", "photos": 1}]}


# 1. Any environment variable leaked through the recipe.

@pytest.mark.parametrize("value", [
    "in the ${oc.env:OPENAI_API_KEY}",
    "in the ${ oc.env : OPENAI_API_KEY }",
    "${oc.decode:'${oc.env:OPENAI_API_KEY}'}",
    "in the garden at ${now:%H:%M}",
])
def test_resolvers_in_a_recipe_are_a_recipe_error_naming_the_key(project, secrets, capsys, value):
    recipe = recipe_with()
    recipe["backgrounds"]["garden"]["phrase"] = value
    write_recipe(project, recipe)
    code, printed = validate_cli(capsys)
    assert code == 2
    assert "tiny.yaml: backgrounds.garden.phrase" in printed and "cannot call resolvers" in printed
    assert compile_stage.main([]) == 2
    assert not (project / "build").exists()
    assert_not_leaked(project, printed, capsys.readouterr().err)


def test_resolvers_in_params_overrides_are_refused_too(project, secrets, capsys):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["overrides"] = ["concepts.cat.token=${oc.env:AWS_SECRET_ACCESS_KEY}"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    code, printed = validate_cli(capsys)
    assert code == 2 and "concepts.cat.token" in printed
    assert_not_leaked(project, printed)


def test_plain_references_between_keys_still_work(project, secrets):
    recipe = recipe_with()
    recipe["backgrounds"]["grass"]["phrase"] = "${backgrounds.garden.phrase}"
    write_recipe(project, recipe)
    documents = compile_recipe(project, "tiny", [])
    assert documents["caption"]["backgrounds"]["grass"] == "in the garden"


# 2. A recipe chose which secret goes to which host.

def test_a_recipe_cannot_name_the_key_variable(project, secrets):
    recipe = recipe_with(backends={"plan": {"name": "openai", "base_url": "http://127.0.0.1:9/v1",
                                            "api_key_env": "AWS_SECRET_ACCESS_KEY"}})
    write_recipe(project, recipe)
    with pytest.raises(RecipeError, match="backends.plan.api_key_env") as error:
        compile_recipe(project, "tiny", [])
    assert SECRET not in str(error.value)


def test_an_endpoint_the_builder_did_not_approve_gets_nothing(project, secrets, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("G4G_LLM_ENDPOINTS")  # the default approves https://api.openai.com/v1 only
    with ChatServer(lambda prompt, n: (200, good_reply(prompt))) as server:
        write_recipe(project, recipe_with(backends={"plan": {"name": "openai", "base_url": server.url}}))
        code, printed = validate_cli(capsys)
        assert code == 2 and "backends.plan.base_url" in printed and "not an approved LLM endpoint" in printed
        planner = openai_backend(server.url, project, tmp_path / "cache")  # a hand-made build document
        with pytest.raises(BackendUnavailable, match="not approved"):
            planner.plan_batch([layout_request()])
    assert server.requests == 0
    assert_not_leaked(project, printed)


def test_the_key_sent_is_the_one_the_builder_named(project, secrets, tmp_path):
    with ChatServer(lambda prompt, n: (200, good_reply(prompt))) as server:
        write_recipe(project, recipe_with(backends={"plan": {"name": "openai", "base_url": server.url}}))
        compile_recipe(project, "tiny", [])
        layouts = openai_backend(server.url, project, tmp_path / "cache").plan_batch([layout_request()])
    assert not isinstance(layouts[0], ItemError)
    assert server.authorizations == [f"Bearer {BUILDER_KEY}"]


def test_redirects_are_not_followed(project, secrets, tmp_path):
    with ChatServer(lambda prompt, n: (200, good_reply(prompt))) as elsewhere, \
            ChatServer(lambda prompt, n: (307, elsewhere.url + "/chat/completions")) as approved:
        layouts = openai_backend(approved.url, project, tmp_path / "cache").plan_batch([layout_request()])
    assert isinstance(layouts[0], ItemError) and "[request_failed]" in str(layouts[0])
    assert approved.requests == 1 and elsewhere.requests == 0


@pytest.mark.parametrize(("url", "problem"), [
    ("http://127.0.0.1:9/${oc.env:OPENAI_API_KEY}/v1", "cannot call resolvers"),
    (f"http://user:{SECRET}@127.0.0.1:9/v1", "no credentials"),
    (f"http://127.0.0.1:9/v1?key={SECRET}", "no credentials, query string"),
    ("http://evil.example.com/v1", "plain http only to localhost"),
])
def test_endpoint_urls_carry_no_secret_and_plain_http_stays_local(project, secrets, url, problem):
    write_recipe(project, recipe_with(backends={"plan": {"name": "openai", "base_url": url}}))
    with pytest.raises(RecipeError, match=problem) as error:
        compile_recipe(project, "tiny", [])
    assert SECRET not in str(error.value) and "user" not in str(error.value)


def test_the_builder_cannot_approve_plain_http_elsewhere(project, monkeypatch):
    monkeypatch.setenv("G4G_LLM_ENDPOINTS", "http://example.com/v1")
    with pytest.raises(SettingsError, match="plain http only to localhost"):
        load_settings(project / "params.yaml")


# 3. `pkg:` ran code.

def test_pkg_references_import_nothing(project, reference_data):
    for package in (project / "downloads", project / "downloads/mydata"):
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text("import pathlib\npathlib.Path('pwned').write_text('ran')\n"
                                             "print('PWNED')\n")
    (project / "downloads/mydata/cat.png").write_bytes((reference_data / "backgrounds/garden/garden1.jpg").read_bytes())
    script = (
        "import sys\nfrom pathlib import Path\n"
        "from base.errors import RecipeError\nfrom base.sources import expand\n"
        "for ref in ['pkg:downloads.mydata.x/cat.png', 'pkg:downloads/mydata/cat.png', 'pkg:this/x.png']:\n"
        "    try:\n        expand(ref, Path.cwd(), 'concepts.cat.images[0]')\n        print('RESOLVED', ref)\n"
        "    except RecipeError as error:\n        print('REFUSED', error)\n"
        "print(expand('pkg:skimage/data/chelsea.png', Path.cwd(), 'k'), 'skimage' in sys.modules)\n")
    result = run_tool(project, "python", "-c", script)  # the project folder is on sys.path, as under dvc
    assert "RESOLVED" not in result.stdout and result.stdout.count("REFUSED") == 3
    assert "is not a package name" in result.stdout and "no installed distribution provides" in result.stdout
    assert "['pkg:skimage/data/chelsea.png'] False" in result.stdout  # found, yet skimage was not imported
    assert "PWNED" not in result.stdout + result.stderr and "Beautiful is better" not in result.stdout
    assert not (project / "pwned").exists()


# 4. Hostile replies stalled or crashed planning, and the crash persisted.

def test_a_flood_of_braces_is_rejected_in_linear_time():
    start = time.perf_counter()
    for text in ("{" * 400_000, '{"a": ' * 200_000, "x}" * 200_000):
        with pytest.raises(ReplyRejected, match="malformed_json"):
            extract_json(text)
    assert extract_json("[" * 400_000 + '{"a": 1}') == {"a": 1}
    assert time.perf_counter() - start < 2.0  # the old parser took a minute on the first one


@pytest.mark.parametrize("hostile", [
    '{"objects": [{"name": "cat", "box": [NaN, 0, 10, 10]}, {"name": "mug", "box": [0, 0, 9, 9]}]}',
    '{"objects": [{"name": "cat", "box": [Infinity, 0, 10, 10]}, {"name": "mug", "box": [0, 0, 9, 9]}]}',
    '{"objects": [{"name": "cat", "box": [1e999, 0, 10, 10]}, {"name": "mug", "box": [0, 0, 9, 9]}]}',
    '{"objects": [{"name": "cat", "box": [' + "9" * 5000 + ', 0, 10, 10]}, {"name": "mug", "box": [0, 0, 9, 9]}]}',
    '{"objects": ' + "[" * 5000 + "]" * 5000 + "}",
])
def test_unusable_numbers_and_deep_nesting_are_rejected_and_retried(project, secrets, tmp_path, hostile):
    with ChatServer(lambda prompt, n: (200, hostile if n == 1 else good_reply(prompt))) as server:
        layouts = openai_backend(server.url, project, tmp_path / "cache").plan_batch([layout_request()])
    assert not isinstance(layouts[0], ItemError) and server.requests == 2
    first, second = layouts[0]["llm"]["attempts"]
    assert first["rejected"] == "malformed_json" and second["rejected"] is None
    with pytest.raises(ReplyRejected):
        parse_layout(hostile, ["cat", "mug"], 512)


@pytest.mark.parametrize("size", [100_000, 2_000_000])  # over the reply cap; over the response cap
def test_an_oversized_reply_is_rejected_and_never_cached(project, secrets, tmp_path, size):
    with ChatServer(lambda prompt, n: (200, "{" + " " * size + "}")) as server:
        layouts = openai_backend(server.url, project, tmp_path / "cache", max_attempts=2).plan_batch([layout_request()])
    assert isinstance(layouts[0], ItemError) and "[reply_too_large]" in str(layouts[0])
    assert server.requests == 2
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_a_cached_reply_that_the_parser_now_rejects_is_retried_not_fatal(project, secrets, tmp_path):
    cache = tmp_path / "cache"
    nan_reply = '{"objects": [{"name": "cat", "box": [NaN, 0, 9, 9]}, {"name": "mug", "box": [0, 0, 9, 9]}]}'
    with ChatServer(lambda prompt, n: (200, good_reply(prompt))) as server:
        planner = openai_backend(server.url, project, cache)
        prompt = planner.templates.render(planner.params.layout_template, objects=["cat", "mug"],
                                          canvas=planner.params.prompt_canvas, examples=[])
        request = layout_request()
        planner.replies.put(content_key("llm", planner.identity, prompt, request["seed"]), {}, nan_reply)
        layouts = planner.plan_batch([request])
    assert not isinstance(layouts[0], ItemError) and server.requests == 1  # the cached NaN reply was not fatal
    assert [a["rejected"] for a in layouts[0]["llm"]["attempts"]] == ["malformed_json", None]


# 5. The reply cache ignored the endpoint.

def test_another_endpoint_never_reuses_cached_replies(project, secrets, tmp_path):
    cache = tmp_path / "cache"
    with ChatServer(lambda prompt, n: (200, good_reply(prompt))) as hostile, \
            ChatServer(lambda prompt, n: (200, good_reply(prompt, reorder=True))) as honest:
        first = openai_backend(hostile.url, project, cache).plan_batch([layout_request()])[0]
        second = openai_backend(honest.url, project, cache).plan_batch([layout_request()])[0]
    assert hostile.requests == 1 and honest.requests == 1
    assert first["llm"]["attempts"][0]["request"] != second["llm"]["attempts"][0]["request"]


# 6. Symlinks in templates/ were followed.

def test_a_template_linked_out_of_templates_is_refused(project, tmp_path, capsys):
    credentials = tmp_path / "credentials"
    credentials.write_text(f"aws_secret_access_key = {SECRET}\n")
    (project / "templates/captions/short_link.j2").symlink_to(credentials)
    (project / "templates/captions/includer.j2").write_text('{% include "captions/short_link.j2" %}')
    recipe = recipe_with()
    recipe["strategy"] = {"short_caption": "captions/short_link.j2"}
    write_recipe(project, recipe)
    code, printed = validate_cli(capsys)
    assert code == 2 and "strategy.short_caption" in printed and "outside" in printed
    templates = Templates(project / "templates")
    for name in ("captions/short_link.j2", "captions/includer.j2"):
        with pytest.raises(TemplateInvalid, match="outside") as error:
            templates.render(name)
        printed += str(error.value)
    assert_not_leaked(project, printed)


# 7. Loops, unchecked replay files, config from outside recipes/, files outside their folder,
#    ids with a newline, raw server text on the terminal and in reports, tracebacks.

def test_a_glob_over_links_to_parent_folders_ends(project, reference_data):
    photos = project / "photos"
    (photos / "deep").mkdir(parents=True)
    (photos / "deep/cat.jpeg").write_bytes((reference_data / "backgrounds/garden/garden1.jpg").read_bytes())
    (photos / "deep/up").symlink_to("..")
    (photos / "deep/top").symlink_to("../..")
    start = time.perf_counter()
    assert expand("photos/**/*.jpeg", project, "concepts.cat.images[0]") == ["photos/deep/cat.jpeg"]
    assert time.perf_counter() - start < 2.0


def test_replay_files_are_checked_like_replies(project):
    request = layout_request()
    objects = [{"concept": "cat", "cutout": "cat/chelsea", "box": [0, 0, 60000, 60000]},
               {"concept": "mug", "cutout": "mug/coffee", "box": [10, 10, 50, 50]}]
    plans = {"layouts": [{"id": "cat_mug-00000", "background": {"id": "grass", "photo": 0}, "objects": objects},
                         {"id": "cat_mug-00001", "background": {"id": "grass", "photo": 7},
                          "objects": [{**objects[0], "box": [0, 0, 100, 100]}, objects[1]]}]}
    (project / "plans").mkdir()
    (project / "plans/v1.json").write_text(json.dumps(plans))
    planner = replay_planner.Backend(replay_planner.Params(file="plans/v1.json"), root=str(project))
    big_box, bad_photo = planner.plan_batch([request, {**request, "id": "cat_mug-00001"}])
    assert isinstance(big_box, ItemError) and "[invalid] box [0, 0, 60000, 60000]" in str(big_box)
    assert isinstance(bad_photo, ItemError) and "[invalid] photo 7" in str(bad_photo)
    (project / "plans/v1.json").write_text('{"layouts": [{"id": "x", "background": NaN}]}')
    with pytest.raises(BackendUnavailable, match="plans/v1.json"):
        replay_planner.Backend(replay_planner.Params(file="plans/v1.json"), root=str(project))


@pytest.mark.parametrize("attack", ["defaults", "group", "searchpath", "recipe_name", "override"])
def test_recipes_compose_only_from_the_recipes_folder(project, capsys, attack):
    (project / "outside").mkdir()
    (project / "outside/leak.yaml").write_text(f"name: {SECRET}\n")
    recipe = recipe_with()
    params = yaml.safe_load((project / "params.yaml").read_text())
    if attack == "defaults":
        recipe["defaults"] = ["schema", "../outside/leak", "_self_"]
    elif attack == "group":
        recipe["defaults"] = ["schema", {"backends": "../../outside/leak"}, "_self_"]
    elif attack == "searchpath":
        recipe["defaults"] = ["schema", "leak", "_self_"]
        recipe["hydra"] = {"searchpath": [f"file://{project / 'outside'}"]}
    elif attack == "recipe_name":
        params["recipe"] = "../outside/leak"
    else:
        params["overrides"] = ["+backends=../../outside/leak"]
    write_recipe(project, recipe)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    code, printed = validate_cli(capsys)
    assert code == 2 and ("recipes folder" in printed or "read only from" in printed or "not found in" in printed)
    assert SECRET not in printed and not (project / "build").exists()


@pytest.mark.parametrize(("option", "value"), [
    ("layout_template", "/etc/passwd"),
    ("layout_template", "../../outside/secret.j2"),
    ("examples", "/etc/passwd"),
    ("examples", "examples_link.jsonl"),
])
def test_file_options_resolve_inside_their_folder(project, secrets, tmp_path, option, value):
    (tmp_path / "secret.jsonl").write_text(SECRET)
    (project / "examples_link.jsonl").symlink_to(tmp_path / "secret.jsonl")
    write_recipe(project, recipe_with(backends={"plan": {"name": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                         option: value}}))
    with pytest.raises(RecipeError, match=f"backends.plan.{option}: .* is outside") as error:
        compile_recipe(project, "tiny", [])
    assert SECRET not in str(error.value)


@pytest.mark.parametrize(("where", "value"),
                         [("id", "cat\n"), ("token", "<cat1>\x1b[2J"), ("phrase", "on the\u202egrass")])
def test_ids_and_recipe_text_are_checked_whole(project, capsys, where, value):
    recipe = recipe_with()
    if where == "id":
        recipe["concepts"][value] = recipe["concepts"].pop("cat")
        for composition in recipe["compositions"].values():
            composition["concepts"] = [value if c == "cat" else c for c in composition["concepts"]]
    elif where == "token":
        recipe["concepts"]["cat"]["token"] = value
    else:
        recipe["backgrounds"]["grass"]["phrase"] = value
    write_recipe(project, recipe)
    code, printed = validate_cli(capsys)
    assert code == 2 and "\x1b" not in printed and "\u202e" not in printed
    assert ("ids use" if where == "id" else "control or format characters") in printed


def write_plan_inputs(project: Path) -> None:
    """build/compiled/ and a build/cutouts.json naming every photo, so the plan stage runs alone."""
    assert compile_stage.main([]) == 0
    extract = json.loads((project / "build/compiled/extract.json").read_text())
    cutouts = [{"id": item["id"], "concept": item["concept"], "size": [120, 100], "fill": 0.6}
               for item in extract["items"]]
    (project / "build/cutouts.json").write_text(json.dumps({"cutouts": cutouts}))


def test_server_text_is_escaped_and_echoed_keys_masked(project, secrets, capfd):
    def script(prompt, n):
        return 500, f"\x1b[2J\x1b[31mpwned \u202e {server.authorizations[-1]}"

    with ChatServer(script) as server:
        recipe = recipe_with(backends={"plan": {"name": "openai", "base_url": server.url, "max_retries": 0}})
        recipe["compositions"] = {"cat_mug": {"concepts": ["cat", "mug"], "backgrounds": ["grass"], "num_images": 2}}
        write_recipe(project, recipe)
        write_plan_inputs(project)
        plan_stage.run(project / "build/compiled/plan.json", project / "build/cutouts.json",
                       project / "build/layouts.json", project / "templates")
    printed = capfd.readouterr().err
    report = (project / "reports/plan.json").read_text()
    assert "InternalServerError" in printed and "\\x1b[2J" in printed and "\\u202e" in printed
    for text in (printed, report, (project / "build/layouts.json").read_text()):
        assert "\x1b" not in text and "\u202e" not in text and "\\u001b" not in text
    assert_not_leaked(project, printed, secret=BUILDER_KEY)


def test_template_and_yaml_failures_are_clear_errors(project, capsys):
    (project / "recipes/tiny.yaml").write_text("name: tiny\nconcepts: {cat: [unclosed\n")
    code, printed = validate_cli(capsys)
    assert code == 2 and "tiny.yaml, line" in printed and "not valid YAML" in printed and "Traceback" not in printed
    (project / "templates/captions/zero.j2").write_text("{{ 1 // 0 }}")
    (project / "templates/captions/binary.j2").write_bytes(b"\xff\xfe\x00{{")
    templates = Templates(project / "templates")
    with pytest.raises(TemplateInvalid, match=r"zero.j2, line 1: ZeroDivisionError"):
        templates.render("captions/zero.j2")
    with pytest.raises(TemplateInvalid, match=r"binary.j2: cannot load: UnicodeDecodeError"):
        templates.render("captions/binary.j2")
    (project / "params.yaml").write_text("recipe: tiny\nruntime: [workers\n")
    with pytest.raises(SettingsError, match="params.yaml: not valid YAML"):
        load_settings(project / "params.yaml")
