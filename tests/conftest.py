"""Shared fixtures: a throwaway copy of the project with a tiny recipe, and the reference data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Tests never reach a model hub: fail fast instead of retrying (the hub libraries read this at import).
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DATA = REPO / "data" / "gen4gen"  # downscaled Gen4Gen photos shipped with the project (NOTICE.md)
PROJECT_FILES = ("base", "compiler", "stages", "recipes", "templates", "data", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore")

TINY_RECIPE = {
    "defaults": ["schema", "_self_"],
    "name": "tiny",
    "seed": 7,
    "concepts": {
        "cat": {"class_noun": "cat", "token": "<cat1>", "images": ["pkg:skimage/data/chelsea.png"], "size": 0.6},
        "mug": {"class_noun": "mug", "token": "<mug1>", "images": ["pkg:skimage/data/coffee.png"], "size": 0.4},
        "plant": {"class_noun": "houseplant", "token": "<plant1>", "cutout": True,
                  "images": [str(REFERENCE_DATA / "cutouts/houseplant/houseplant_0[12].png")]},
    },
    "backgrounds": {
        "garden": {"phrase": "in the garden", "images": [str(REFERENCE_DATA / "backgrounds/garden/garden1.jpg")]},
        "grass": {"phrase": "on the grass", "images": ["pkg:skimage/data/grass.png"]},
    },
    "compositions": {
        "cat_mug": {"concepts": ["cat", "mug"], "backgrounds": ["garden", "grass"], "num_images": 6},
        "cat_mug_plant": {"concepts": ["cat", "mug", "plant"], "backgrounds": ["garden"], "num_images": 4},
    },
    "output": {"resolution": 256, "shard_size": 4},
}


def write_recipe(root: Path, recipe: dict, name: str = "tiny") -> Path:
    path = root / "recipes" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def reference_data() -> Path:
    return REFERENCE_DATA


THROUGHPUT_VARIABLES = ("G4G_WORKERS", "G4G_BATCH_SIZE", "G4G_CACHE_DIR", "G4G_DEVICE", "G4G_EXECUTOR",
                        "G4G_RAY_ADDRESS", "G4G_RAY_GPUS")


def copy_files(source: Path, target: Path, names: tuple[str, ...]) -> None:
    """The files and folders `names` of `source` copied into a new folder `target` (no bytecode)."""
    target.mkdir()
    for name in names:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source / name, target / name)


def copy_project(root: Path, **params: object) -> Path:
    """A copy of the project at `root` selecting the tiny recipe (params.yaml updated with `params`)."""
    copy_files(REPO, root, PROJECT_FILES)
    write_recipe(root, TINY_RECIPE)
    settings = yaml.safe_load((root / "params.yaml").read_text())
    settings.update({"recipe": "tiny", "runtime": {"workers": 1, "batch_size": 4, "cache_dir": ".g4g/cache"},
                     **params})
    (root / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return root


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference_data: Path) -> Path:
    """A copy of the project selecting the tiny recipe, as the working directory."""
    root = copy_project(tmp_path / "project")
    monkeypatch.chdir(root)
    for variable in THROUGHPUT_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return root


def run_tool(root: Path, *command: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run a command of this virtualenv (dvc, g4g, python) in `root`."""
    bin_dir = Path(sys.executable).parent
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **env}
    result = subprocess.run(list(command), cwd=root, env=environment, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


MODEL_LIBRARIES = ("torch", "diffusers", "transformers", "open_clip", "rembg", "numba", "onnxruntime", "ray")


def model_libraries_imported(root: Path, code: str) -> list[str]:
    """The model libraries a fresh Python running `code` in `root` has imported when it exits."""
    probe = (f"import atexit, json, sys; atexit.register(lambda: print('imported:', json.dumps([m for m in "
             f"{MODEL_LIBRARIES!r} if m in sys.modules]), file=sys.stderr)); {code}")
    run = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stderr.rsplit("imported: ", 1)[1])


@pytest.fixture
def dvc_project(project: Path) -> Path:
    """The tiny project as a git + DVC repository, ready for `dvc repro`."""
    run_tool(project, "git", "init", "-q")
    run_tool(project, "dvc", "init", "-q")
    run_tool(project, "dvc", "config", "core.analytics", "false")
    return project


def build_in_process(root: Path) -> dict:
    """Run every stage in order in this process, as `dvc repro` would; returns the reports."""
    import json

    from compiler import compile as compile_stage
    from stages import caption, compose, extract, pack, plan, score

    assert compile_stage.main(["--params", str(root / "params.yaml"), "--out", str(root / "build/compiled")]) == 0
    build = root / "build"
    extract.run(build / "compiled/extract.json", build / "cutouts", build / "cutouts.json")
    plan.run(build / "compiled/plan.json", build / "cutouts.json", build / "layouts.json")
    compose.run(build / "compiled/compose.json", build / "layouts.json", build / "cutouts", build / "images",
                build / "images.json")
    caption.run(build / "compiled/caption.json", build / "layouts.json", root / "templates", build / "captions.json")
    score.run(build / "compiled/score.json", build / "layouts.json", build / "images.json", build / "scores.json")
    pack.run(build / "compiled/pack.json", build, root / "dataset")
    return {path.stem: json.loads(path.read_text()) for path in (root / "reports").glob("*.json")}


def dataset_bytes(root: Path) -> dict[str, bytes]:
    folder = root / "dataset"  # with the card's full images in dataset/card/
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: runs `dvc repro` several times (deselect with -m 'not slow')")
