"""End to end through `dvc repro` in a temporary git repository, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.conftest import build_in_process, dataset_bytes, run_tool


def reports(root: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in (root / "reports").glob("*.json")}


def test_repro_then_edit_one_composition_recomputes_only_its_items(dvc_project):
    run_tool(dvc_project, "dvc", "repro")
    first, built = reports(dvc_project), dataset_bytes(dvc_project)
    assert first["compose"]["computed"] == 10 and first["pack"]["packed"] > 0
    assert run_tool(dvc_project, "dvc", "status").stdout.split() == ["compile:", "always", "changed"]

    untouched = {name: data for name, data in dataset_bytes(dvc_project).items() if name.startswith("cat_mug_plant-")}
    assert untouched

    recipe_file = dvc_project / "recipes/tiny.yaml"
    recipe = yaml.safe_load(recipe_file.read_text())
    recipe["compositions"]["cat_mug"]["num_images"] = 8
    recipe_file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    log = run_tool(dvc_project, "dvc", "repro").stdout
    assert "Stage 'extract' didn't change" in log
    second = reports(dvc_project)
    assert second["compose"]["computed"] == 2 and second["compose"]["reused"] == 10
    assert second["plan"]["computed"] == 2 and second["caption"]["computed"] == 2
    assert second["pack"]["items"] == 12
    # Two samples added at the end of cat_mug: its last shard and at most one new one are written;
    # every other shard (cat_mug_plant's too) is reused.
    assert second["pack"]["computed"] <= 2 and second["pack"]["reused"] == second["pack"]["shards"] - second["pack"]["computed"]
    after = dataset_bytes(dvc_project)
    assert all(after[name] == data for name, data in untouched.items())  # other compositions' shards: same bytes

    # Back: DVC restores plan from its run cache; compose, whose folder DVC does not cache, runs
    # and finds every item in its last run; the dataset is the first build's, byte for byte.
    recipe["compositions"]["cat_mug"]["num_images"] = 6
    recipe_file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert "is cached - skipping run" in run_tool(dvc_project, "dvc", "repro").stdout
    assert reports(dvc_project)["compose"]["computed"] == 0
    why = run_tool(dvc_project, "g4g", "explain", "cat_mug-00001").stdout
    assert "plan: restored from DVC's run cache" in why and "compose cat_mug-00001: recomputed" not in why
    assert dataset_bytes(dvc_project) == built


def test_recipe_typo_fails_naming_file_and_key_and_keeps_outputs(dvc_project):
    run_tool(dvc_project, "dvc", "repro")
    before = dataset_bytes(dvc_project)
    recipe_file = dvc_project / "recipes/tiny.yaml"
    recipe_file.write_text(recipe_file.read_text().replace("num_images: 6", "num_imagse: 6"))
    result = run_tool(dvc_project, "dvc", "repro", check=False)
    assert result.returncode != 0
    assert "recipes/tiny.yaml: compositions.cat_mug.num_imagse: Key 'num_imagse' not in 'Composition'" in result.stderr
    assert dataset_bytes(dvc_project) == before


def test_killed_build_reruns_to_the_same_result(dvc_project, tmp_path, monkeypatch):
    recipe_file = dvc_project / "recipes/tiny.yaml"
    recipe = yaml.safe_load(recipe_file.read_text())
    recipe["output"]["resolution"] = 512
    recipe["compositions"]["cat_mug"]["num_images"] = 40
    recipe_file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "G4G_WORKERS": "1", "G4G_BATCH_SIZE": "1"}
    build = subprocess.Popen(["dvc", "repro"], cwd=dvc_project, env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    compose_cache = dvc_project / ".g4g/cache/compose"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(compose_cache.glob("*/*"))) < 5:
        time.sleep(0.05)
    os.killpg(build.pid, signal.SIGKILL)
    build.wait()
    assert 5 <= len(list(compose_cache.glob("*/*"))) < 44, "the kill should land inside the compose stage"

    run_tool(dvc_project, "dvc", "repro")
    resumed = reports(dvc_project)
    assert resumed["compose"]["reused"] >= 5
    interrupted_result = dataset_bytes(dvc_project)

    monkeypatch.setenv("G4G_CACHE_DIR", str(tmp_path / "clean-cache"))
    reference = build_in_process(dvc_project)
    assert reference["compose"]["reused"] == 0
    assert dataset_bytes(dvc_project) == interrupted_result
