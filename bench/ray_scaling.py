"""The cost of running on Ray: compose items/s on the local process pool vs on a local Ray
instance at the same number of workers, in one run, and the per-batch scheduling overhead.

Builds a throwaway project (bench/compose_throughput.py's three-concept recipe at 1024x1024),
prepares its cut-outs and layouts once, then times the compose stage twice from an empty item
cache: `runtime.executor: local` and `ray` (the Ray instance is started before the clock
runs; its start is printed apart, since it is paid once per stage process). Then it sends
no-op batches through each executor to measure what one batch costs to schedule.

    python bench/ray_scaling.py [--images 64] [--workers 2] [--batches 400]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compose_throughput import PREPARE, make_project  # noqa: E402

COMPOSE = """
import json, shutil, time
from pathlib import Path
from base.settings import load_settings
from stages import compose
settings = load_settings()
started = time.perf_counter()
if settings.executor == "ray":
    from stages.runtime.ray_executor import connect
    connect(settings)
ray_start = time.perf_counter() - started
shutil.rmtree('.g4g/cache/compose', ignore_errors=True)
start = time.perf_counter()
compose.run(Path('build/compiled/compose.json'), Path('build/layouts.json'), Path('build/cutouts'),
            Path('build/images'), Path('build/images.json'))
seconds = time.perf_counter() - start
digests = sorted(f["blake2b"] for r in json.load(open('build/images.json'))["images"] for f in r["files"].values())
print(json.dumps({"seconds": seconds, "ray_start": ray_start, "digests": digests}))
"""

OVERHEAD = """
import json, time
from pathlib import Path
from base.settings import Settings
from stages.runtime.executor import LocalExecutor
from stages.runtime.ray_executor import RayExecutor
settings = Settings(workers={workers}, executor="ray")
tasks = [[{{"id": str(n)}}] for n in range({batches})]
executors = {{"local pool": LocalExecutor({workers}),
             "ray tasks": RayExecutor("caption", settings, {{}}, Path(".g4g/cache")),
             "ray actors": RayExecutor("train-prior", settings, {{}}, Path(".g4g/cache"))}}
list(executors["ray tasks"].imap_unordered(len, tasks[:{workers}]))  # start Ray and its workers
result = {{}}
for name, executor in executors.items():
    start = time.perf_counter()
    assert sum(executor.imap_unordered(len, tasks)) == {batches}
    result[name] = 1000 * (time.perf_counter() - start) / {batches}
print(json.dumps(result))
"""


def run_python(root: Path, code: str, env: dict[str, str]) -> str:
    environment = {**os.environ, "G4G_WORKERS": "1", "PYTHONPATH": str(root), **env}
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=environment, check=True,
                          capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "project"
        root.mkdir()
        make_project(root, args.images)
        run_python(root, PREPARE, {})
        runs = {}
        for executor in ("local", "ray"):
            env = {"G4G_EXECUTOR": executor, "G4G_WORKERS": str(args.workers)}
            runs[executor] = json.loads(run_python(root, COMPOSE, env).splitlines()[-1])
        local, ray = runs["local"], runs["ray"]
        assert local["digests"] == ray["digests"], "Ray composed different bytes"
        for name, run in runs.items():
            print(f"compose on {name:5s}  {args.images / run['seconds']:6.2f} images/s  ({args.images} images, "
                  f"1024x1024, {args.workers} workers, batch_size 8)")
        print(f"ray / local = {local['seconds'] / ray['seconds']:.2f}  (target >= 0.8); same bytes: yes")
        print(f"starting a local Ray instance: {ray['ray_start']:.1f} s (once per stage process)")
        overhead = json.loads(run_python(root, OVERHEAD.format(workers=args.workers, batches=args.batches),
                                         {"G4G_WORKERS": str(args.workers)}).splitlines()[-1])
        for name, ms in overhead.items():
            print(f"no-op batch, {name:10s}: {ms:6.2f} ms per batch ({args.batches} batches, {args.workers} workers)")


if __name__ == "__main__":
    main()
