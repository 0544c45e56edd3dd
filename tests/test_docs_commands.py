"""The commands in README.md and docs/*.md run as written.

The rule: every ```bash block of README.md and docs/*.md is a script. It runs as written in
`bash -e -o pipefail`, in the project's root, the blocks of one page in order on one copy of the
project, as a reader following that page would. A block that cannot run here says so with an
HTML comment on the line right before it, `<!-- not run: REASON -->`, REASON one of
NOT_RUN_REASONS. Other fenced blocks are not commands: YAML, Python, listings, and transcripts
(which start with `$ COMMAND`, followed by its output). A `dvc ...` or `g4g ...` line in one of
them that is not a transcript is an error, since nothing would ever run it.

The project the pages run on is this one with `recipes/demo.yaml` cut down to a tiny demo (the
same concepts, garden photos and groups; two compositions of a few images at 256 px), built and
committed twice on branch `main` (so `HEAD~1` is a built revision to compare with), the
virtualenv at `.venv` and the photos README's "Your first recipe" names in `photos/`. The pages
on training and evaluation (PRECONDITIONS) start from a copy that selects
`recipes/mycanvas.yaml`, the tiny demo with Custom Diffusion training and CLIP evaluation on
tiny random models, built and committed: the state those pages describe.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, THROUGHPUT_VARIABLES, copy_project, write_recipe
from tests.tiny_models import save_tiny_open_clip, save_tiny_owlvit, save_tiny_sd15

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_RUN_REASONS = {  # the only reasons a ```bash block may give for not running here
    "installs packages from PyPI",
    "needs a Ray cluster",
    "needs a GPU",
    "needs several GPUs",
}
PRECONDITIONS = {  # pages that start from the trained project, and what they assume
    "docs/evaluation.md": "a recipe with training and evaluation on (recipes/mycanvas.yaml) selected, built, committed",
    "docs/training.md": "a recipe with training on (recipes/mycanvas.yaml) selected, built, committed",
}
TABLE_WIDTH = 120  # `dvc exp show` of Table 1's experiments fits a terminal this wide
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "docs", "GIT_AUTHOR_EMAIL": "docs@example.com",
                "GIT_COMMITTER_NAME": "docs", "GIT_COMMITTER_EMAIL": "docs@example.com"}
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
NOT_RUN = re.compile(r"^\s*<!-- not run: (.+?) -->\s*$")
COMMAND_LINE = re.compile(r"^\s*(dvc|g4g)\s")


@dataclass
class Block:
    page: str
    line: int
    language: str
    text: str
    not_run: str | None


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a markdown page, with their indentation removed."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        indent = len(opening.group(1))
        marker = NOT_RUN.match(lines[index - 1]) if index else None
        found.append(Block(page.relative_to(REPO).as_posix(), index + 1, opening.group(2),
                           "\n".join(line[indent:] for line in lines[index + 1:end]) + "\n",
                           marker.group(1) if marker else None))
        index = end + 1
    return found


def scripts(page: Path) -> list[Block]:
    return [block for block in blocks(page) if block.language == "bash" and block.not_run is None]


RUN_PAGES = [page.relative_to(REPO).as_posix() for page in PAGES if scripts(page)]


def test_the_readme_is_short_and_links_every_docs_page():
    """A newcomer reads the README in minutes; everything else is one link away."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 300
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", readme))
    assert linked == {page.relative_to(REPO).as_posix() for page in PAGES[1:]}


def test_every_command_block_is_run_or_says_why_not():
    skipped = []
    for page in PAGES:
        for block in blocks(page):
            where = f"{block.page}:{block.line}"
            if block.language == "bash":
                assert block.not_run is None or block.not_run in NOT_RUN_REASONS, \
                    f"{where}: 'not run: {block.not_run}' is none of {sorted(NOT_RUN_REASONS)}"
                if block.not_run:
                    skipped.append(where)
            else:
                assert block.not_run is None, f"{where}: only ```bash blocks run; drop the 'not run' comment"
                transcript = block.text.lstrip().startswith("$ ")  # commands and their output
                commands = [line for line in block.text.splitlines() if COMMAND_LINE.match(line) and not transcript]
                assert not commands, f"{where}: commands in a ```{block.language} block never run: {commands}" \
                                     " (make it ```bash, or a transcript with `$ ` before each command)"
    assert skipped, "the Ray and multi-GPU examples are expected to be marked"
    assert set(PRECONDITIONS) <= set(RUN_PAGES)


# --- the project the pages run on ------------------------------------------------------------

def shell_environment(root: Path) -> dict[str, str]:
    """A reader's shell with the virtualenv activated; the stages and `g4g` run the copy's code."""
    environment = {key: value for key, value in os.environ.items() if key not in THROUGHPUT_VARIABLES}
    bin_dir = str(Path(sys.executable).parent)
    return {**environment, **GIT_IDENTITY, "PATH": f"{bin_dir}{os.pathsep}{environment['PATH']}",
            "PYTHONPATH": str(root), "DVC_NO_ANALYTICS": "1",
            "OMP_NUM_THREADS": "1"}  # tiny models run several times faster on one thread of a shared machine


def sh(root: Path, script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=root, capture_output=True, text=True,
                          env={**shell_environment(root), **env})


def must(root: Path, script: str) -> str:
    result = sh(root, script)
    assert result.returncode == 0, f"{script} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def tiny_demo() -> dict:
    """recipes/demo.yaml cut down: the same groups, two compositions of a few images at 256 px."""
    recipe = yaml.safe_load((REPO / "recipes/demo.yaml").read_text(encoding="utf-8"))
    recipe["compositions"] = {"cat_dog": {**recipe["compositions"]["cat_dog"], "num_images": 6},
                              "cat_dog_houseplant": {**recipe["compositions"]["cat_dog_houseplant"], "num_images": 4}}
    recipe["output"] = {**recipe["output"], "resolution": 256, "shard_size": 4}
    return recipe


def mycanvas(models: Path) -> dict:
    """The tiny demo's cat_dog with Custom Diffusion and the CLIP evaluation on tiny random models."""
    recipe = tiny_demo()
    recipe["name"] = "mycanvas"
    recipe["compositions"] = {"cat_dog": recipe["compositions"]["cat_dog"]}
    config, checkpoint = save_tiny_open_clip(models / "clip")
    recipe["backends"] = {
        "train": {"name": "custom-diffusion", "model": str(save_tiny_sd15(models / "sd15")), "resolution": 64,
                  "steps": 2, "batch_size": 2, "prior": {"source": "none"}},
        "evaluate": {"name": "clip", "detector": str(save_tiny_owlvit(models / "owlvit")), "embedder": "tiny-clip",
                     "embedder_weights": str(checkpoint), "embedder_config": str(config),
                     "detection_threshold": 0.0, "samples_per_prompt": 1, "steps": 2, "resolution": 64},
    }
    return recipe


def select(root: Path, recipe: str) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump({**params, "recipe": recipe}, sort_keys=False))


def photos(root: Path) -> None:
    """The photos README's first recipe names (photos/whiskers, photos/fern, photos/backgrounds)."""
    data = REPO / "data/gen4gen"
    for source, target in ((data / "sources/cat/cat_01.jpg", "whiskers/1.jpg"),
                           (data / "cutouts/houseplant/houseplant_01.png", "fern/1.png"),
                           (data / "backgrounds/garden/garden1.jpg", "backgrounds/garden.jpg")):
        (root / "photos" / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / "photos" / target)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The tiny demo, built and committed twice (HEAD~1, then another licence: pack runs again)."""
    root = copy_project(tmp_path_factory.mktemp("docs") / "demo")
    write_recipe(root, tiny_demo(), "demo")
    write_recipe(root, mycanvas(root.parent / "models"), "mycanvas")
    select(root, "demo")
    (root / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    must(root, "git init -q -b main && dvc init -q && dvc repro -q && git add -A && git commit -qm 'tiny demo'")
    recipe = tiny_demo()
    recipe["output"]["license"] = "cc-by-4.0"
    write_recipe(root, recipe, "demo")
    must(root, "dvc repro -q && git add -A && git commit -qm 'tiny demo: CC BY 4.0'")
    return root


@pytest.fixture(scope="module")
def trained(demo: Path, tmp_path_factory) -> Path:
    """The tiny demo with recipes/mycanvas.yaml selected, trained, evaluated and committed."""
    root = tmp_path_factory.mktemp("docs-trained") / "project"
    shutil.copytree(demo, root, symlinks=True)
    select(root, "mycanvas")
    must(root, "dvc repro -q && git add -A && git commit -qm 'mycanvas: train and evaluate'")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES)
def test_page_commands_run_as_written(page, request, tmp_path):
    start = request.getfixturevalue("trained" if page in PRECONDITIONS else "demo")
    root = tmp_path / "project"
    shutil.copytree(start, root, symlinks=True)
    photos(root)
    for block in scripts(REPO / page):
        result = sh(root, block.text)
        assert result.returncode == 0, (f"{page}:{block.line} exited {result.returncode}:\n{block.text}\n"
                                        f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}")
        for line in block.text.splitlines():
            if line.startswith("dvc exp show") and page == "docs/evaluation.md":
                table_fits(root, line.split("#")[0])


def table_fits(root: Path, command: str) -> None:
    """`dvc exp show` of Table 1's experiments, as wide as it wants to be, fits TABLE_WIDTH
    columns: no column collapsed (`…`), no line longer."""
    shown = sh(root, command, COLUMNS="1000").stdout
    width = max(len(line.rstrip()) for line in shown.splitlines())
    assert width <= TABLE_WIDTH and "…" not in shown, f"{command}: {width} columns\n{shown}"
    assert "source" in shown and "strategies" in shown and "cp_clip" in shown, shown
