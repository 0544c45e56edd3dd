"""Fingerprints of what produces an item besides its data: code, libraries, weights, templates.

Keys include them so that no edit can leave a stale item behind:
- code: every project module a stage runs (the stage module, its backend and, transitively,
  every project module they import), hashed from the syntax tree without docstrings, so a
  comment, a docstring or formatting does not invalidate anything and any other edit does;
- environment: the versions of the third-party distributions those modules import (found from
  their imports, plus a backend's `LIBRARIES` for libraries it reaches indirectly), Python's
  version and zlib's, which shape the bytes of every encoder;
A module's digest and imports are memoised by its file's stat (`FileMemo`), so a compile with
nothing edited parses no module.
- weights: the sha256 of every weights file a backend names (memoised by size and times, so
  multi-gigabyte checkpoints are hashed once), or the revision of a hub cache snapshot;
- templates: every file a Jinja template loads (includes, imports, extends).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
import os
import sys
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable

import jinja2
from jinja2 import meta

from base import input_record, installed, sources
from base.files import atomic_write_bytes, loads_json, stat_stamp
from base.keys import content_key, file_sha256

PROJECT_PACKAGES = ("base", "compiler", "stages")
# Progress bars, the settings file, where work runs (Ray) and which process trains what
# (accelerate's process state): no output byte depends on them.
NOT_OUTPUT_SHAPING = {"tqdm", "yaml", "ray", "accelerate"}


@functools.lru_cache(maxsize=None)
def module_file(name: str) -> Path | None:
    """The source file Python would import for project module `name`, or None."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def _normalised_source(path: Path) -> str:
    """The module's syntax tree without docstrings or positions: comments and layout vanish."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def _imports(path: Path, name: str) -> list[str]:
    """Every module name `path` imports anywhere (lazy imports in functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return sorted(found)


def _module_facts(path: Path, name: str) -> dict[str, Any]:
    return {"code": content_key(_normalised_source(path)), "imports": _imports(path, name)}


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(modules: Iterable[str], memo: FileMemo | None = None) -> tuple[dict[str, Path], set[str]]:
    """(project modules run by `modules`, transitively, with their files; top-level names of
    the other modules they import)."""
    memo = memo or FileMemo(None)
    project: dict[str, Path] = {}
    external: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in project:
            continue
        path = module_file(name)
        if path is None:
            continue
        project[name] = path
        todo.extend(_parents(name))  # importing a.b.c runs a/__init__ and a/b/__init__
        for imported in memo.derived(path, f"module {name}", lambda p, n=name: _module_facts(p, n))["imports"]:
            top = imported.split(".")[0]
            if top in PROJECT_PACKAGES:
                todo.append(imported)
            elif top and top != "__future__" and top not in NOT_OUTPUT_SHAPING:
                external.add(top)
    return dict(sorted(project.items())), external


def library_versions(import_names: Iterable[str]) -> dict[str, str]:
    """Versions of the distributions behind top-level import names (`PIL` -> pillow), plus
    Python and zlib; names of the standard library count as Python."""
    versions = {"python": ".".join(map(str, sys.version_info[:3]))}
    for name in sorted(set(import_names)):
        if name == "zlib":
            versions["zlib"] = zlib.ZLIB_RUNTIME_VERSION
        if name in sys.stdlib_module_names:
            continue
        for distribution in installed.packages().get(name, [name]):
            versions[distribution.lower()] = installed.version(distribution) or "not installed"
    return versions


def code_and_environment(modules: Iterable[str], extra_libraries: Iterable[str] = (),
                         memo: FileMemo | None = None) -> dict[str, dict[str, str]]:
    """`code`: a digest per project module run; `environment`: the library versions they use."""
    memo = memo or FileMemo(None)
    project, external = closure(modules, memo)
    code = {name: memo.derived(path, f"module {name}", lambda p, n=name: _module_facts(p, n))["code"]
            for name, path in project.items()}
    return {"code": code, "environment": library_versions(external | set(extra_libraries))}


class FileMemo:
    """What is derived from a file (its sha256, a module's digest and imports) memoised by the
    file's (size, mtime, ctime, inode), persisted as JSON (like DVC's state database), so
    weights, photos and modules are read once until they change; ctime changes on any write,
    even one that sets the mtime back."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, Any] = {}
        self.dirty = False
        if path is not None and path.is_file():
            try:
                self.entries = loads_json(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.entries = {}

    def sha256(self, path: Path) -> str:
        return self.derived(path, "", file_sha256)

    def derived(self, path: Path, kind: str, compute: Callable[[Path], Any]) -> Any:
        """`compute(path)`, remembered under `kind` (one file can carry several) until the file changes."""
        stamp = stat_stamp(path.stat())
        input_record.note_file(path)  # a memo hit reads nothing, yet the result depends on the file
        name = f"{kind}:{path.resolve()}" if kind else str(path.resolve())
        entry = self.entries.get(name)
        if entry and entry[:-1] == stamp:
            return entry[-1]
        value = compute(path)
        self.entries[name] = stamp + [value]
        self.dirty = True
        return value

    def save(self) -> None:
        if self.path is not None and self.dirty:
            atomic_write_bytes(self.path, json.dumps(self.entries, sort_keys=True).encode("utf-8"))
            self.dirty = False


def _hub_snapshot(repo_id: str) -> str | None:
    """The revision of `repo_id` in the local Hugging Face cache (what a load would read)."""
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache/huggingface"))
               / "hub")
    ref = hub / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
    if not ref.is_file():
        input_record.note_absent(ref)
        return None
    return ref.read_text().strip()


def weights_fingerprint(reference: str, memo: FileMemo, root: Path) -> str:
    """sha256 of a weights file, a digest of a weights folder's files, or for a hub id the
    cached snapshot's revision ("absent" when nothing is there yet: the load will fail and say so)."""
    path = Path(reference) if Path(reference).is_absolute() else root / reference
    if path.is_file():
        return memo.sha256(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        return content_key([[p.relative_to(path).as_posix(), memo.sha256(p)] for p in files])
    input_record.note_absent(path)
    revision = _hub_snapshot(reference)
    return f"hub:{revision}" if revision else "absent"


def template_closure(templates_dir: Path, names: Iterable[str]) -> dict[str, str]:
    """sha256 of every template file that rendering `names` can load. A template that names
    another one through a variable makes every template of the folder count. Only files inside
    the folder count (by real path, as the renderer only loads those); a name outside it, or
    an unreadable template, is left for the stage to report with its line."""
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir)))
    found: dict[str, str] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        path = sources.confined(templates_dir, name)
        if path is not None and not path.is_file():
            input_record.note_absent(path)  # left for the stage to report; appearing changes the key
        if name in found or path is None or not path.is_file():
            continue
        found[name] = file_sha256(path)
        try:
            referenced = list(meta.find_referenced_templates(environment.parse(path.read_text(encoding="utf-8"))))
        except (jinja2.TemplateSyntaxError, UnicodeDecodeError):
            continue
        if None in referenced:
            todo.extend(p.relative_to(templates_dir).as_posix() for p in sorted(templates_dir.rglob("*"))
                        if p.is_file())
        todo.extend(r for r in referenced if r)
    return dict(sorted(found.items()))
