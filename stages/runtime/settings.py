"""Throughput settings: how fast to build, never what to build.

Read from the `runtime:` section of params.yaml (which no stage declares as a DVC parameter)
and from G4G_* environment variables, which win. None of them enters a content key, so
changing them rebuilds nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Settings:
    workers: int = max(1, os.cpu_count() or 1)  # processes for item work
    batch_size: int = 8  # items per task sent to a worker
    device: str = "cpu"  # for model backends: cpu, cuda, cuda:1, ...
    cache_dir: str = ".g4g/cache"  # the item cache, shared by all recipes of this project


def load_settings(params_file: Path = Path("params.yaml")) -> Settings:
    values: dict[str, object] = {}
    if params_file.exists():
        values.update((yaml.safe_load(params_file.read_text()) or {}).get("runtime") or {})
    for field in fields(Settings):
        env = os.environ.get(f"G4G_{field.name.upper()}")
        if env is not None:
            values[field.name] = env
    unknown = sorted(set(values) - {f.name for f in fields(Settings)})
    if unknown:
        raise ValueError(f"{params_file}: runtime: unknown setting(s) {unknown}; valid: "
                         f"{', '.join(f.name for f in fields(Settings))}")
    typed = {f.name: int(values[f.name]) if f.type == "int" else str(values[f.name])
             for f in fields(Settings) if f.name in values}
    settings = Settings(**typed)
    if settings.workers < 1 or settings.batch_size < 1:
        raise ValueError(f"runtime: workers and batch_size must be >= 1, got {settings}")
    return settings
