"""`g4g cache verify | gc | stats` on a real build."""

from __future__ import annotations

import os
import time

from tests.conftest import build_in_process, run_tool

CACHE = ".g4g/cache"


def entries(root, stage):
    return sorted((root / CACHE / stage).glob("*/*"))


def entry_files(root, stage):
    return sorted(p for p in (root / CACHE / stage).glob("*/*/*") if p.name != "record.json")


def test_verify_lists_damage_and_repair_removes_it(project):
    build_in_process(project)
    clean = run_tool(project, "g4g", "cache", "verify")
    assert "0 damaged" in clean.stdout
    damaged = entry_files(project, "compose")[0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    found = run_tool(project, "g4g", "cache", "verify", check=False)
    assert found.returncode == 1 and f"damaged compose/{damaged.parent.name}" in found.stdout
    assert "--repair" in found.stdout
    run_tool(project, "g4g", "cache", "verify", "--repair")
    assert not damaged.parent.exists()
    assert "0 damaged" in run_tool(project, "g4g", "cache", "verify").stdout
    assert build_in_process(project)["compose"]["computed"] == 1


def test_gc_keeps_what_the_last_build_used_and_drops_old_unused_entries(project):
    build_in_process(project)
    recipe = project / "recipes/tiny.yaml"
    recipe.write_text(recipe.read_text().replace("num_images: 6", "num_images: 3"))
    build_in_process(project)  # cat_mug-00003..5 are no longer used
    assert len(entries(project, "compose")) == 10
    long_ago = time.time() - 30 * 86400
    for folder in (project / CACHE).glob("*/*/*"):
        os.utime(folder, (long_ago, long_ago))

    # 3 images x (plan, compose, caption, score), and 2 shards: cat_mug-000004 is gone and
    # cat_mug-000001 lost a sample (its new version is a new entry)
    assert run_tool(project, "g4g", "cache", "gc", "--dry-run").stdout.startswith("would remove 14 entries")
    assert len(entries(project, "compose")) == 10
    assert run_tool(project, "g4g", "cache", "gc").stdout.startswith("removed ")
    assert len(entries(project, "compose")) == 7  # the images of this build
    reports = build_in_process(project)  # nothing the build uses was removed
    assert all(reports[stage]["computed"] == 0 for stage in ("extract", "plan", "compose", "caption", "score"))


def test_gc_keeps_recent_unused_entries(project):
    build_in_process(project)
    recipe = project / "recipes/tiny.yaml"
    recipe.write_text(recipe.read_text().replace("num_images: 6", "num_images: 3"))
    build_in_process(project)
    assert run_tool(project, "g4g", "cache", "gc").stdout.startswith("removed 0 entries")
    assert len(entries(project, "compose")) == 10


def test_stats_counts_entries_and_bytes_per_stage(project):
    build_in_process(project)
    lines = {line.split()[0]: line.split() for line in run_tool(project, "g4g", "cache", "stats").stdout.splitlines()}
    shards = len(list((project / "dataset").glob("*.tar")))
    assert lines["compose"][1] == "10" and lines["extract"][1] == "4" and lines["pack"][1] == str(shards)
    assert float(lines["total"][3]) > float(lines["compose"][3]) > 0
