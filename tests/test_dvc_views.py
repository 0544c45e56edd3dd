"""DVC as its users know it, on the tiny recipe: a rebuild leaves git clean, the recipe is
params (`dvc params diff`, `dvc exp run -S recipes/<recipe>.yaml:KEY=VALUE`), and `dvc plots` pages render without errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_tool

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
CHROMIUM = Path("/usr/bin/chromium")
# DVC's pages load vega from a CDN, which tests cannot reach: a stand-in vegaEmbed checks each
# chart's target element and spec, so the page's own scripts (ids, titles, data) run for real.
VEGA_EMBED = """window.embedded = [];
window.vegaEmbed = function (target, spec) {
  if (!document.querySelector(target)) { throw new Error("no element " + target); }
  if (!spec || typeof spec !== "object") { throw new Error("no spec for " + target); }
  window.embedded.push(target);
  return Promise.resolve({});
};"""


def commit(root: Path, message: str) -> None:
    run_tool(root, "git", "add", "-A")
    run_tool(root, "git", "commit", "-qm", message, **GIT_ENV)


@pytest.fixture
def built(dvc_project: Path) -> Path:
    """The tiny project, built and committed."""
    run_tool(dvc_project, "dvc", "repro")
    commit(dvc_project, "tiny")
    return dvc_project


@pytest.mark.slow
def test_rebuild_leaves_git_clean_and_metrics_hold_results(built):
    run_tool(built, "dvc", "repro")
    assert run_tool(built, "git", "status", "--porcelain").stdout == ""
    metrics = json.loads(run_tool(built, "dvc", "metrics", "show", "--json").stdout)
    files = set(metrics[""]["data"]) if "" in metrics else set(next(iter(metrics.values()))["data"])
    assert files == {"metrics/dataset.json", "metrics/evaluate.json"}
    dataset = json.loads((built / "metrics/dataset.json").read_text())
    assert dataset["samples"] == 10 and dataset["keep_rate"]["<=3"]["paper"] == 0.53
    assert "seconds" not in json.dumps(dataset) and run_tool(built, "git", "ls-files", "reports").stdout == "reports/.gitignore\n"
    assert "compose" in run_tool(built, "g4g", "report").stdout  # the run logs are still there


@pytest.mark.slow
def test_recipe_edits_are_params_and_experiments_combine_overrides(built):
    recipe_file = built / "recipes/tiny.yaml"
    recipe = yaml.safe_load(recipe_file.read_text())
    recipe["compositions"]["cat_mug"]["num_images"] = 7
    recipe_file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    diff = run_tool(built, "dvc", "params", "diff").stdout
    assert "recipes/tiny.yaml" in diff and "compositions.cat_mug.num_images" in diff and "6" in diff and "7" in diff
    run_tool(built, "git", "checkout", "recipes/tiny.yaml")

    run_tool(built, "dvc", "exp", "run", "-S", "recipes/tiny.yaml:compositions.cat_mug.num_images=8",
             "-S", "recipes/tiny.yaml:++backends.plan.max_overlap=0.1")
    changed = json.loads(run_tool(built, "dvc", "params", "diff", "--json").stdout)["recipes/tiny.yaml"]
    assert {k: changed["compositions.cat_mug.num_images"][k] for k in ("old", "new")} == {"old": 6, "new": 8}
    assert changed["backends.plan.max_overlap"]["new"] == 0.1
    assert json.loads((built / "build/compiled/plan.json").read_text())["backend"]["params"]["max_overlap"] == 0.1
    assert json.loads((built / "metrics/dataset.json").read_text())["samples"] == 12
    log = run_tool(built, "dvc", "repro").stdout  # dvc repro builds what the experiment built
    assert "Stage 'compose' didn't change" in log and "Stage 'pack' didn't change" in log


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed (`apt-get install -y chromium`)")
def test_dvc_plots_render_in_chromium_without_errors(built, tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    run_tool(built, "dvc", "exp", "run", "-S", "recipes/tiny.yaml:compositions.cat_mug.num_images=8")
    pages = {}
    for name, command in (("show", ["show"]), ("diff", ["diff", "HEAD"])):
        shown = json.loads(run_tool(built, "dvc", "plots", *command, "--json").stdout)
        assert not shown.get("errors"), shown["errors"]  # nothing declared that the build did not make
        run_tool(built, "dvc", "plots", *command, "-o", str(tmp_path / name))
        pages[name] = tmp_path / name / "index.html"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            for name, page_file in pages.items():
                page = browser.new_page()
                page.route("https://cdn.jsdelivr.net/**", lambda route: route.fulfill(
                    content_type="text/javascript", body=VEGA_EMBED if "vega-embed" in route.request.url else ""))
                errors = []
                page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(page_file.as_uri(), wait_until="load")
                page.wait_for_timeout(500)
                assert errors == [], (name, errors)
                assert page.evaluate("window.embedded.length") >= 2, name  # keep rate, caption lengths
        finally:
            browser.close()
