"""A fresh copy of this project for benchmarks (its own git repository and item cache), and
commands timed in it with this interpreter's `dvc`, `g4g` and stage python first on PATH."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def copy_project(root: Path) -> None:
    """The tracked files of the repository (code, recipes, data) as a new git repository."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    git(root, "init", "-q")
    commit(root, "copy")


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args], cwd=root, check=True)


def commit(root: Path, message: str) -> None:
    """Commit everything (a build that reproduces the committed dvc.lock commits nothing new)."""
    git(root, "add", "-A")
    git(root, "commit", "-qm", message, "--allow-empty")


def timed(root: Path, command: list[str]) -> float:
    """Seconds `command` took in `root`; exits with its output when it fails."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    run = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"{' '.join(command)} failed in {root}:\n{run.stdout[-2000:]}{run.stderr[-3000:]}")
    return seconds


def peak_rss_mib() -> float:
    """The largest resident set of any finished child process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def edit_recipe(root: Path, name: str, change) -> None:
    """Apply `change` to the parsed recipes/<name>.yaml and write it back."""
    path = root / f"recipes/{name}.yaml"
    recipe = yaml.safe_load(path.read_text())
    change(recipe)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))


def timed_repro(root: Path) -> dict[str, float]:
    """`dvc repro` in `root`: its wall seconds (`total`) and, per stage that ran, the seconds from
    DVC starting it to DVC starting the next one (the stage plus DVC hashing and recording its
    outputs)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    process = subprocess.Popen(["dvc", "repro"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    starts, lines = [], []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Running stage '"):
            starts.append((line.split("'")[1], time.perf_counter() - start))
    if process.wait() != 0:
        sys.exit(f"dvc repro failed in {root}:\n{''.join(lines)[-4000:]}")
    total = time.perf_counter() - start
    ends = [at for _, at in starts[1:]] + [total]
    return {"total": total, **{stage: end - at for (stage, at), end in zip(starts, ends)}}


COPIES = (".g4g/cache", "build", "dataset", ".dvc/cache")


def disk_use(root: Path) -> dict[str, int]:
    """Bytes on disk per folder of `COPIES`, in that order, counting a hard-linked file once
    (where it is first seen), and `dataset` alone as the dataset's own bytes."""
    seen: set[tuple[int, int]] = set()
    use = {}
    for folder in COPIES:
        total = 0
        for path in sorted((root / folder).rglob("*")) if (root / folder).exists() else ():
            info = path.lstat()
            if path.is_file() and not path.is_symlink() and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
        use[folder] = total
    use["dataset's own bytes"] = sum(p.stat().st_size for p in (root / "dataset").rglob("*") if p.is_file())
    return use


def report_json(root: Path, stage: str) -> dict:
    path = root / f"reports/{stage}.json"
    return json.loads(path.read_text()) if path.is_file() else {}
