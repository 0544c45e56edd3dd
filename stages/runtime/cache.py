"""The item cache: one directory per content key, committed atomically.

Stages look items up here before computing them, so a rerun after an unrelated recipe edit
(or an interrupted build) recomputes only what is missing. DVC still sees whole stage
outputs: each stage links the cached files of its current items into its output folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from stages.runtime.files import dumps_json, read_json

RECORD = "record.json"


class ItemCache:
    def __init__(self, root: Path, stage: str):
        self.root = Path(root) / stage
        self.staging_root = Path(root) / ".staging"

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> dict[str, Any] | None:
        """The committed record of `key`, or None."""
        path = self._dir(key) / RECORD
        return read_json(path) if path.exists() else None

    def file(self, key: str, name: str) -> Path:
        return self._dir(key) / name

    def staging(self) -> Path:
        """A fresh private directory to write one item's files into."""
        self.staging_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.staging_root))

    def commit(self, key: str, staging: Path, record: dict[str, Any]) -> None:
        """Publish `staging` as `key`; a concurrent commit of the same key wins harmlessly."""
        (staging / RECORD).write_text(dumps_json(record), encoding="utf-8")
        target = self._dir(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / RECORD).exists():
                raise
            shutil.rmtree(staging, ignore_errors=True)
