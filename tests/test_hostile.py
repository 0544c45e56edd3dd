"""Issue 27: hostile endpoints, photos and arguments stay bounded in bytes and seconds and end
in clear errors. Endpoints are loopback servers on 127.0.0.1 that compress, drip and send raw
bodies; every loop here is bounded."""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
import sqlite3
import sys
import time
import zlib
from contextlib import closing
from pathlib import Path

import pytest
import yaml

from base.errors import ItemError, RecipeError
from base.settings import SettingsError, load_settings
from base.sources import expand
from compiler import cli
from stages.backends.plan import openai as openai_planner
from tests.conftest import REPO, run_tool, write_recipe
from tests.llm_server import ChatServer, RawServer, completion, good_reply
from tests.test_security import layout_request, recipe_with, secrets  # noqa: F401 (a fixture)

JSON = {"Content-Type": "application/json"}


@functools.lru_cache(maxsize=None)
def bomb(mebibytes: int) -> bytes:
    """A completion body of `mebibytes` MiB of spaces, gzip-compressed twice (a few KB)."""
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)
    head, tail = completion("@").split(b"@")
    parts = [inner.compress(head)] + [inner.compress(b" " * (1 << 20)) for _ in range(mebibytes)]
    once = b"".join(parts) + inner.compress(tail) + inner.flush()
    return gzip.compress(once, 9)


def plan_once(server_url, project, tmp_path, timeout=5.0, **options):
    params = openai_planner.Params(base_url=server_url, model="test-model", max_retries=0, timeout=timeout, **options)
    planner = openai_planner.Backend(params, templates_dir=str(REPO / "templates"), cache_dir=str(tmp_path / "cache"),
                                     root=str(project))
    started = time.perf_counter()
    layout = planner.plan_batch([layout_request()])[0]
    return layout, time.perf_counter() - started


# 1. Compressed bombs: the response cap counts decoded bytes.

@pytest.mark.parametrize("encoding", ["gzip, gzip", "gzip"])
def test_a_compressed_bomb_stops_at_the_cap_after_decoding(project, secrets, tmp_path, encoding):
    body = bomb(64) if encoding == "gzip, gzip" else zlib.decompress(bomb(64), 31)  # the inner layer alone
    with RawServer(lambda n: (200, {**JSON, "Content-Encoding": encoding}, body, 0)) as server:
        layout, _ = plan_once(server.url, project, tmp_path, max_attempts=1)
    assert len(body) < 300_000
    assert isinstance(layout, ItemError) and "[reply_too_large]" in str(layout) and "decoded" in str(layout)


def test_a_small_compressed_reply_is_read(project, secrets, tmp_path):
    body = gzip.compress(gzip.compress(completion(good_reply("- cat\n- mug"))))
    with RawServer(lambda n: (200, {**JSON, "Content-Encoding": "gzip, gzip"}, body, 0)) as server:
        layout, _ = plan_once(server.url, project, tmp_path)
    assert not isinstance(layout, ItemError), layout


def test_an_unknown_content_encoding_is_a_request_failure(project, secrets, tmp_path):
    with RawServer(lambda n: (200, {**JSON, "Content-Encoding": "gzip, x-bomb"}, b"xx", 0)) as server:
        layout, _ = plan_once(server.url, project, tmp_path)
    assert isinstance(layout, ItemError) and "x-bomb" in str(layout)


# 3. Bodies that are not JSON are per-item errors with the reason.

@pytest.mark.parametrize(("headers", "body", "reason"), [
    ({"Content-Type": "text/html"}, b"<html><body>Bad gateway</body></html>", "not a JSON"),
    (JSON, b"<html><body>Bad gateway</body></html>", "not a JSON"),
    (JSON, b'{"choices": [{"message": {"content": "\xff\xfe caf\xe9"}}]}', "not a JSON"),
])
def test_a_body_that_is_not_a_completion_is_an_item_error(project, secrets, tmp_path, headers, body, reason):
    with RawServer(lambda n: (200, headers, body, 0)) as server:
        layout, _ = plan_once(server.url, project, tmp_path, max_attempts=1)
    assert isinstance(layout, ItemError) and reason in str(layout), layout


# 4. A total deadline per request and a cap on retries.

def test_a_dripping_server_meets_the_total_deadline(project, secrets, tmp_path):
    with RawServer(lambda n: (200, JSON, completion(good_reply("- cat\n- mug")), 0.2)) as server:
        layout, seconds = plan_once(server.url, project, tmp_path, timeout=1.0)
    assert isinstance(layout, ItemError) and "[request_failed]" in str(layout) and "1 s" in str(layout), layout
    assert seconds < 3.0 and server.requests == 1


@pytest.mark.parametrize(("option", "value", "valid"), [
    ("max_retries", 100000, "0-10"), ("timeout", 1e9, "600"), ("concurrency", 10**6, "1-64"),
    ("timeout", float("nan"), "600")])
def test_endpoint_numbers_have_upper_bounds(option, value, valid):
    with pytest.raises(ValueError, match=f"{option}.*{valid}"):
        openai_planner.Params(**{option: value})


# 5. A pull request cannot choose the secret or where it goes: params.yaml is tracked.

def test_params_yaml_cannot_approve_endpoints_or_name_the_key(project, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-0123456789")
    with ChatServer(lambda prompt, n: (200, good_reply(prompt))) as server:
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["runtime"].update(llm_endpoints=[server.url], llm_api_key_env="OPENAI_API_KEY")
        (project / "params.yaml").write_text(yaml.safe_dump(params))
        write_recipe(project, recipe_with(backends={"plan": {"name": "openai", "base_url": server.url}}))
        assert cli.main(["validate"]) == 2
        printed = capsys.readouterr().err
        with pytest.raises(SettingsError, match="runtime.llm_api_key_env: .*never the repository's"):
            plan_once(server.url, project, tmp_path)
    assert "params.yaml: runtime.llm_api_key_env" in printed and "endpoints.yaml" in printed
    assert server.requests == 0


def test_the_builder_approves_endpoints_in_the_user_config(project, monkeypatch, tmp_path):
    for variable in ("G4G_LLM_ENDPOINTS", "G4G_LLM_API_KEY_ENV"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("MY_LOCAL_KEY", "local-key-0123456789")
    (tmp_path / "config/g4g").mkdir(parents=True)
    (tmp_path / "config/g4g/endpoints.yaml").write_text("llm_endpoints: [http://127.0.0.1]\n"
                                                        "llm_api_key_env: MY_LOCAL_KEY\n")
    with ChatServer(lambda prompt, n: (200, good_reply(prompt))) as server:
        layout, _ = plan_once(server.url, project, tmp_path)
    assert not isinstance(layout, ItemError) and server.authorizations == ["Bearer local-key-0123456789"]
    (tmp_path / "config/g4g/endpoints.yaml").write_text("workers: 3\n")
    with pytest.raises(SettingsError, match="endpoints.yaml: unknown key.*valid: llm_endpoints, llm_api_key_env"):
        load_settings(project / "params.yaml")


# 6-8. Photo folders: colliding names, thin images, non-images and names with escapes.

def photo_recipe(project, reference_data, pattern: str = "photos/*") -> None:
    """Cut-out concepts only (no segmentation weights): `cat` from `pattern`, `plant` from the
    reference data."""
    recipe = recipe_with()
    recipe["concepts"] = {"cat": {"class_noun": "cat", "token": "<cat1>", "cutout": True, "images": [pattern]},
                          "plant": recipe["concepts"]["plant"]}
    recipe["compositions"] = {"cat_plant": {"concepts": ["cat", "plant"], "backgrounds": ["garden"], "num_images": 1}}
    write_recipe(project, recipe)


def rgba(path, colour=(200, 10, 10, 255)) -> None:
    from PIL import Image

    image = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    image.paste(colour, (10, 5, 30, 25))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def run_extract(project) -> dict:
    from compiler import compile as compile_stage
    from stages import extract

    assert compile_stage.main([]) == 0
    build = project / "build"
    extract.run(build / "compiled/extract.json", build / "cutouts", build / "cutouts.json")
    return json.loads((project / "reports/extract.json").read_text())


def test_photos_whose_names_collide_get_unique_ids_and_the_count_adds_up(project, reference_data):
    for name, colour in (("x-2.png", (255, 0, 0, 255)), ("x.png", (0, 255, 0, 255)), ("x.webp", (0, 0, 255, 255))):
        rgba(project / "photos" / name, colour)
    photo_recipe(project, reference_data)
    report = run_extract(project)
    items = json.loads((project / "build/compiled/extract.json").read_text())["items"]
    cats = {item["id"]: item["source"] for item in items if item["concept"] == "cat"}
    assert sorted(cats.values()) == ["photos/x-2.png", "photos/x.png", "photos/x.webp"]
    assert cats["cat/x-2"] == "photos/x-2.png" and cats["cat/x"] == "photos/x.png"  # unchanged where unique
    assert report["items"] == len(items) == 5 and report["computed"] + report["reused"] == 5
    cutouts = json.loads((project / "build/cutouts.json").read_text())["cutouts"]
    assert sorted(c["source"] for c in cutouts if c["concept"] == "cat") == sorted(cats.values())


def thin_png(path, width: int) -> None:
    """A 1-bit grey PNG `width` x 1 pixels (a few KB compressed)."""
    import struct

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, 1, 1, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + b"\xff" * ((width + 7) // 8), 9)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def test_a_thin_image_is_an_item_error_in_the_stage_and_the_cli(project, reference_data, tmp_path, capsys):
    rgba(project / "photos/good.png")
    thin_png(project / "photos/thin.png", 80_000_000)
    assert (project / "photos/thin.png").stat().st_size < 100_000
    photo_recipe(project, reference_data)
    report = run_extract(project)
    assert report["failed"] == 1 and "sides" in report["failures"]["cat/thin"]
    assert report["items"] == report["computed"] + report["failed"]
    assert cli.main(["extract", str(project / "photos/thin.png"), "-o", str(tmp_path / "out.png")]) == 2
    assert "80000000x1" in capsys.readouterr().err and not (tmp_path / "out.png").exists()


def test_a_non_image_leaks_no_bytes_and_names_are_escaped(project, reference_data, tmp_path, capfd):
    canary = "sk-canary-0123456789abcdef"
    (tmp_path / "credentials").write_text(f"{canary}\n")
    rgba(project / "photos/good.png")
    (project / "photos/secret.png").symlink_to(tmp_path / "credentials")
    (project / "photos/\x1b[2Jevil\u202e.png").write_bytes(b"GIF89a broken")
    photo_recipe(project, reference_data)
    report = run_extract(project)
    printed = capfd.readouterr().err
    assert "starts like text" in report["failures"]["cat/credentials"]  # the link resolves to its target
    assert cli.main(["explain", "cat/\\x1b[2Jevil\\u202e"]) == 0
    printed += capfd.readouterr().out
    written = printed + "".join(p.read_text() for p in (project / "reports").glob("*.json"))
    written += (project / "build/cutouts.json").read_text()
    assert canary not in written and "sk-" not in written
    assert "\x1b" not in written and "\u202e" not in written and "\\x1b[2Jevil" in printed


# 9. Resolvers in the defaults list: refused before Hydra evaluates them.

@pytest.mark.parametrize("where", ["defaults", "group_file", "override"])
def test_resolvers_in_the_defaults_list_are_refused(project, monkeypatch, capsys, where):
    monkeypatch.setenv("G4G_CANARY", "backends-canary")
    recipe = recipe_with()
    recipe.pop("backends", None)
    params = yaml.safe_load((project / "params.yaml").read_text())
    if where == "defaults":
        recipe["defaults"] = ["schema", {"backends": "${oc.env:G4G_CANARY,embedded}"}, "_self_"]
    elif where == "group_file":
        (project / "recipes/backends/chain.yaml").write_text(
            "defaults:\n  - /strategies@_here_: ${oc.env:G4G_CANARY}\n")
        recipe["defaults"] = ["schema", {"backends": "chain"}, "_self_"]
    else:
        recipe["defaults"] = ["schema", {"backends": "embedded"}, "_self_"]
        params["overrides"] = ["backends=${oc.env:G4G_CANARY,embedded}"]
    write_recipe(project, recipe)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    code, printed = cli.main(["validate"]), capsys.readouterr().err
    assert code == 2 and "cannot call resolvers" in printed and "oc.env" in printed, printed
    assert "backends-canary" not in printed


# 10. Tracebacks where a message belongs.

def test_an_include_cycle_and_deep_yaml_are_recipe_errors(project, capsys):
    recipe = recipe_with()
    recipe["defaults"] = ["schema", "loop_a", "_self_"]
    write_recipe(project, recipe)
    (project / "recipes/loop_a.yaml").write_text("defaults:\n  - loop_b\n")
    (project / "recipes/loop_b.yaml").write_text("defaults:\n  - loop_a\n")
    code, printed = cli.main(["validate"]), capsys.readouterr().err
    assert code == 2 and "loop_a" in printed and "cycle" in printed and "Traceback" not in printed, printed
    (project / "recipes/tiny.yaml").write_text("name: tiny\nseed: " + "[" * 1000 + "]" * 1000 + "\n")
    code, printed = cli.main(["validate"]), capsys.readouterr().err
    assert code == 2 and "tiny.yaml" in printed and "deep" in printed, printed
    (project / "params.yaml").write_text("recipe: " + "[" * 1000 + "]" * 1000 + "\n")
    code, printed = cli.main(["validate"]), capsys.readouterr().err
    assert code == 2 and "params.yaml: not valid YAML" in printed, printed


def test_a_glob_through_an_unreadable_link_says_what_it_could_not_read(project):
    try:
        os.stat("/proc/1/root")
        pytest.skip("/proc/1/root is readable here")
    except PermissionError:
        pass
    (project / "photos").mkdir()
    (project / "photos/init").symlink_to("/proc/1/root")
    with pytest.raises(RecipeError, match=r"matches no image file .*1 could not be read, e.g. .*photos/init: "
                                          r"Permission denied"):
        expand("photos/**/*.png", project, "concepts.cat.images[0]")


def test_damaged_state_files_are_ignored_not_fatal(project, reference_data, capsys):
    rgba(project / "photos/good.png")
    photo_recipe(project, reference_data)
    run_extract(project)
    record = project / ".g4g/keys/extract.sqlite"
    for damaged in ('{"items": [1, 2], "values": 3}', '{"items": {"cat/good": 5}}', "[]", '"x"', None):
        if damaged is None:  # a database, with rows that are not records of ours
            with closing(sqlite3.connect(record)) as database:
                database.execute("UPDATE items SET entry = '5' WHERE id = 'cat/good'")
                database.execute("UPDATE part_values SET value = 'not json'")
                database.commit()
        else:
            record.write_text(damaged)
        for stamps in (project / ".g4g/outputs").glob("*.json"):
            stamps.write_text('{"cat/good.png": 7}' if damaged == "[]" else damaged or "5")
        assert run_extract(project)["items"] == 3
        assert cli.main(["explain", "cat/good"]) in (0, 2)
        assert "Traceback" not in capsys.readouterr().err


def test_gc_waits_for_no_running_build_on_a_shared_cache(project, reference_data):
    from stages.runtime.cache import ItemCache

    rgba(project / "photos/good.png")
    photo_recipe(project, reference_data)
    run_extract(project)
    (project / ".g4g/keys").rename(project / "keys.other")  # as if another project's build used the entries
    running = ItemCache(project / ".g4g/cache", "extract")
    running.hold()  # a build of another project, between its lookups and its copies
    busy = run_tool(project, "g4g", "cache", "gc", "--keep-days", "0", check=False)
    assert busy.returncode == 2 and "in use by a running build" in busy.stderr and "Traceback" not in busy.stderr
    assert len(list((project / ".g4g/cache/extract").glob("*/*"))) == 3
    del running
    assert run_tool(project, "g4g", "cache", "gc", "--keep-days", "0").stdout.startswith("removed 3 entries")


# 11. Arguments: outputs are regular files, numbers have ranges, a huge photo is never hashed.

@pytest.mark.parametrize("argv", [["card", "-o", "out"], ["diff", "--html", "out"],
                                  ["import-coco", "a.json", "b.json", "-o", "out"]])
def test_an_output_path_must_be_a_regular_file(project, capsys, argv):
    import stat as stat_module

    for name in ("a.json", "b.json"):
        (project / name).write_text('{"images": [], "annotations": [], "categories": []}')
    os.mkfifo(project / "out")  # stands for a device node: anything but a regular file
    assert cli.main(argv) == 2
    assert "out: is a device, pipe or socket, not a regular file" in capsys.readouterr().err
    assert stat_module.S_ISFIFO(os.stat(project / "out").st_mode)


@pytest.mark.parametrize(("argv", "valid"), [
    (["sample", "m", "p", "-o", "out", "--steps", "0"], "valid: 1-1000"),
    (["sample", "m", "p", "-o", "out", "-n", "-1"], "valid: 1-1000"),
    (["sample", "m", "p", "-o", "out", "--guidance", "nan"], "valid: 0-100"),
    (["cache", "gc", "--keep-days", "nan"], "valid: 0-36500"),
    (["cache", "gc", "--keep-days", "-1"], "valid: 0-36500"),
    (["extract", "x.png", "-o", "y.png", "--max-side", "10"], "valid: 16-16384"),
    (["table", "--json", "."], "not a file"),
])
def test_cli_numbers_have_ranges_named_in_the_message(project, capsys, argv, valid):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2 and valid in capsys.readouterr().err


def test_sample_into_a_file_is_an_error(project, capsys):
    (project / "out").write_text("x")
    assert cli.main(["sample", "m", "p", "-o", "out"]) == 2
    assert "out: is a file; valid: a folder" in capsys.readouterr().err


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r["compositions"]["cat_mug"].update(num_images=100_000_000), "num_images: 100000000; valid: 1-1000000"),
    (lambda r: r["output"].update(resolution=200_000), "resolution: 200000; valid: a multiple of 8 from 64 to 4096"),
    (lambda r: r["output"].update(shard_size=10**9), "shard_size: 1000000000; valid: 1-100000"),
    (lambda r: r["concepts"]["cat"].update(size=float("nan")), "size: nan; valid: > 0"),
])
def test_recipe_numbers_have_upper_bounds(project, capsys, change, message):
    recipe = recipe_with()
    change(recipe)
    write_recipe(project, recipe)
    assert cli.main(["validate"]) == 2
    assert message in capsys.readouterr().err


def test_validate_never_hashes_a_huge_photo_whole(project, capsys):
    recipe = recipe_with()
    recipe["concepts"]["cat"]["images"] = ["photos/*.png"]
    write_recipe(project, recipe)
    (project / "photos").mkdir()
    with open(project / "photos/huge.png", "wb") as sparse:
        sparse.truncate(20 * 2**30)  # 20 GiB, sparse: no disk used
    started = time.perf_counter()
    assert cli.main(["validate"]) == 2
    assert time.perf_counter() - started < 5.0
    assert "huge.png has 20.0 GiB; valid: image files up to 1 GiB" in capsys.readouterr().err


# Done when: a build against the hostile server accounts for every item, in bounded memory.

def hostile_reply(count: int):
    """Request `count`'s answer: a bomb, a drip, HTML, invalid UTF-8 or a 500, in turn."""
    kind = count % 5
    if kind == 0:
        return 200, {**JSON, "Content-Encoding": "gzip, gzip"}, bomb(1024), 0
    if kind == 1:
        return 200, JSON, completion(good_reply("- cat\n- mug")), 0.3
    if kind == 2:
        return 200, {"Content-Type": "text/html"}, b"<html>" + b"<p>busy</p>" * 1000 + b"</html>", 0
    if kind == 3:
        return 200, JSON, b'{"choices": [{"message": {"content": "\xff\xfe"}}]}', 0
    return 500, JSON, b'{"error": {"message": "down"}}', 0


def test_a_build_against_a_hostile_server_accounts_for_every_item(project, secrets):
    from tests.test_security import write_plan_inputs

    with RawServer(hostile_reply, max_drip=100) as server:
        write_recipe(project, recipe_with(backends={"plan": {"name": "openai", "base_url": server.url, "timeout": 1.0,
                                                             "max_retries": 1, "max_attempts": 2}}))
        write_plan_inputs(project)
        measure = ("import resource, subprocess, sys; done = subprocess.run([sys.executable, '-m', 'stages.plan']); "
                   "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        result = run_tool(project, "python", "-c", measure)
    code, kib = map(int, result.stdout.split())
    report = json.loads((project / "reports/plan.json").read_text())
    items = len(json.loads((project / "build/compiled/plan.json").read_text())["items"])
    assert code == 0 and "Traceback" not in result.stderr, result.stderr
    assert report["items"] == items == 10 and report["computed"] + report["failed"] == items
    assert all(reason for reason in report["failures"].values())
    assert kib < 1024 * 1024, f"peak RSS {kib} KiB"
    print(f"plan against the hostile server: {report['failed']} of {items} failed, peak RSS {kib / 1024:.0f} MiB, "
          f"{report['seconds']} s")


def test_a_captioning_build_against_a_hostile_server_reports_every_reason(project, secrets):
    from tests.conftest import build_in_process
    from tests.test_vlm_caption import remote, small_recipe

    bodies = [(200, {**JSON, "Content-Encoding": "gzip, gzip"}, bomb(256), 0),
              (200, {"Content-Type": "text/html"}, b"<html>busy</html>", 0),
              (200, JSON, b'{"choices": [{"message": {"content": "\xff\xfe"}}]}', 0)]
    with RawServer(lambda n: bodies[(n - 1) % 3]) as server:
        write_recipe(project, small_recipe(remote(server.url, concurrency=1, max_attempts=1), num_images=1))
        reports = build_in_process(project)
    caption = reports["caption"]
    assert caption["items"] == caption["failed"] + caption["computed"] + caption["reused"] + caption["skipped"]
    reasons = " ".join(caption["failures"].values())
    assert caption["failed"] == caption["items"] >= 2 and "Traceback" not in reasons
    assert "[reply_too_large]" in reasons and "not a JSON chat completion" in reasons


# Issue 35: nothing outside the project, no secret out, every input bounded.

def old_files(folder, *names, days=30):
    """Files under `folder` (a user's, not g4g's), `days` old."""
    long_ago = time.time() - days * 86400
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"the user's {name}")
        for node in (path, *path.relative_to(folder).parents):
            os.utime(folder / node, (long_ago, long_ago))
    return [folder / name for name in names]


USERS = ("llm/prompts/eval-set.json", "models/ab/abc123/w.bin", "extract/ab/abc123/w.bin")


@pytest.mark.parametrize("cache_dir", ["victim", "../victim", "link/cache"])
def test_35_1_params_yaml_cannot_point_the_cache_outside_the_project(project, tmp_path, capsys, cache_dir):
    victim = tmp_path / "victim"
    kept = old_files(victim, *USERS)
    if cache_dir == "victim":
        cache_dir = str(victim)  # absolute
    (project / "link").symlink_to(tmp_path)  # a committed link out of the clone
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["runtime"]["cache_dir"] = cache_dir
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    for argv in (["cache", "gc", "--keep-days", "0"], ["cache", "verify", "--repair"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "runtime.cache_dir" in err and "G4G_CACHE_DIR" in err and "Traceback" not in err
    assert all(path.is_file() for path in kept)


def test_35_1_gc_and_repair_act_only_in_a_cache_g4g_created(project, tmp_path, monkeypatch, capsys):
    victim = tmp_path / "victim"
    kept = old_files(victim, *USERS)
    monkeypatch.setenv("G4G_CACHE_DIR", str(victim))  # the builder's own mistake
    for argv in (["cache", "gc", "--keep-days", "0"], ["cache", "verify", "--repair"], ["cache", "stats"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "not an item cache g4g created (no CACHEDIR.TAG" in err and "nothing was changed" in err
    assert all(path.is_file() for path in kept)


def test_35_1_gc_removes_only_entries_of_g4gs_shape(project, reference_data, tmp_path, capsys):
    rgba(project / "photos/good.png")
    photo_recipe(project, reference_data)
    run_extract(project)
    cache = project / ".g4g/cache"
    assert (cache / "CACHEDIR.TAG").read_bytes().startswith(b"Signature: 8a477f597d28d172789f06886806bc55")
    (project / ".g4g/keys").rename(project / "keys.other")  # no entry is used by the last build
    foreign = old_files(cache, "llm/prompts/eval-set.json", "models/ab/abc123/w.bin", "extract/ab/abc123/w.bin",
                        "extract/zz", "llm/ab/notakey.json")
    (tmp_path / "outside").mkdir()
    (cache / "compose").symlink_to(tmp_path / "outside")
    old_files(tmp_path / "outside", "ab/abababababababababab/record.json")
    entries = sorted(p for p in cache.glob("extract/*/*") if len(p.name) == 20)
    for path in cache.rglob("*"):
        os.utime(path, (0, 0), follow_symlinks=False)
    assert cli.main(["cache", "verify", "--repair"]) == 0
    assert cli.main(["cache", "gc", "--keep-days", "0"]) == 0
    out, err = capsys.readouterr()
    assert "removed 3 entries" in out and "left alone" in err and "models" in err and "Traceback" not in err
    assert len(entries) == 3 and not any(path.exists() for path in entries)
    assert all(path.is_file() for path in foreign)
    assert (tmp_path / "outside/ab/abababababababababab/record.json").is_file()


@pytest.mark.parametrize(("template", "message"), [
    ("view: [0, 0, 0.0001, 0.0001]", "scene.view: [0.0, 0.0, 0.0001, 0.0001]; [x, y, w, h] of a region inside "
                                      "the photo, as fractions (0-1), w and h at least 0.05"),
    ("camera_height_cm: 5e-324", "scene.camera_height_cm: 5e-324; valid: 1 to 100000"),
    ("camera_height_cm: .nan", "scene.camera_height_cm: nan; valid: 1 to 100000"),
    ("surfaces: {seat: {polygon: [[0, .6], [1, .6], [1, .7]], height_cm: 149.9999, max_size_cm: 40}}",
     "scene.surfaces.seat.height_cm: 149.9999; above the ground and at least 1 cm below the camera"),
    ("surfaces: {seat: {polygon: 3, height_cm: 1, max_size_cm: 2}}", "surfaces.seat.polygon: Invalid value"),
    ("ground: [[0, 0.5], [1, 0.5]]", "scene.ground: a polygon of at least 3 [x, y] points"),
    ("colour: red", "Key 'colour' not in 'Scene'; valid keys: horizon, camera_height_cm"),
    ("horizon: [", "not valid YAML"),
    ("horizon: '0.4'\ncamera_height_cm: {a: 1}", "camera_height_cm: Value '{'a': 1}' of type 'DictConfig' could not be converted to Float"),
])
def test_35_7_scene_template_files_are_checked_like_recipes(tmp_path, monkeypatch, capsys, template, message):
    monkeypatch.chdir(tmp_path)  # outside any project: a template file needs none
    lines = {"horizon": "horizon: 0.4", "camera_height_cm": "camera_height_cm: 150",
             "ground": "ground: [[0, 0.5], [1, 0.5], [1, 1]]"}
    for line in template.splitlines():
        lines[line.split(":")[0]] = line
    (tmp_path / "t.yaml").write_text("\n".join(lines.values()) + "\n")
    scene_photo(tmp_path / "bg.jpg")
    assert cli.main(["scene", "bg.jpg", "--template", "t.yaml", "-o", "out.png"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: t.yaml") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out.png").exists()


def scene_photo(path):
    from PIL import Image

    Image.new("RGB", (64, 48), (90, 140, 60)).save(path)


def test_35_7_a_valid_template_file_draws_and_an_alias_bomb_is_refused(tmp_path, monkeypatch, capsys):
    import resource

    monkeypatch.chdir(tmp_path)
    scene_photo(tmp_path / "bg.jpg")
    (tmp_path / "t.yaml").write_text("scene:\n  horizon: 0.4\n  camera_height_cm: 150\n"
                                     "  ground: [[0, 0.5], [1, 0.5], [1, 1]]\n")
    assert cli.main(["scene", "bg.jpg", "--template", "t.yaml", "-o", "out.png"]) == 0
    assert (tmp_path / "out.png").read_bytes().startswith(b"\x89PNG")
    levels = ["a: &a [" + ", ".join(['"lol"'] * 9) + "]"]
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]
    bomb_text = "horizon: 0.4\ncamera_height_cm: 150\nground: [[0, 0.5], [1, 0.5], [1, 1]]\nforbidden:\n" \
        + "\n".join("  - {polygon: [[0, 0], [1, 0], [1, 1]], front: 1}" for _ in range(1)) + "\n" + "\n".join(levels) + "\n"
    (tmp_path / "bomb.yaml").write_text(bomb_text)
    assert len(bomb_text) < 700
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    assert cli.main(["scene", "bg.jpg", "--template", "bomb.yaml", "-o", "bomb.png"]) == 2
    assert time.perf_counter() - started < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB
    assert "bomb.yaml: its aliases expand to more than 100,000 values" in capsys.readouterr().err


def test_35_2_g4g_scene_replaces_a_link_at_its_output_never_writes_through_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    scene_photo(tmp_path / "photos/garden2.jpg")
    (tmp_path / "victim.txt").write_text("the user's file")
    (tmp_path / ".g4g/previews").mkdir(parents=True)
    (tmp_path / ".g4g/previews/garden2.scene.png").symlink_to(tmp_path / "victim.txt")  # left by someone
    assert cli.main(["scene", "photos/garden2.jpg"]) == 0
    assert (tmp_path / "victim.txt").read_text() == "the user's file"
    assert not (tmp_path / ".g4g/previews/garden2.scene.png").is_symlink()
    assert (tmp_path / ".g4g/previews/garden2.scene.png").read_bytes().startswith(b"\x89PNG")


KEY = "builder-key-9876543210"  # the `secrets` fixture's key for the loopback endpoint
SOFT = KEY[:7] + "\u00ad" + KEY[7:]  # a soft hyphen inside: invisible, and not the key to a plain replace


def shows_key(text: str) -> bool:
    """Whether `text` shows the key, in any case, with format characters or their escapes."""
    folded = text.lower()
    for hidden in ("\u00ad", "\\xad", "\\u00ad", "\u200d", "\\u200d"):
        folded = folded.replace(hidden, "")
    return KEY in folded


@pytest.mark.parametrize(("status", "headers"), [
    (200, {"Content-Type": f"text/html; charset={KEY.upper()}"}),
    (200, {"Content-Type": f"text/plain; echo={SOFT}"}),
    (200, {"Content-Type": "application/json", "Content-Encoding": f"x-{KEY.upper()}"}),
    (200, {"Content-Type": "application/json", "Content-Encoding": f"x-{SOFT}"}),
    (401, {"Content-Type": f"text/plain; k={SOFT}"}),
])
def test_35_3_the_key_is_masked_in_headers_reason_and_body(project, secrets, tmp_path, caplog, status, headers):
    import logging

    from tests.test_security import assert_not_leaked

    caplog.set_level(logging.INFO)  # what the HTTP libraries log (httpx: the reason phrase), too
    body = f"<html>echo {SOFT} and {KEY.upper()}</html>".encode()
    with RawServer(lambda n: (status, headers, body, 0), reason=f"Denied {SOFT}") as server:
        layout, _ = plan_once(server.url, project, tmp_path, max_attempts=1)
    assert isinstance(layout, ItemError) and ("<api key>" in str(layout) or status != 200), layout
    assert not shows_key(str(layout)) and not shows_key(caplog.text)
    assert "Denied <api key>" in caplog.text or "Content-Encoding" in headers  # raised before httpx logs
    assert_not_leaked(project, secret=KEY)
    assert_not_leaked(tmp_path / "cache", secret=KEY)


def test_35_4_retry_after_waits_no_longer_than_the_request_may_take(project, secrets, tmp_path):
    answers = [(429, {**JSON, "Retry-After": "60"}, b'{"error": {"message": "slow down"}}', 0),
               (503, {**JSON, "Retry-After-Ms": "60000"}, b'{"error": {"message": "busy"}}', 0),
               (200, JSON, completion(good_reply("- cat\n- mug")), 0)]
    with RawServer(lambda n: answers[min(n, 3) - 1]) as server:
        params = openai_planner.Params(base_url=server.url, model="m", max_retries=2, timeout=1.0)
        planner = openai_planner.Backend(params, templates_dir=str(REPO / "templates"),
                                         cache_dir=str(tmp_path / "cache"), root=str(project))
        started = time.perf_counter()
        layout = planner.plan_batch([layout_request()])[0]
        seconds = time.perf_counter() - started
    assert not isinstance(layout, ItemError), layout
    assert server.requests >= 3 and seconds < 6.0, seconds


@pytest.mark.parametrize(("backend", "option", "value", "valid"), [
    ("plan", "max_attempts", 100_000, "max_attempts 100000: valid 1-10"),
    ("plan", "max_tokens", 10**9, "max_tokens 1000000000: valid 1-8192"),
    ("caption", "max_attempts", 1000, "max_attempts 1000: valid 1-10"),
    ("caption", "max_tokens", 0, "max_tokens 0: valid 1-8192"),
])
def test_35_4_attempts_and_tokens_have_named_ranges(project, capsys, backend, option, value, valid):
    from stages.backends.caption import vlm_openai

    module = openai_planner if backend == "plan" else vlm_openai
    with pytest.raises(ValueError, match=valid):
        module.Params(**{option: value})
    name = "openai" if backend == "plan" else "vlm-openai"
    write_recipe(project, recipe_with(backends={backend: {"name": name, option: value}}))
    assert cli.main(["validate"]) == 2
    err = capsys.readouterr().err
    assert f"backends.{backend}.{option}" in err or valid in err, err


def provenance_of(key: str) -> dict:
    """The fields of a sample's JSON that the card and diff read, as pack writes them."""
    cutout = {"id": "cat/chelsea", "source": None, "sha256": "0" * 64, "box_in_source": [0, 0, 8, 8], "key": "k"}
    return {"key": key, "composition": "cat_mug", "index": 0, "seed": 1, "canvas": [64, 64], "recipe": {"name": "h"},
            "concepts": [{"id": "cat", "box": [4, 8, 30, 40], "cutout": cutout, "visible": 1.0, "mask": {}}],
            "background": {"id": "garden"}, "captions": {"short": "a cat", "detailed": "a cat on the grass"},
            "score": {"keep": True, "metrics": {}, "concepts": [{"id": "cat", "visible": 1.0}]},
            "backends": {}, "software": {}, "item_keys": {"plan": "p"}}


def jpeg(colour=(200, 30, 30)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` pixels (its header only: opening it costs nothing)."""
    import struct

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def add(tar, name: str, data: bytes = b"", kind: bytes = b"0", link: str = "") -> None:
    import io
    import tarfile

    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == b"0" else 0
    tar.addfile(info, io.BytesIO(data) if kind == b"0" else None)


def hostile_dataset(root, shard_members=None, manifest_shard="cat_mug-000000.tar"):
    """A packed dataset folder in `root`: one good sample (cat_mug-00000) in a shard, plus the
    members `shard_members(tar)` adds."""
    import tarfile

    dataset = root / "dataset"
    dataset.mkdir(parents=True)
    recipe = {"name": "h", "key": "k", "recipe": {"compositions": {"cat_mug": {"concepts": ["cat", "mug"]}}},
              "backends": {}, "software": {}}
    (dataset / "recipe.json").write_text(json.dumps(recipe))
    with tarfile.open(dataset / "cat_mug-000000.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        add(tar, "cat_mug-00000.jpg", jpeg())
        add(tar, "cat_mug-00000.json", json.dumps(provenance_of("cat_mug-00000")).encode())
        add(tar, "cat_mug-00000.txt", b"a cat")
        if shard_members:
            shard_members(tar)
    (dataset / "manifest.jsonl").write_text(json.dumps({"key": "cat_mug-00000", "shard": manifest_shard}) + "\n")
    (dataset / "rejected.jsonl").write_text(json.dumps({"key": "cat_mug-00009", "stage": "score",
                                                        "reasons": ["too small"]}) + "\n")
    (dataset / "sizes.json").write_text(json.dumps({manifest_shard: 1}))
    return dataset


def hostile_members(tar) -> None:
    add(tar, "../../x.json", b"{}")
    add(tar, "/abs.json", b"{}")
    add(tar, "nodot", b"x")
    add(tar, "dog-00000.json", b"{}")
    add(tar, "cat_mug-00001.jpg", kind=tarfile_type("SYMTYPE"), link="/etc/passwd")
    add(tar, "cat_mug-00001.txt", kind=tarfile_type("LNKTYPE"), link="cat_mug-00000.txt")
    add(tar, "cat_mug-00002", kind=tarfile_type("DIRTYPE"))
    add(tar, "cat_mug-00003.json", b"[" * 200_000 + b"]" * 200_000)
    add(tar, "cat_mug-00004.json", b"[1, 2]")
    add(tar, "cat_mug-00005.jpg", png_header(20_000, 20_000))
    add(tar, "cat_mug-00005.json", json.dumps(provenance_of("cat_mug-00005")).encode())
    add(tar, "cat_mug-0000\x1b[31m6.json", b"{}")


def tarfile_type(name: str) -> bytes:
    import tarfile

    return getattr(tarfile, name)


def test_35_6_card_and_diff_skip_every_member_that_is_not_a_sample_naming_it(project, capsys):
    from compiler.diff.snapshot import workspace

    hostile_dataset(project, hostile_members)
    assert cli.main(["card"]) == 0
    err = capsys.readouterr().err
    for name in ("'../../x.json'", "'/abs.json'", "'nodot'", "'dog-00000.json'", "'cat_mug-00001.jpg': not a regular",
                 "'cat_mug-00001.txt': not a regular", "'cat_mug-00002': not a regular",
                 "'cat_mug-00003.json': not valid JSON", "'cat_mug-00004.json': not a JSON object",
                 "'cat_mug-0000\\x1b[31m6.json'"):
        assert name in err, name
    assert "\x1b" not in err and "Traceback" not in err
    page = (project / "dataset/card.html").read_text()
    assert 'alt="cat_mug-00000"' in page and 'alt="cat_mug-00005"' not in page
    assert "cat_mug-00005.jpg': over 89,478,485 pixels (Pillow's decompression-bomb limit)" in err
    snapshot = workspace(project)
    assert sorted(snapshot.samples) == ["cat_mug-00000", "cat_mug-00005"]  # 00005's JSON is fine, its image is not
    assert sorted(snapshot.images({"cat_mug-00000", "cat_mug-00005"})) == ["cat_mug-00000"]
    assert any("'../../x.json'" in problem for problem in snapshot.problems)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: (d / "manifest.jsonl").unlink(), "workspace: no manifest.jsonl in the dataset"),
    (lambda d: (d / "recipe.json").write_text("[1, 2]"), "workspace: recipe.json is not a JSON object"),
    (lambda d: (d / "recipe.json").write_text("[" * 100_000), "workspace: recipe.json is not valid JSON"),
    (lambda d: (d / "manifest.jsonl").write_text('{"key": "cat_mug-00000", "shard": "../../../../etc/passwd"}\n'),
     "manifest.jsonl names the shard '../../../../etc/passwd'; valid: a NAME.tar file inside the dataset folder"),
    (lambda d: (d / "manifest.jsonl").write_text("[1]\n"), "manifest.jsonl line 1 is not an object with key, shard"),
])
def test_35_6_a_damaged_dataset_is_one_line_for_diff_and_card(project, capsys, change, message):
    from compiler.diff.snapshot import DiffError, workspace

    change(hostile_dataset(project))
    with pytest.raises(DiffError) as error:
        workspace(project)
    assert message in str(error.value) and "\n" not in str(error.value)
    if "manifest" not in message:  # the card reads sizes.json, not the manifest
        assert cli.main(["card"]) == 2
        err = capsys.readouterr().err
        assert message.replace("workspace", "dataset") in err and len(err.splitlines()) == 1, err


def test_35_6_a_fifo_named_as_a_shard_does_not_hang(project):
    import subprocess
    import sys

    dataset = hostile_dataset(project, manifest_shard="cat_mug-000001.tar")
    os.mkfifo(dataset / "cat_mug-000001.tar")
    code = "from compiler.diff.snapshot import workspace; from pathlib import Path; workspace(Path('.'))"
    for argv in ([sys.executable, "-c", code], [sys.executable, "-m", "compiler.cli", "card"]):
        done = subprocess.run(argv, cwd=project, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert "cat_mug-000001.tar: not a regular file" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.returncode == 2


def test_35_4_a_sparse_6_gib_member_is_refused_by_its_declared_size(project, tmp_path):
    import shutil
    import subprocess

    if shutil.which("tar") is None:
        pytest.skip("GNU tar makes the sparse member")
    dataset = hostile_dataset(project)
    (tmp_path / "s").mkdir()
    with open(tmp_path / "s/cat_mug-00007.jpg", "wb") as sparse:
        sparse.truncate(6 * 2**30)
    subprocess.run(["tar", "--sparse", "--format=gnu", "-rf", str(dataset / "cat_mug-000000.tar"), "-C",
                    str(tmp_path / "s"), "cat_mug-00007.jpg"], check=True)
    assert (dataset / "cat_mug-000000.tar").stat().st_size < 200_000
    measure = ("import resource, subprocess, sys; done = subprocess.run([sys.executable, '-m', 'compiler.cli', 'card'],"
               " capture_output=True, text=True); print(done.returncode, resource.getrusage("
               "resource.RUSAGE_CHILDREN).ru_maxrss); print(done.stderr, file=sys.stderr)")
    started = time.perf_counter()
    result = run_tool(project, "python", "-c", measure, PYTHONPATH=str(REPO))
    code, kib = map(int, result.stdout.split())
    assert code == 0 and "cat_mug-00007.jpg': declares 6,442,450,944 bytes; valid: at most" in result.stderr
    assert kib < 400 * 1024 and time.perf_counter() - started < 30
    from compiler.diff.snapshot import workspace

    assert sorted(workspace(project).samples) == ["cat_mug-00000"]


COCO_INSTANCES = {"images": [{"id": 1, "width": 100, "height": 100}], "categories": [{"id": 3, "name": "cat"}],
                  "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 40, 40]},
                                  {"id": 2, "image_id": 1, "category_id": 3, "bbox": [50, 50, 40, 40]}]}
COCO_CAPTIONS = {"annotations": [{"id": 7, "image_id": 1, "caption": "two cats"}]}


def test_35_2_every_command_that_writes_replaces_a_link_at_its_output(project, monkeypatch, capsys):
    from PIL import Image

    from compiler import diff as diff_command
    from compiler.diff.snapshot import workspace

    hostile_dataset(project)
    photo = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
    photo.paste((200, 10, 10, 255), (20, 20, 70, 80))
    photo.save(project / "photo.png")
    (project / "i.json").write_text(json.dumps(COCO_INSTANCES))
    (project / "c.json").write_text(json.dumps(COCO_CAPTIONS))
    # no git history needed here
    monkeypatch.setattr(diff_command, "_side", lambda root, rev, verify: workspace(root, verify))
    (project / ".g4g/previews").mkdir(parents=True, exist_ok=True)
    commands = {".g4g/previews/photo.scene.png": ["scene", "photo.png"], "scene.png": ["scene", "photo.png", "-o", "scene.png"],
                "cut.png": ["extract", "photo.png", "-o", "cut.png", "--backend", "alpha"],
                "examples.jsonl": ["import-coco", "i.json", "c.json", "-o", "examples.jsonl"],
                "card.html": ["card", "-o", "card.html"], "dataset/card.html": ["card"],
                "diff.html": ["diff", "--html", "diff.html"]}
    for output, argv in commands.items():
        victim = project / f"victim-{Path(output).name}"
        victim.write_text("the user's file")
        (project / output).symlink_to(victim)
        assert cli.main(argv) == 0, capsys.readouterr().err
        assert victim.read_text() == "the user's file", output
        assert (project / output).is_file() and not (project / output).is_symlink(), output
    assert json.loads((project / "examples.jsonl").read_text())["caption"] == "two cats"


@pytest.mark.parametrize(("argv", "message"), [
    (["extract", "photo.png", "-o", "x.png", "--backend", "nope"], "--backend 'nope'; valid: alpha, u2netp"),
    (["extract", "photo.png", "-o", "x.txt", "--backend", "alpha"], "x.txt: valid: a .png or .webp path"),
    (["import-coco", "missing.json", "c.json", "-o", "o.jsonl"], "missing.json: not a file; valid: COCO's"),
    (["import-coco", "empty.json", "c.json", "-o", "o.jsonl"], "not COCO instances and captions annotations"),
    (["import-coco", "list.json", "list.json", "-o", "o.jsonl"], "not COCO instances and captions annotations"),
    (["import-coco", "deep.json", "deep.json", "-o", "o.jsonl"], "not COCO instances and captions annotations"),
    (["table", "--json", "list.json"], "list.json: not a saved `dvc exp show --json` output"),
    (["table", "--json", "empty.json"], "empty.json: not a saved `dvc exp show --json` output"),
    (["validate"], "not a g4g project (no params.yaml and recipes/ here); run `g4g validate`"),
    (["scene", "photo.png", "--template", "bench"], "--template bench: not a .yaml file, and"),
    (["card"], "dataset: no recipe.json in the dataset"),
])
def test_35_8_bad_arguments_and_no_project_are_one_line_errors(tmp_path, monkeypatch, capsys, argv, message):
    from PIL import Image

    monkeypatch.chdir(tmp_path)  # no project here
    Image.new("RGB", (64, 64)).save(tmp_path / "photo.png")
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "deep.json").write_text("[" * 100_000)
    (tmp_path / "c.json").write_text(json.dumps(COCO_CAPTIONS))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "x.png").exists()


def test_35_8_sample_without_the_models_extra_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if the `models` extra were not installed
    assert cli.main(["sample", "trained/cat_mug", "a <cat1>", "-o", "out"]) == 2
    assert "diffusers is not installed here: pip install -e '.[models]'" in capsys.readouterr().err


def test_35_8_diff_html_into_a_file_it_cannot_write_is_one_line(project, monkeypatch, capsys):
    from compiler import diff as diff_command
    from compiler.diff.snapshot import workspace

    hostile_dataset(project)
    monkeypatch.setattr(diff_command, "_side", lambda root, rev, verify: workspace(root, verify))
    assert cli.main(["diff", "--html", "/proc/self/status"]) == 2
    *notes, error = capsys.readouterr().err.splitlines()  # notes: this manifest has no member digests
    assert error.startswith("error: /proc/self/status: cannot write the page there")
    assert not any(line.startswith("error") or "Traceback" in line for line in notes), notes


# --- Issue 35, items 5 and 8 (export): the export folder is swapped in whole, never through a
# --- link or over files g4g did not write; its bad arguments are one-line errors.

def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("items", "message"), [
    (None, "build/compiled/train.json: not found; build first"),  # export before a build
    ("missing.json", "missing.json: not found"),
    ("{", "bad.json: cannot read it as the compiled training items"),
    ("[1, 2]", "bad.json: not the compiled training items"),
    ('{"backend": {"name": "lora"}, "items": []}', "bad.json: not the compiled training items"),
    ('{"backend": {"name": "lora", "params": {}}, "strategy": {}, "items": [7]}', "not the compiled training items"),
])
def test_export_items_missing_or_malformed_are_one_line_errors(project, capsys, items, message):
    argv = ["export", "diffusers"]
    if items == "missing.json":
        argv += ["--items", "missing.json"]
    elif items is not None:
        (project / "bad.json").write_text(items)
        argv += ["--items", "bad.json"]
    assert cli.main(argv) == 2
    assert message in one_line_error(capsys)
    assert not (project / "export").exists()


@pytest.mark.parametrize("kind", ["device", "file", "link", "under a file", "the project"])
def test_export_to_a_device_file_or_link_is_refused_and_left_alone(project, capsys, kind, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    target = {"device": "/dev/null", "file": "out", "link": "out", "under a file": "out/x", "the project": ".."}[kind]
    if kind in ("file", "under a file"):
        (project / "out").write_text("mine")
    elif kind == "link":
        (project / "out").symlink_to(victim)
    assert cli.main(["export", "imagefolder", "-o", target, "--force"]) == 2
    assert f"-o {target}: " in one_line_error(capsys)
    assert (victim / "keep.txt").read_text() == "mine" and sorted(p.name for p in victim.iterdir()) == ["keep.txt"]
    assert kind != "file" or (project / "out").read_text() == "mine"


def test_export_refuses_a_folder_it_did_not_write_unless_forced(project, capsys):
    from stages import export

    (project / "mine").mkdir()
    (project / "mine" / "notes.txt").write_text("mine")
    assert cli.main(["export", "imagefolder", "-o", "mine"]) == 2
    assert "holds files g4g export did not write (no .g4g-export); it would replace them all: pass --force" in \
        one_line_error(capsys)
    assert (project / "mine" / "notes.txt").read_text() == "mine"
    export.check_destination(project / "mine", force=True)  # --force: allowed, and replaced whole
    export.write_export(project / "mine", {"cat_mug": {"train/a.png": b"png"}}, "imagefolder")
    assert sorted(p.relative_to(project / "mine").as_posix() for p in (project / "mine").rglob("*")) == [
        ".g4g-export", "cat_mug", "cat_mug/train", "cat_mug/train/a.png"]
    export.check_destination(project / "mine", force=False)  # now it is ours: replaced without --force
    (project / "empty").mkdir()
    export.check_destination(project / "empty", force=False)  # an empty folder holds nothing to lose


def test_a_failed_export_leaves_the_last_one_and_nothing_partial(project, monkeypatch, tmp_path):
    from base import files
    from stages import export

    out = project / "export" / "diffusers"
    export.write_export(out, {"cat_mug": {"concept_list.json": b"[]\n"}}, "diffusers")
    victim = tmp_path / "victim"
    victim.mkdir()
    (out / "cat_mug_plant").symlink_to(victim)  # a composition path that is a link: replaced, never followed
    written = []

    def failing(path, data):
        if len(written) == 2:
            raise files.DiskFull(f"no space left on the device while writing {path}")
        written.append(path)
        return real(path, data)

    real = files.atomic_write_bytes
    monkeypatch.setattr(files, "atomic_write_bytes", failing)
    with pytest.raises(files.DiskFull):
        export.write_export(out, {"cat_mug": {"a.png": b"1", "b.png": b"2"}}, "diffusers")
    assert sorted(p.name for p in out.parent.iterdir()) == ["diffusers"]  # no hidden .partial
    assert (out / "cat_mug" / "concept_list.json").read_bytes() == b"[]\n"
    monkeypatch.setattr(files, "atomic_write_bytes", real)
    export.write_export(out, {"cat_mug": {"a.png": b"1"}, "cat_mug_plant": {"b.png": b"2"}}, "diffusers")
    assert not (out / "cat_mug_plant").is_symlink() and (out / "cat_mug_plant" / "b.png").read_bytes() == b"2"
    assert list(victim.iterdir()) == [] and sorted(p.name for p in out.parent.iterdir()) == ["diffusers"]


def test_35_6_training_and_export_read_shards_through_the_bounded_reader(project, tmp_path):
    """`train` and `g4g export` read a shard as card and diff do: a good shard gives its samples
    with their provenance; members that are not samples, bombs and deep JSON are one error
    naming them, never read whole, never a traceback."""
    import tarfile

    from stages.train import read_samples

    good = hostile_dataset(tmp_path / "good")
    (sample,) = read_samples(good / "cat_mug-000000.tar", {"cat_mug"})
    assert sample["meta"]["key"] == "cat_mug-00000" and sample["txt"] == b"a cat" and sample["jpg"][:2] == b"\xff\xd8"

    bad = hostile_dataset(tmp_path / "bad", hostile_members)
    with pytest.raises(ItemError) as raised:
        read_samples(bad / "cat_mug-000000.tar", {"cat_mug"})
    message = str(raised.value)
    assert re.match(r"\d+ damaged or unexpected members: dataset: cat_mug-000000.tar: '\.\./\.\./x\.json'", message)
    assert "\x1b" not in message and "\n" not in message
    with tarfile.open(good / "cat_mug-000000.tar", "a") as tar:
        info = tarfile.TarInfo("cat_mug-00008.jpg")
        info.size = 6 * 2**30  # declared, never read: refused by its size before any byte is read
        tar.addfile(info)
    with pytest.raises(ItemError, match="cat_mug-00008.jpg': declares 6,442,450,944 bytes"):
        read_samples(good / "cat_mug-000000.tar", {"cat_mug"})
