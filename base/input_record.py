"""What one `compile` read, so that the next one can stop at once when none of it changed.

DVC reruns `compile` on every `dvc repro` (`always_changed`): the photos a glob finds, the
installed libraries and the weights files are inputs DVC cannot list. Like make's dependency
files or ccache's manifests, a successful compile records everything it read:
- every file it opened (by its stat) and every folder it listed (by the names and kinds of
  its entries: a file written beside them elsewhere does not count), through Python's audit
  hooks;
- the files a memo answered for without opening them, and the paths it found absent
  (`note_file`, `note_absent`: the few places that decide by a file's existence call them);
- the source of every module it ran, the interpreter, its arguments and working folder, and
  the environment variables that locate weights and caches;
- the digest of every document it wrote.
The next compile restats all of it (milliseconds, before importing anything heavy); when
every stamp matches, the documents on disk are the ones it would write. A file changed (its
ctime) in the second before the compile started is not trusted, as git treats racily clean
files (a second edit could share its timestamps): that compile writes no record.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from base.files import atomic_write_bytes, loads_json, stat_stamp

RECORD_VERSION = 1
LOCATING_VARIABLES = ("HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE",
                      "U2NET_HOME", "REMBG_HOME", "PYTHONPATH")
OUR_PACKAGES = ("base", "compiler", "stages")
SYSTEM_TREES = ("/dev/", "/proc/", "/sys/")  # at the root only: a project under ~/dev/ is an input
RACY_NS = 1_000_000_000

_active: Recorder | None = None


def _stamp(path: str) -> list[int] | None:
    try:
        return stat_stamp(os.stat(path))
    except OSError:
        return None


def _listing(folder: str) -> str | None:
    try:
        with os.scandir(folder) as entries:
            names = sorted(f"{e.name}/" if e.is_dir() else e.name for e in entries if e.name != "__pycache__")
    except OSError:
        return None
    return hashlib.blake2b("\0".join(names).encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


def _digest(path: Path | str) -> str | None:
    """The bytes of a document compile wrote (by content: DVC replaces outputs with copies from its cache)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "blake2b").hexdigest()
    except OSError:
        return None


def note_file(path: Path | str) -> None:
    """A file whose content decided the result although it may not have been opened (a memo hit)."""
    if _active is not None:
        _active.add(os.fspath(path))


def note_absent(path: Path | str) -> None:
    """A path whose absence decided the result (a weights file not there yet, a folder a glob looked for)."""
    if _active is not None:
        _active.absent.add(os.path.abspath(os.fspath(path)))


def _context(argv: list[str]) -> dict[str, Any]:
    """Where this process runs from. sys.path[0] is the script's folder (`python -m` puts the
    working folder there, `g4g` its bin folder), so it is replaced by where our own packages
    resolve from: `g4g validate` may then use what `compile` recorded."""
    ours = [getattr(importlib.util.find_spec(name), "origin", None) for name in OUR_PACKAGES]
    return {"argv": argv, "cwd": os.getcwd(), "python": [sys.executable, sys.version], "path": sys.path[1:],
            "packages": ours, "environment": {name: os.environ.get(name) for name in LOCATING_VARIABLES}}


class Recorder:
    """Collects the inputs of this process from now until `save` or `stop`."""

    def __init__(self, ignored: Iterable[Path]):
        global _active
        self.started_ns = time.time_ns()
        self.ignored = tuple(os.path.join(os.path.abspath(p), "") for p in ignored)  # folders, by prefix
        self.files: dict[str, list[int] | None] = {}
        self.folders: dict[str, str | None] = {}
        self.absent: set[str] = set()
        _install_hook()
        _active = self

    def opened(self, path: Any, mode: Any, flags: Any) -> None:
        writing = (mode and any(c in mode for c in "wax+")) or (flags and flags & (os.O_WRONLY | os.O_RDWR))
        if not writing:
            self.add(os.fsdecode(path))

    def listed(self, path: Any) -> None:
        folder = os.path.abspath(os.fsdecode(path) or ".")
        if folder not in self.folders and not self._ignored(folder):
            self.folders[folder] = None  # our own listing below raises the same event
            self.folders[folder] = _listing(folder)

    def _ignored(self, path: str) -> bool:
        """Not an input: the kernel's trees, bytecode caches, compile's own outputs."""
        return (path.startswith(SYSTEM_TREES) or "__pycache__" in Path(path).parts
                or os.path.join(path, "").startswith(self.ignored))

    def add(self, path: str) -> None:
        path = os.path.abspath(path)
        if path not in self.files and not self._ignored(path):
            self.files[path] = _stamp(path)  # as it was when read: a later edit shows as a change

    def stop(self) -> None:
        global _active
        if _active is self:
            _active = None

    def save(self, record_file: Path, argv: list[str], outputs: Iterable[Path], messages: list[str]) -> None:
        """Write the record (with what the compile printed, to print again), unless an input is
        too new to trust or an absent path appeared meanwhile. A file that could not be opened
        or a folder that could not be listed is recorded as absent (stamp None)."""
        self.stop()
        for module in list(sys.modules.values()):
            source = getattr(module, "__file__", None)
            if isinstance(source, str) and source.endswith(".py"):
                self.add(source)
        if any(s is not None and s[2] > self.started_ns - RACY_NS for s in self.files.values()) \
                or any(map(os.path.exists, self.absent)):
            Path(record_file).unlink(missing_ok=True)
            return
        record = {"version": RECORD_VERSION, "context": _context(argv), "files": self.files,
                  "folders": self.folders, "absent": sorted(self.absent), "messages": messages,
                  "outputs": {str(p): _digest(p) for p in outputs}}
        atomic_write_bytes(record_file, json.dumps(record, sort_keys=True).encode("utf-8"))


def _audit(event: str, args: tuple) -> None:
    recorder = _active
    if recorder is None or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    if event == "open":
        recorder.opened(*args[:3])
    elif event in ("os.scandir", "os.listdir"):
        recorder.listed(args[0])


_hooked = False


def _install_hook() -> None:
    """One audit hook per process (hooks cannot be removed); it does nothing between records."""
    global _hooked
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True


def unchanged(record_file: Path, argv: list[str]) -> list[str] | None:
    """What the last compile printed, if every input and output it recorded is as it was then;
    otherwise None."""
    try:
        record = loads_json(Path(record_file).read_text(encoding="utf-8"))
        if record.get("version") != RECORD_VERSION or record.get("context") != _context(argv):
            return None
        same = (all(_stamp(path) == stamp for path, stamp in record["files"].items())
                and all(_listing(folder) == names for folder, names in record["folders"].items())
                and not any(map(os.path.exists, record["absent"]))
                and all(digest is not None and _digest(path) == digest for path, digest in record["outputs"].items()))
        return list(record["messages"]) if same else None
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None
