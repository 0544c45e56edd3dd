"""Input references in recipes: file globs relative to the project, or package resources.

`pkg:skimage/data/chelsea.png` names a file shipped inside an installed package, so a recipe
can use real photos from a registry package without copying them into the project. The
reference (not the machine-specific path) is what the build plan records.

Recipes may come from someone else, so resolving a reference runs no code: a package is
found through the metadata of installed distributions, never imported, and globs are walked
by this module with loop protection and a cap on what they match.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from importlib import metadata
from pathlib import Path
from typing import Iterator

from base import input_record, installed
from base.errors import RecipeError

PACKAGE_PREFIX = "pkg:"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MAX_MATCHES = 100_000  # files one pattern may match
MAX_VISITS = 1_000_000  # directory entries one pattern may look at
MAX_IMAGE_BYTES = 1 << 30  # larger files cannot decode within Pillow's pixel limit; never hashed


def confined(folder: Path, name: str) -> Path | None:
    """`folder/name` if its real path (symlinks followed) lies inside `folder`'s, else None."""
    base = Path(folder).resolve()
    target = (base / name).resolve()
    return target if target == base or base in target.parents else None


@functools.lru_cache(maxsize=None)
def _package_root(package: str) -> Path:
    """The folder of an installed distribution's top-level package, found without importing it."""
    if not package.isidentifier():
        raise RecipeError(f"{PACKAGE_PREFIX}{package}: '{package}' is not a package name; valid: the top-level "
                          f"import name of an installed distribution (letters, digits, '_'; no dots)")
    for distribution in installed.packages().get(package, []):
        folder = Path(str(metadata.distribution(distribution).locate_file(package)))
        if folder.is_dir():
            return folder
    raise RecipeError(f"{PACKAGE_PREFIX}{package}: no installed distribution provides a package '{package}'")


def _split(reference: str) -> tuple[str | None, str]:
    """(package or None, path inside the package or the project)."""
    if reference.startswith(PACKAGE_PREFIX):
        package, _, inner = reference[len(PACKAGE_PREFIX):].partition("/")
        if inner.startswith("/") or ".." in Path(inner).parts:
            raise RecipeError(f"{reference}: a path inside package '{package}' cannot start with '/' or use '..'")
        return package, inner
    return None, reference


def resolve(reference: str, root: Path) -> Path:
    """The filesystem path of one concrete reference."""
    package, inner = _split(reference)
    base = _package_root(package) if package else root
    return base / inner


def _has_magic(part: str) -> bool:
    return any(ch in part for ch in "*?[")


def _walk(pattern: Path, where: str, unreadable: list[str]) -> Iterator[Path]:
    """Paths matching `pattern` (glob syntax, `**` for any depth), like `glob.glob(recursive=True)`
    but visiting each real directory once per pattern position, so links to `..` end. Entries
    that cannot be read (permission denied) are skipped and listed in `unreadable`."""
    parts = pattern.parts
    first_magic = next((i for i, part in enumerate(parts) if _has_magic(part)), len(parts))
    start = Path(*parts[:first_magic]) if first_magic else Path(".")
    segments = parts[first_magic:]
    stack = [(start, 0)]
    seen: set[tuple[int, int, int]] = set()
    visits = 0
    while stack:
        path, position = stack.pop()
        if position == len(segments):
            yield path
            continue
        segment = segments[position]
        if not _has_magic(segment):
            if os.path.lexists(path / segment):
                stack.append((path / segment, position + 1))
            else:
                input_record.note_absent(path / segment)  # were it to appear, the pattern would match more
            continue
        try:
            info = path.stat()
            entries = sorted(os.scandir(path), key=lambda e: e.name, reverse=True)
        except OSError as error:
            unreadable.append(f"{path}: {error.strerror}")
            continue
        if segment == "**":
            if (position, info.st_dev, info.st_ino) in seen:
                continue
            seen.add((position, info.st_dev, info.st_ino))
            stack.append((path, position + 1))  # ** matching no folder
        visits += len(entries)
        if visits > MAX_VISITS:
            raise RecipeError(f"{where}: '{pattern}' looks at more than {MAX_VISITS} files and folders; narrow it",
                              key=where)
        for entry in entries:
            if entry.name.startswith(".") and not segment.startswith("."):
                continue
            if segment == "**":
                try:
                    is_dir = entry.is_dir()
                except OSError as error:
                    unreadable.append(f"{entry.path}: {error.strerror}")
                    continue
                if is_dir:
                    stack.append((Path(entry.path), position))
                elif position + 1 == len(segments):
                    yield Path(entry.path)
            elif fnmatch.fnmatchcase(entry.name, segment):
                stack.append((Path(entry.path), position + 1))


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
    images, unreadable = [], []
    for match in _walk(full, where, unreadable) if _has_magic(inner) else [full]:
        if match.suffix.lower() in IMAGE_SUFFIXES and _is_file(match, unreadable):
            size = match.stat().st_size
            if size > MAX_IMAGE_BYTES:
                raise RecipeError(f"{where}: {match} has {size / 2**30:.1f} GiB; valid: image files up to "
                                  f"{MAX_IMAGE_BYTES >> 30} GiB (larger ones exceed Pillow's pixel limit)", key=where)
            images.append(match)
            if len(images) > MAX_MATCHES:
                raise RecipeError(f"{where}: '{pattern}' matches more than {MAX_MATCHES} images; narrow it", key=where)
    images = sorted(set(images), key=str)
    if not images:
        skipped = f"; {len(unreadable)} could not be read, e.g. {unreadable[0]}" if unreadable else ""
        raise RecipeError(
            f"{where}: '{pattern}' matches no image file (looked for {full}{skipped}); valid: an existing "
            f"path or glob of {'/'.join(IMAGE_SUFFIXES)} files, or pkg:PACKAGE/PATH",
            key=where,
        )
    if package:
        return [f"{PACKAGE_PREFIX}{package}/{p.relative_to(base).as_posix()}" for p in images]
    return [_project_relative(p, root) for p in images]


def _is_file(path: Path, unreadable: list[str]) -> bool:
    try:
        return path.is_file()
    except OSError as error:
        unreadable.append(f"{path}: {error.strerror}")
        return False


def _project_relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())
