"""A whole `dvc repro` on Ray against the local process pool, in one run: the demo recipe made
tiny (fewer images, 256x256), built in two copies of the project, `runtime.executor: local`
and `ray` (`ray_address: local`: one private Ray instance the stages share). Prints wall
times, their ratio, how many Ray instances the Ray build started, and whether the two
datasets are byte-identical.

    python bench/ray_build.py [--images 8] [--resolution 256] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("base", "compiler", "stages", "recipes", "templates", "dvc.yaml", "params.yaml", ".dvcignore")
COMPOSITIONS = ("cat_mug", "astronaut_cat", "motorbike_cat_mug", "astronaut_rocket_cat_mug")


def environment(**variables: str) -> dict[str, str]:
    """This environment with the virtualenv's tools first, without G4G_ settings or PYTHONPATH
    (each copy runs its own code)."""
    kept = {key: value for key, value in os.environ.items() if not key.startswith("G4G_") and key != "PYTHONPATH"}
    return {**kept, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **variables}


def make_project(root: Path, images: int, resolution: int, workers: int) -> None:
    root.mkdir()
    for name in PROJECT_FILES:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["overrides"] = [f"output.resolution={resolution}", "output.card_html=false",
                           *(f"compositions.{c}.num_images={images}" for c in COMPOSITIONS)]
    params["runtime"] = {**params["runtime"], "workers": workers}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        subprocess.run(command, cwd=root, env=environment(), check=True)


def build(root: Path, executor: str) -> float:
    began = time.perf_counter()
    subprocess.run(["dvc", "repro", "-q"], cwd=root, env=environment(G4G_EXECUTOR=executor, RAY_USAGE_STATS_ENABLED="0"),
                   check=True)
    return time.perf_counter() - began


def dataset(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((root / "dataset").iterdir())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="images per composition (the demo has 80-120)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="g4g-ray-build-") as folder:
        local, ray = Path(folder) / "local", Path(folder) / "ray"
        for root in (local, ray):
            make_project(root, args.images, args.resolution, args.workers)
        seconds = {"local": build(local, "local"), "ray": build(ray, "ray")}
        instances = sum(log.read_text().count("Started a local Ray instance")
                        for log in (ray / ".g4g/ray").glob("*/keeper.log"))
        same = dataset(local) == dataset(ray)
        print(f"{4 * args.images} images at {args.resolution}x{args.resolution}, {args.workers} workers")
        print(f"dvc repro: local {seconds['local']:.1f} s, ray {seconds['ray']:.1f} s, "
              f"ray / local = {seconds['ray'] / seconds['local']:.2f}")
        print(f"Ray instances started by the Ray build: {instances}; datasets byte-identical: {same}")


if __name__ == "__main__":
    main()
