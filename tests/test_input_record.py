"""`compile` stops at once when nothing it read changed, and runs in full when anything did:
a recipe, a photo a glob finds, a template, a weights file appearing, a library installed,
an environment variable locating weights, its own output, the code of a stage."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from base import input_record, installed
from compiler import compile as compile_stage
from compiler import fingerprint
from tests.conftest import REPO, copy_project, model_libraries_imported

KEPT = "nothing it read changed since the last compile"


@pytest.fixture
def compiled(project, monkeypatch, tmp_path):
    """The tiny project compiled once, with a record. Files are trusted at once (no racy
    second) except where a test says."""
    monkeypatch.setattr(input_record, "RACY_NS", 0)
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))  # no weights there yet
    compile_in_a_new_process()
    assert (project / compile_stage.INPUT_RECORD).is_file()


def compile_in_a_new_process() -> int:
    """`compile` in this process, with the memos a new process would not have."""
    installed._memo.cache_clear()
    fingerprint.module_file.cache_clear()
    return compile_stage.main([])


def run(capfd) -> str:
    assert compile_in_a_new_process() == 0
    return capfd.readouterr().err


def test_nothing_changed_keeps_the_documents_and_says_so(project, compiled, capfd):
    before = {p.name: p.read_bytes() for p in (project / "build/compiled").iterdir()}
    capfd.readouterr()
    err = run(capfd)
    assert KEPT in err and "compile: recipe 'tiny': 4 extract, 10 plan" in err  # the summary again
    assert {p.name: p.read_bytes() for p in (project / "build/compiled").iterdir()} == before


@pytest.mark.parametrize("change", ["recipe", "new photo", "template", "weights appear", "environment",
                                    "output edited", "library installed", "params"])
def test_any_input_change_compiles_in_full(project, compiled, capfd, tmp_path, monkeypatch, change):
    capfd.readouterr()
    if change == "recipe":
        path = project / "recipes/tiny.yaml"
        path.write_text(path.read_text().replace("num_images: 6", "num_images: 7"))
    elif change == "new photo":
        source = project / "data/gen4gen/cutouts/houseplant/houseplant_03.png"
        (project / "photos").mkdir()
        recipe = yaml.safe_load((project / "recipes/tiny.yaml").read_text())
        recipe["concepts"]["plant"]["images"] = ["photos/*.png"]
        (project / "photos/a.png").write_bytes(source.read_bytes())
        (project / "recipes/tiny.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        assert KEPT not in run(capfd)
        assert KEPT in run(capfd)
        (project / "photos/b.png").write_bytes(source.read_bytes())  # only the folder's listing changes
    elif change == "template":
        path = project / "templates/captions/short.j2"
        path.write_text(path.read_text() + "\n")
    elif change == "weights appear":
        weights = tmp_path / "u2net/u2netp.onnx"
        weights.parent.mkdir(parents=True)
        weights.write_bytes(b"weights")
    elif change == "environment":
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    elif change == "output edited":
        (project / "build/compiled/plan.json").write_text("{}")
    elif change == "library installed":
        site = tmp_path / "site"
        (site / "g4g_probe-1.0.dist-info").mkdir(parents=True)
        monkeypatch.syspath_prepend(str(site))
        assert KEPT not in run(capfd)  # a new folder on sys.path
        assert KEPT in run(capfd)
        (site / "g4g_probe-2.0.dist-info").mkdir()
    elif change == "params":
        path = project / "params.yaml"
        path.write_text(path.read_text().replace("recipe: tiny", "recipe: tiny\noverrides: ['seed=8']"))
    err = run(capfd)
    assert KEPT not in err and "compile: recipe 'tiny'" in err
    assert KEPT in run(capfd)  # and records again
    if change == "new photo":
        assert '"plant/b"' in (project / "build/compiled/extract.json").read_text()


def test_a_project_inside_a_folder_named_dev_records_its_inputs(tmp_path, monkeypatch, capfd):
    """`/dev/` is the kernel's tree only at the root: in ~/dev/proj every file is an input."""
    (tmp_path / "dev").mkdir()
    root = copy_project(tmp_path / "dev" / "proj")
    monkeypatch.chdir(root)
    monkeypatch.setattr(input_record, "RACY_NS", 0)
    capfd.readouterr()
    assert KEPT not in run(capfd)
    assert KEPT in run(capfd)
    recipe = root / "recipes/tiny.yaml"
    recipe.write_text(recipe.read_text().replace("num_images: 6", "num_images: 7"))
    assert KEPT not in run(capfd)
    assert '"id": "cat_mug-00006"' in (root / "build/compiled/plan.json").read_text()


def test_a_failed_compile_leaves_no_record(project, compiled, capfd):
    path = project / "recipes/tiny.yaml"
    original = path.read_text()
    path.write_text(original.replace("num_images: 6", "num_images: -1"))
    assert compile_in_a_new_process() == 2
    assert not (project / compile_stage.INPUT_RECORD).exists()


def test_an_input_changed_just_before_the_compile_is_not_trusted(project, monkeypatch):
    monkeypatch.setattr(input_record, "RACY_NS", 10**12)  # every input counts as just changed
    assert compile_in_a_new_process() == 0
    assert not (project / compile_stage.INPUT_RECORD).exists()


def test_a_stage_code_edit_compiles_in_full_in_a_new_process(project):
    """As `dvc repro` runs it: `python -m compiler.compile` in the project, its own code."""
    def compile() -> str:
        run = subprocess.run([sys.executable, "-m", "compiler.compile"], cwd=project, capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(project)})
        assert run.returncode == 0, run.stderr[-2000:]
        return run.stderr

    time.sleep(1.1)  # the copy is new: its files are racily clean until a second has passed
    assert KEPT not in compile()
    assert KEPT not in compile()  # the first made .g4g/ and build/: the project folder's listing changed
    assert KEPT in compile()
    module = project / "stages/backends/compose/paste.py"
    module.write_text(module.read_text() + "\nEXTRA = 1\n")
    assert KEPT not in compile()  # no record: the edit is too recent to trust
    time.sleep(1.1)
    assert KEPT not in compile()
    assert KEPT in compile()
    assert Path(REPO) != project


def test_validate_reads_the_current_documents_and_prints_what_a_compile_would(project, compiled, capsys,
                                                                             monkeypatch):
    """`g4g validate` of the selected recipe, right after a compile: no compile, the same report."""
    from compiler import cli
    from compiler import compile as compile_module

    capsys.readouterr()
    assert cli.main(["validate"]) == 0
    current = capsys.readouterr().out
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compile_module, "current_documents", lambda: None)  # as if something had changed
        assert cli.main(["validate"]) == 0
    assert capsys.readouterr().out == current and "recipe 'tiny' is valid" in current
    monkeypatch.setattr(compile_module, "compile_recipe", lambda *args: pytest.fail("compiled again"))
    assert cli.main(["validate"]) == 0


@pytest.mark.parametrize("command", ["import runpy; sys.argv = ['compile']; runpy.run_module('compiler.compile', "
                                     "run_name='__main__')",
                                     "from compiler.cli import main; sys.exit(main(['validate']))"])
def test_compile_and_validate_import_no_model_library(project, command):
    """The always-run stage and the forecast find weights, versions and package roots from
    files: a full compile and a validate leave torch, rembg, numba and the rest unimported."""
    assert model_libraries_imported(project, command) == []
