"""Input references in recipes: file globs relative to the project, or package resources.

`pkg:skimage/data/chelsea.png` names a file shipped inside an installed package, so a recipe
can use real photos from a registry package without copying them into the project. The
reference (not the machine-specific path) is what the build plan records.
"""

from __future__ import annotations

import glob
import importlib.util
from pathlib import Path

from compiler.errors import RecipeError

PACKAGE_PREFIX = "pkg:"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _package_root(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RecipeError(f"{PACKAGE_PREFIX}{package}: package '{package}' is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _split(reference: str) -> tuple[str | None, str]:
    """(package or None, path inside the package or the project)."""
    if reference.startswith(PACKAGE_PREFIX):
        package, _, inner = reference[len(PACKAGE_PREFIX):].partition("/")
        return package, inner
    return None, reference


def resolve(reference: str, root: Path) -> Path:
    """The filesystem path of one concrete reference."""
    package, inner = _split(reference)
    base = _package_root(package) if package else root
    return base / inner


def expand(pattern: str, root: Path, where: str) -> list[str]:
    """Sorted concrete references matched by `pattern`; a pattern matching nothing is an error.

    Args:
        pattern: a path, a glob, or a `pkg:` reference (globs allowed after the package name).
        root: the project directory that relative paths are read from.
        where: the recipe key path, for error messages.
    """
    package, inner = _split(pattern)
    base = _package_root(package) if package else root
    full = base / inner
    matches = sorted(glob.glob(str(full), recursive=True)) if glob.has_magic(inner) else [str(full)]
    images = [Path(m) for m in matches if Path(m).is_file() and Path(m).suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise RecipeError(
            f"{where}: '{pattern}' matches no image file (looked for {full}); valid: an existing "
            f"path or glob of {'/'.join(IMAGE_SUFFIXES)} files, or pkg:PACKAGE/PATH",
            key=where,
        )
    if package:
        return [f"{PACKAGE_PREFIX}{package}/{p.relative_to(base).as_posix()}" for p in images]
    return [_project_relative(p, root) for p in images]


def _project_relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())
