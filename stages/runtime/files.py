"""Atomic, deterministic file writing: an interrupted write never leaves a half file behind."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def dumps_json(value: Any) -> str:
    """Readable, byte-stable JSON: sorted keys, one-space indent, trailing newline."""
    return json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, dumps_json(value).encode("utf-8"))


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link `source` to `target` (no extra disk, same inode for DVC's hash cache), else copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def replace_dir(staging: Path, target: Path) -> None:
    """Swap a fully written `staging` directory in for `target`."""
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
