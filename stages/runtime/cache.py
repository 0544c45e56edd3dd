"""The item cache: one directory per content key, committed atomically, verified on reuse.

Stages look items up here before computing them, so a rerun after an unrelated recipe edit
(or an interrupted build) recomputes only what is missing. Like git's object store, an entry
is never handed back unchecked: its record carries the size and BLAKE2b digest of every file
and a digest of itself, and `lookup` checks them all. As DVC's state database does, a file
whose digest was checked is re-read only when its stat changes (`VerifiedFiles`, per stage),
so an edit loop does not re-read the whole dataset; `g4g cache verify` re-reads everything. A
damaged or incomplete entry is reported and recomputed, never reused. Its files are read-only:
stage outputs are hard links to them (`stages.runtime.outputs`), and nothing writes into a file
in place.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from base.errors import ItemError
from base.files import DIGESTS, DiskFull, atomic_write_bytes, dumps_json, loads_json, stat_stamp
from base.keys import canonical_json

RECORD = "record.json"
READ_ONLY = 0o444
CHUNK = 1 << 20
LOCK = ".lock"  # builds hold it shared, `g4g cache gc` and `verify --repair` exclusively
VERIFIED = "verified.json"  # per stage: the stat of every file whose digest was checked
MOVED_OUT = "moved_out"  # record flag: the files leave the entry for the stage's output folder
TAG = "CACHEDIR.TAG"  # written when g4g creates the cache (bford.info/cachedir): maintenance acts only where it is
TAG_TEXT = (b"Signature: 8a477f597d28d172789f06886806bc55\n"
            b"# g4g's item cache, created by g4g: `g4g cache gc` and `verify --repair` may remove entries here.\n")


class CacheBusy(ValueError):
    """Maintenance that removes entries cannot run while a build uses the cache."""


@contextmanager
def exclusive(root: Path) -> Iterator[None]:
    """Hold the whole cache for maintenance that removes entries; CacheBusy while a build of
    any project sharing it runs (it may still need any entry)."""
    if not Path(root).is_dir():
        yield
        return
    with open(Path(root) / LOCK, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CacheBusy(f"the item cache {root} is in use by a running build (of this or another project "
                            f"sharing it); run this again when the build has finished") from None
        yield


def blake2b_file(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verified_bytes(folder: Path, name: str, files: dict[str, dict[str, Any]]) -> bytes:
    """The bytes of `folder/name`, checked against the size and digest its producer recorded:
    an output edited after it was written is an error, never packed."""
    data = (folder / name).read_bytes()
    meta = files[name]
    if len(data) != meta["size"] or DIGESTS["blake2b"](data) != meta["blake2b"]:
        raise ItemError(f"{folder / name} changed after it was built (its digest no longer matches); run "
                        f"`dvc repro -f` to restore it from the item cache")
    return data


def _record_digest(record: dict[str, Any]) -> str:
    return hashlib.blake2b(canonical_json(record).encode("utf-8"), digest_size=20).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class VerifiedFiles:
    """Cache files whose digest was checked, by (size, mtime, ctime, inode): any write to a
    file changes its ctime, so an unchanged stamp means unchanged bytes (as DVC trusts its
    state database). Kept out of `ItemCache`, which travels to every worker."""

    def __init__(self, root: Path):
        self.path = Path(root) / VERIFIED
        self.dirty = False
        try:
            self.stamps: dict[str, list[Any]] = loads_json(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.stamps = {}

    def save(self) -> None:
        if self.dirty and self.path.parent.is_dir():
            atomic_write_bytes(self.path, json.dumps(self.stamps, sort_keys=True).encode("utf-8"))
            self.dirty = False


class ItemCache:
    def __init__(self, root: Path, stage: str):
        self.base = Path(root)
        self.root = self.base / stage
        self.staging_root = self.base / ".staging"

    def hold(self) -> None:
        """Lock the whole cache shared while this object lives, so maintenance (`exclusive`)
        cannot remove an entry a running build has looked up and will copy."""
        if not self.base.exists() or not any(self.base.iterdir()):
            self.base.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.base / TAG, TAG_TEXT)  # g4g made this folder: its maintenance may act here
        handle = open(self.base / LOCK, "a+b")
        fcntl.flock(handle, fcntl.LOCK_SH)  # waits while maintenance runs
        weakref.finalize(self, handle.close)

    def folder(self, key: str) -> Path:
        return Path(self._folder_path(key))

    def _folder_path(self, key: str) -> str:
        return os.path.join(self.root, key[:2], key)

    def file(self, key: str, name: str) -> Path:
        return Path(self.file_path(key, name))

    def file_path(self, key: str, name: str) -> str:
        """`file` as a string: a stage placing 100,000 files spends seconds building Paths."""
        return os.path.join(self._folder_path(key), name)

    def keys(self) -> Iterator[str]:
        """Every committed key of this stage, sorted."""
        if self.root.is_dir():
            for shard in sorted(self.root.iterdir()):
                if shard.is_dir():
                    yield from sorted(p.name for p in shard.iterdir() if p.is_dir())

    def has(self, key: str) -> bool:
        """Whether an entry for `key` was committed (unverified: `lookup` checks it)."""
        return (self.folder(key) / RECORD).is_file()

    def lookup(self, key: str, verified: VerifiedFiles | None = None) -> tuple[dict[str, Any] | None, str | None]:
        """(the verified record of `key`, None), (None, None) when absent (or when its files were
        handed over to an output folder), or (None, what is damaged) when the entry exists but
        cannot be trusted. Files `verified` holds with an unchanged stat are not read again."""
        folder = self.folder(key)
        if not folder.exists():
            return None, None
        try:
            stored = loads_json((folder / RECORD).read_text(encoding="utf-8"))
            record, expected = stored["record"], stored["digest"]
        except FileNotFoundError:
            return None, f"{RECORD} is missing"
        except (OSError, ValueError, KeyError, TypeError):
            return None, f"{RECORD} is unreadable"
        if _record_digest(record) != expected or record.get("key") != key:
            return None, f"{RECORD} does not match its digest"
        for name, meta in record["files"].items():
            path = folder / name
            try:
                info = path.stat()
            except FileNotFoundError:
                return (None, None) if record.get(MOVED_OUT) else (None, f"{name} is missing")
            if info.st_size != meta["size"]:
                return None, f"{name} has {info.st_size} bytes, {meta['size']} expected"
            memo = f"{key}/{name}"
            if verified is not None and verified.stamps.get(memo) == [*stat_stamp(info), meta["blake2b"]]:
                continue
            if blake2b_file(path) != meta["blake2b"]:
                return None, f"{name} does not match its digest"
            if verified is not None:
                verified.stamps[memo] = [*stat_stamp(info), meta["blake2b"]]
                verified.dirty = True
        return record, None

    def discard(self, key: str) -> None:
        """Remove an entry (moved aside first, so a half-removed entry is never looked up)."""
        folder = self.folder(key)
        if not folder.exists():
            return
        self.staging_root.mkdir(parents=True, exist_ok=True)
        doomed = Path(tempfile.mkdtemp(dir=self.staging_root, prefix="discard-"))
        os.rename(folder, doomed / key)
        shutil.rmtree(doomed, ignore_errors=True)

    def commit(self, key: str, record: dict[str, Any], files: dict[str, bytes],
               moved_out: bool = False) -> dict[str, Any]:
        """Write `files` and `record` durably (fsync) into a private directory, then publish it
        as `key` with one rename. Returns the record with its file digests. A concurrent
        commit of the same key wins harmlessly; an entry whose files were handed over is
        replaced; a full disk leaves nothing behind. `moved_out`: the files will be moved
        into the stage's output folder (`MOVED_OUT`)."""
        record = {**record, "key": key, "files": {
            name: {"size": len(data), "blake2b": DIGESTS["blake2b"](data)}
            for name, data in sorted(files.items())}, **({MOVED_OUT: True} if moved_out else {})}
        self.staging_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.staging_root))
        try:
            for name, data in files.items():  # read-only: outputs link to these bytes (runtime.outputs)
                _write_synced(staging / name, data, READ_ONLY)
            _write_synced(staging / RECORD, dumps_json({"record": record, "digest": _record_digest(record)})
                          .encode("utf-8"))
            _fsync_dir(staging)
            target = self.folder(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, target)
            except OSError:
                found, damage = self.lookup(key)
                if found is not None:  # a concurrent commit of the same key
                    shutil.rmtree(staging, ignore_errors=True)
                    return record
                if damage is not None:
                    raise
                self.discard(key)  # a record whose files were handed over
                os.rename(staging, target)
            _fsync_dir(target.parent)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            if error.errno == errno.ENOSPC:
                raise DiskFull(f"no space left on the device of the item cache ({self.base}) while "
                               f"committing item {record.get('id', key)}") from None
            raise
        return record

    def size(self, key: str) -> int:
        """Bytes on disk of one entry."""
        return sum(p.stat().st_size for p in self.folder(key).rglob("*") if p.is_file())


def _write_synced(path: Path, data: bytes, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        if mode is not None:
            os.fchmod(handle.fileno(), mode)
        os.fsync(handle.fileno())
