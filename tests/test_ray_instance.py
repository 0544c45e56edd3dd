"""`ray_address: local` on one shared private Ray instance per build: stages in separate
processes (as `dvc repro` runs them) join the instance the first one started, and it stops
once no stage has used it for a while. Starts one local Ray instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytest.importorskip("ray")

STAGE = """
import json, os, sys, time
from stages.runtime import ray_instance
ray_instance.IDLE_SECONDS = 5.0
from base.settings import Settings
from stages.runtime.ray_executor import connect
began = time.monotonic()
ray = connect(Settings(executor="ray"))
square = ray.get(ray.remote(lambda n: n * n).remote(7))
print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "square": square,
                  "seconds": time.monotonic() - began}))
"""


def stage(root: Path) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    result = subprocess.run([sys.executable, "-c", STAGE], cwd=root, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_stages_share_one_instance_that_stops_when_idle(tmp_path):
    first, second = stage(tmp_path), stage(tmp_path)
    assert first["square"] == second["square"] == 49
    assert first["gcs"] == second["gcs"]  # the second stage joined the first one's instance
    [state] = (tmp_path / ".g4g/ray").iterdir()
    keeper = json.loads((state / "address.json").read_text())["pid"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (state / "address.json").exists():
        time.sleep(0.5)
    assert not (state / "address.json").exists(), "the keeper stops its instance once idle"
    while time.monotonic() < deadline:
        try:
            os.kill(keeper, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the keeper {keeper} still runs")
