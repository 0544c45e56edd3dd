"""A newcomer's second command: `dvc repro` in a fresh shell after `make demo`.

dvc and the stages' `python` live in the project's .venv. A new shell does not have it on
PATH, so the README's `dvc repro` only works after `source .venv/bin/activate` (or with
direnv's `.envrc`). These tests run the commands as such a shell would: a PATH without
.venv/bin, then with the documented activation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

VENV_BIN = Path(sys.prefix) / "bin"
pytestmark = pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="the tests run outside a virtualenv")


def fresh_shell_path() -> str:
    """This machine's PATH as a new login shell has it: without the virtualenv's bin folder."""
    return os.pathsep.join(entry for entry in os.environ["PATH"].split(os.pathsep)
                           if entry and Path(entry).resolve() != VENV_BIN.resolve())


def shell(root: Path, script: str) -> subprocess.CompletedProcess:
    """Run `script` in a new, non-interactive bash in `root`, with a fresh shell's environment."""
    environment = {"HOME": os.environ.get("HOME", str(root)), "PATH": fresh_shell_path(), "LANG": "C.UTF-8"}
    return subprocess.run(["bash", "-c", script], cwd=root, env=environment, capture_output=True, text=True)


def system_python_can_build() -> bool:
    python = shutil.which("python", path=fresh_shell_path())
    return python is not None and subprocess.run([python, "-c", "import hydra, PIL"], capture_output=True).returncode == 0


@pytest.fixture
def newcomer_project(dvc_project: Path) -> Path:
    """The tiny project with the virtualenv where `make demo` puts it and the project's `.envrc`."""
    (dvc_project / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    shutil.copy(REPO / ".envrc", dvc_project / ".envrc")
    return dvc_project


def test_dvc_repro_needs_the_virtualenv(newcomer_project):
    if shutil.which("dvc", path=fresh_shell_path()) is None:
        bare = shell(newcomer_project, "dvc repro")
        assert bare.returncode == 127 and "dvc: command not found" in bare.stderr
    if not system_python_can_build():  # a dvc installed elsewhere runs the stages with the wrong python
        global_dvc = shell(newcomer_project, f"{VENV_BIN / 'dvc'} repro")
        assert global_dvc.returncode != 0 and "failed to reproduce 'compile'" in global_dvc.stderr
        assert "does not have g4g's dependencies" in global_dvc.stderr
        assert "source .venv/bin/activate" in global_dvc.stderr
    assert not (newcomer_project / "dataset").exists()


def test_readme_activation_then_dvc_repro_builds(newcomer_project):
    result = shell(newcomer_project, "source .venv/bin/activate && command -v python && dvc repro")
    assert result.returncode == 0, result.stdout + result.stderr
    assert Path(result.stdout.splitlines()[0]).parent.resolve() == (newcomer_project / ".venv/bin").resolve()
    assert (newcomer_project / "dataset/manifest.jsonl").read_text().count("\n") == 10

    # direnv's way: .envrc puts the same virtualenv first on PATH (PATH_add as direnv defines it).
    direnv = shell(newcomer_project, 'PATH_add() { PATH="$(cd "$1" && pwd):$PATH"; export PATH; }\n'
                                     "source .envrc && command -v python && dvc status")
    assert direnv.returncode == 0, direnv.stdout + direnv.stderr
    assert Path(direnv.stdout.splitlines()[0]).parent.resolve() == (newcomer_project / ".venv/bin").resolve()
    assert direnv.stdout.split()[1:] == ["compile:", "always", "changed"], direnv.stdout
