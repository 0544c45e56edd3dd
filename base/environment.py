"""Stop early, with the fix, when a stage runs under a Python without the project installed.

`dvc repro` runs each stage as `python -m ...` with whatever `python` is first on PATH; in a
new shell that is the system's, not the project's .venv, and the first import would fail
with a bare ModuleNotFoundError.
"""

from __future__ import annotations

import importlib.util
import sys

NEEDED = ("omegaconf", "numpy", "PIL", "yaml")


def require_project_environment() -> None:
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"error: {sys.executable} does not have g4g's dependencies (no module {missing[0]!r}). "
                 f"dvc runs the stages with the `python` first on PATH: activate the project's environment "
                 f"with `source .venv/bin/activate` (created by `make demo`), or `direnv allow` (.envrc), "
                 f"then run the command again.")
