"""Atomic, deterministic file writing: an interrupted write never leaves a half file behind."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import unicodedata
from pathlib import Path
from typing import Any, Callable

from base.errors import ChangedDuringBuild, ItemError
from base.shared_json import SharedEncoder, compact_encoder


class DiskFull(OSError):
    """A write failed for lack of space; the message says where. Nothing partial was left."""


class NotAFile(ValueError):
    """An output path names something other than a regular file (a device, a pipe, a folder)."""


NON_ASCII = re.compile(r"[^\x00-\x7e]")
ESCAPED_IN_JSON = ("Cc", "Cf", "Zl", "Zp")  # invisible or reordering characters: written as \uXXXX


def check_output(path: Path) -> None:
    """Refuse to replace anything but a regular file (or a link, which is replaced, not followed)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        kind = "a folder" if stat.S_ISDIR(mode) else "a device, pipe or socket"
        raise NotAFile(f"{path}: is {kind}, not a regular file; write to a file path")


def published_mode() -> int:
    """The mode of a file we publish: readable and writable as the umask allows (as `open`
    would make it), not mkstemp's 0600 or the item cache's 0444."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place (never over a
    device, pipe or folder)."""
    path = Path(path)
    check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, published_mode())  # mkstemp's 0600 would hide published files from other users
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise DiskFull(f"no space left on the device while writing {path}") from None
        raise


def dumps_json(value: Any) -> str:
    """Readable, byte-stable JSON: sorted keys, one-space indent, trailing newline. UTF-8 text
    stays as it is, except control and format characters (bidi overrides, DEL), which are
    escaped, so a file name or a reply cannot reorder or hide text in a viewer or a terminal."""
    return NON_ASCII.sub(_json_escape, json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False)) + "\n"


def dumps_json_document(value: dict[str, Any], shares_values: bool = False) -> str:
    """A large document (a stage's items, an index, a key record) as byte-stable JSON: sorted
    keys, every top-level entry on a line of its own, and every element of a top-level list
    or object on a line of its own. Written by json's C encoder, which indenting would turn
    off (its pure-Python fallback takes seconds on a 20,000-image build); a diff or a grep
    shows one item per line. Escapes as `dumps_json` does. A document whose items hold the
    same objects (a compiled one) `shares_values`: each is encoded twice, not once per item
    (`SharedEncoder`, which on items of their own only adds its joining)."""
    # joined by hand when shared: an item, its values and theirs
    compact = SharedEncoder((", ", ": "), depth=2).encode if shares_values else _compact
    lines = []
    for key in sorted(value):
        inner = value[key]
        if isinstance(inner, list) and inner:
            lines.append(f"{_compact(key)}: [\n" + ",\n".join(map(compact, inner)) + "\n]")
        elif isinstance(inner, dict) and inner:
            entries = ",\n".join(f"{_compact(name)}: {compact(inner[name])}" for name in sorted(inner))
            lines.append(f"{_compact(key)}: {{\n{entries}\n}}")
        else:
            lines.append(f"{_compact(key)}: {_compact(inner)}")
    text = "{\n" + ",\n".join(lines) + "\n}\n"
    return text if text.isascii() and "\x7f" not in text else NON_ASCII.sub(_json_escape, text)


_compact = compact_encoder((", ", ": "))


def _json_escape(match: re.Match) -> str:
    char = match.group()
    if unicodedata.category(char) not in ESCAPED_IN_JSON:
        return char
    return json.dumps(char)[1:-1]  # \uXXXX (a surrogate pair beyond the BMP)


def write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, dumps_json(value).encode("utf-8"))


def write_json_document(path: Path, value: dict[str, Any]) -> None:
    atomic_write_bytes(path, dumps_json_document(value).encode("utf-8"))


class TooDeep(ValueError):
    """JSON nested deeper than Python's parser recurses: damaged or hostile, never ours."""


def loads_json(text: str | bytes, **options: Any) -> Any:
    """`json.loads`, with nesting too deep to parse reported as a ValueError (like any other
    malformed JSON) rather than a RecursionError, so every reader that treats a bad file as
    absent or damaged treats a deep one the same way."""
    try:
        return json.loads(text, **options)
    except RecursionError:
        raise TooDeep("JSON nested too deeply to read") from None


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return loads_json(handle.read())


DIGESTS: dict[str, Callable[[bytes], str]] = {
    "sha256": lambda data: hashlib.sha256(data).hexdigest(),  # photos, templates (compile's hash)
    "blake2b": lambda data: hashlib.blake2b(data, digest_size=20).hexdigest(),  # stage outputs (the item cache's)
}
MAX_KEYED_BYTES = 1 << 30  # one input file read whole into memory: a photo, a cut-out, a template


def read_keyed(path: Path, reference: str, algorithm: str, digest: str) -> bytes:
    """The bytes of `path`, read once, provided they are the bytes whose `algorithm` digest the
    item's key holds. What is decoded is what was hashed, so a file saved while a build runs is
    never built under its old key: ChangedDuringBuild says to rerun instead."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_KEYED_BYTES:
                raise ItemError(f"{reference}: {size} bytes; valid: at most {MAX_KEYED_BYTES} bytes")
            data = handle.read(MAX_KEYED_BYTES + 1)
    except FileNotFoundError:
        raise ChangedDuringBuild(f"{reference}: removed during the build ({path}); rerun `dvc repro`") from None
    except IsADirectoryError:
        raise ItemError(f"{reference}: is a folder, not a file ({path})") from None
    if DIGESTS[algorithm](data) != digest:
        raise ChangedDuringBuild(f"{reference}: changed during the build (its bytes no longer have the {algorithm} "
                                 f"{digest[:12]}... that compile put in the key); rerun `dvc repro`")
    return data


def stat_stamp(info: os.stat_result) -> list[int]:
    """A file's (size, mtime, ctime, inode). Any write changes the ctime, which cannot be set back
    by hand, so an unchanged stamp means unchanged bytes: what git's index and DVC's state
    database trust, and every memo of ours keyed by a file."""
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]


def copy_file(source: Path, target: Path) -> None:
    """Copy `source` to `target` (in the kernel, sendfile): never a hard link, so editing an
    output in place cannot reach the item cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(source, target)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise DiskFull(f"no space left on the device while writing {target}") from None
        raise


def replace_dir(staging: Path, target: Path) -> None:
    """Swap a fully written `staging` directory in for `target`, so a reader sees the old
    directory or the new one, never a mix: one atomic exchange on Linux (renameat2 with
    RENAME_EXCHANGE); elsewhere the old one is renamed aside first, which leaves a moment
    with no `target` at all but still never a mix."""
    staging, target = Path(staging), Path(target)
    if not target.exists():
        os.replace(staging, target)
        return
    if _exchange(staging, target):
        shutil.rmtree(staging)  # now holds the old directory
        return
    aside = target.with_name(f".{target.name}.old")
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(target, aside)
    os.replace(staging, target)
    shutil.rmtree(aside)


def _exchange(first: Path, second: Path) -> bool:
    """Atomically swap two paths with Linux's renameat2(RENAME_EXCHANGE); False where the
    platform, the C library or the file system does not support it."""
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(error, os.strerror(error), str(first), None, str(second))


def write_folder(directory: Path, files: dict[str, bytes]) -> None:
    """Replace `directory` by one holding exactly `files` (relative name -> bytes), built beside
    it and swapped in whole, so a reader never sees a mix (an empty dict gives an empty folder)."""
    directory = Path(directory)
    staging = directory.with_name(f".{directory.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        for name, data in files.items():
            atomic_write_bytes(staging / name, data)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir(staging, directory)
