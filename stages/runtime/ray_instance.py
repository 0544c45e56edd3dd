"""One private local Ray instance for a whole build (`runtime.ray_address: local`).

`dvc repro` runs every stage in its own process, and a Ray instance a stage starts dies with it
(5-30 s each on a busy machine). So the first stage that needs Ray starts a keeper process
(`python -m stages.runtime.ray_instance`) that holds a local instance, and later stages join
it. A stage holds a shared lock on `in-use` while it may use Ray; the keeper stops the
instance once no stage has held it for IDLE_SECONDS. One keeper serves one project, Python,
code location and environment (its workers inherit the keeper's environment, as a stage's
own instance would have the stage's).
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import stages
from base.files import read_json, write_json
from base.settings import SettingsError

STATE_DIR = Path(".g4g/ray")
IDLE_SECONDS = 60.0  # the keeper stops its instance this long after the last stage let go
START_SECONDS = 120.0
VOLATILE = ("_", "PWD", "OLDPWD", "SHLVL")  # environment that differs between two stages of one build
_HELD: list[IO[str]] = []  # this process's shared lock, kept until it exits


def folder() -> Path:
    """The state of the keeper serving this project, Python, code and environment."""
    environment = {k: v for k, v in os.environ.items() if k not in VOLATILE and not k.startswith("DVC_")}
    identity = json.dumps([sys.executable, str(Path(stages.__file__).parent), environment], sort_keys=True)
    return STATE_DIR.resolve() / hashlib.sha256(identity.encode()).hexdigest()[:16]


def join() -> str:
    """The address of the build's shared instance, started if none runs; this process holds it
    until it exits."""
    state = folder()
    state.mkdir(parents=True, exist_ok=True)
    if not _HELD:
        in_use = open(state / "in-use", "a")
        fcntl.flock(in_use, fcntl.LOCK_SH)  # waits while a keeper is stopping
        _HELD.append(in_use)
        _touch(state)
        atexit.register(_touch, state)
    with open(state / "start.lock", "a") as starting:
        fcntl.flock(starting, fcntl.LOCK_EX)  # one stage starts the keeper, the others wait for it
        return _running(state) or _start(state)


def _touch(state: Path) -> None:
    (state / "in-use").touch()


def _running(state: Path) -> str | None:
    try:
        keeper = read_json(state / "address.json")
        os.kill(keeper["pid"], 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return keeper["address"]


def _start(state: Path) -> str:
    (state / "address.json").unlink(missing_ok=True)
    with open(state / "keeper.log", "a") as log:
        keeper = subprocess.Popen([sys.executable, "-m", "stages.runtime.ray_instance", str(state), str(IDLE_SECONDS)],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        address = _running(state)
        if address:
            return address
        if keeper.poll() is not None:
            break
        time.sleep(0.1)
    keeper.kill()
    tail = (state / "keeper.log").read_text(errors="replace")[-1500:]
    raise SettingsError(f"runtime.ray_address (or G4G_RAY_ADDRESS) 'local': the local Ray instance did not start "
                        f"within {START_SECONDS:g} s (log {state / 'keeper.log'}):\n{tail}")


def _idle_for(state: Path) -> float:
    try:
        return time.time() - (state / "in-use").stat().st_mtime
    except FileNotFoundError:  # the project's .g4g was removed: nobody can join any more
        return float("inf")


def keep(state: Path, idle: float) -> None:
    """The keeper: start a local instance, publish its address, stop it when idle."""
    ray = importlib.import_module("ray")  # by name: Ray's version enters no key (see ray_executor)
    ray.init(address="local", include_dashboard=False)
    write_json(state / "address.json", {"address": ray.get_runtime_context().gcs_address, "pid": os.getpid()})
    with open(state / "in-use", "a") as in_use:
        while True:
            time.sleep(1.0)
            try:
                fcntl.flock(in_use, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a stage holds it
            if _idle_for(state) > idle:
                (state / "address.json").unlink(missing_ok=True)
                ray.shutdown()
                return  # the lock goes with the process
            fcntl.flock(in_use, fcntl.LOCK_UN)


if __name__ == "__main__":
    keep(Path(sys.argv[1]), float(sys.argv[2]))
