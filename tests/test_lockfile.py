"""The committed `dvc.lock` matches the committed code, recipes and templates.

`make demo` on a fresh clone must leave `git status` empty. It does only if every dependency
hash in `dvc.lock` that names a file in git (the code folders, recipes, templates, params) is
that file's hash now; a commit that changes code without refreshing the lock would otherwise
make every newcomer's demo rewrite it. Build outputs are not in git and are not checked.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import REPO, run_tool


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: nothing committed to compare dvc.lock with")
    return [name for name in listed.stdout.decode().split("\0") if name]


def test_committed_lock_matches_the_tracked_files(tmp_path):
    clone = tmp_path / "clone"
    for name in tracked_files():
        source = REPO / name
        if source.is_file():  # a file deleted but not yet committed is not there
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    run_tool(clone, "git", "init", "-q")
    status = json.loads(run_tool(clone, "dvc", "status", "--json").stdout)
    stale = {f"{stage}: {path}": change for stage, entries in status.items() for entry in entries
             if isinstance(entry, dict) for path, change in entry.get("changed deps", {}).items()
             if (clone / path).exists()}  # a build output (absent in a clone) is not the lock's concern
    assert not stale, ("dvc.lock is older than the files it hashes; rebuild the demo (`dvc repro`) and commit "
                       f"dvc.lock: {stale}")
