"""A stage's output folder, kept in step with the item cache.

An intermediate folder (`build/cutouts`, `build/images`; DVC does not cache them) is a view
of the item cache: each file is a hard link to the cached bytes, so an image is on disk once
however many folders show it. Cached files are read-only and nothing of ours writes into a
file: every output is written to a new file and renamed into place, so a link never lets a
later write reach the cache. A hand edit that forces its way in (root ignores the mode)
changes the file's ctime: the next build finds the cache entry damaged, recomputes it, and
links the new bytes in.

A folder DVC caches (`dataset`, `trained`, `evaluation`) holds copies: DVC would replace a
hard-linked file by a copy of its own cache anyway (with `cache.type` copy), and a hand edit of
a dataset file must reach neither cache. It is swapped in whole, so a reader (a training job)
never sees a mix. Where the stage hands its files over (`moved_out`: pack's shards), a file is
moved out of the item cache rather than copied, so besides DVC's cache it is on disk once.

An incremental build touches only what changed. A file still holding the digest, size,
mtime, ctime and inode recorded when it was placed (git's index trusts such stamps; ctime
cannot be set back by hand) stays as it is; a changed file is replaced atomically; files no
current item names are removed. A killed update leaves every file either old or new and whole,
and the next run converges to the same folder.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Iterable

from base.files import (DiskFull, atomic_write_bytes, copy_file, published_mode, read_json, replace_dir, stat_stamp,
                        write_json_document)
from stages.runtime.cache import READ_ONLY

STAMPS = Path(".g4g/outputs")


class OutputFolder:
    """`folder` and the stamps of the files placed in it by the last update."""

    def __init__(self, folder: Path, dvc_cached: bool = False, moved_out: bool = False):
        self.folder, self.dvc_cached, self.moved_out = Path(folder), dvc_cached, moved_out
        self.stamps_file = STAMPS / f"{self.folder.as_posix().strip('/').replace('/', '__')}.json"
        try:
            stamps = read_json(self.stamps_file)
        except (OSError, ValueError):
            stamps = {}
        # damaged: nothing is trusted, every file is placed again
        self.stamps: dict[str, list[Any]] = stamps if isinstance(stamps, dict) else {}
        self.checked: dict[str, os.stat_result] = {}  # found as placed by this object: not stat'ed again

    def holds(self, files: dict[str, dict[str, Any]]) -> bool:
        """Whether every file of a record (name -> size and digest) is in the folder as placed."""
        return all(self._unchanged(name, meta["blake2b"]) is not None for name, meta in files.items())

    def _stamp(self, name: str, info: os.stat_result | None = None) -> list[Any]:
        """A file's stat stamp (of `info`, its lstat, when given). DVC chmods every file of a
        persistent output it caches before its stage runs, which changes the ctime; there, as in
        DVC's own state database, a copy is trusted by size, mtime and inode (a copy reaches no
        cache)."""
        stamp = stat_stamp(info or os.lstat(os.path.join(self.folder, name)))
        return stamp[:2] + stamp[3:] if self.dvc_cached else stamp

    def _unchanged(self, name: str, digest: str) -> os.stat_result | None:
        """The file's lstat when it still has the digest and stamp recorded when it was placed."""
        recorded = self.stamps.get(name)
        if not (isinstance(recorded, list) and recorded[:1] == [digest]):
            return None
        if name in self.checked:
            return self.checked[name]
        try:
            info = os.lstat(os.path.join(self.folder, name))
        except OSError:
            return None
        if self._stamp(name, info) != recorded[1:]:
            return None
        self.checked[name] = info
        return info

    def _current(self, name: str, digest: str, source: str | Path) -> bool:
        """Unchanged, and (in a linked folder) the cached file itself where a link can be: a copy
        made by an older build is replaced by a link, so the bytes are on disk once."""
        here = self._unchanged(name, digest)
        if here is None:
            return False
        if self.dvc_cached:
            return True
        try:
            there = os.stat(source)
        except FileNotFoundError:  # entry removed by `g4g cache gc`: the output still holds its bytes
            return True
        return here.st_dev != there.st_dev or here.st_ino == there.st_ino

    def update(self, files: Iterable[tuple[str, str, str | Path]], extra: dict[str, bytes] | None = None) -> None:
        """Make the folder hold exactly `files` ((name, digest, cached path)) and `extra` (name ->
        bytes, written): linked in place, or copied and swapped in whole where DVC caches it. A
        file left as it was keeps its recorded stamp; only those placed anew are stat'ed, and
        the stamps are rewritten only when one changed."""
        files = list(files)
        if self.dvc_cached:
            placed = self._swap(files, extra or {})
        else:
            placed = self._in_place(files, extra or {})
        stamps = {name: [digest, *self._stamp(name)] if name in placed else self.stamps[name]
                  for name, digest, _ in files}
        if stamps != self.stamps or not self.stamps_file.is_file():
            write_json_document(self.stamps_file, stamps)
        self.stamps, self.checked = stamps, {}

    def _in_place(self, files: list[tuple[str, str, str | Path]], extra: dict[str, bytes]) -> set[str]:
        """Place what changed; the names placed."""
        self.folder.mkdir(parents=True, exist_ok=True)
        placed = set()
        for name, digest, source in files:
            if not self._current(name, digest, source):
                place(source, self.folder / name)
                placed.add(name)
        for name, data in extra.items():
            atomic_write_bytes(self.folder / name, data)
        remove_others(self.folder, {name for name, _, _ in files} | set(extra))
        return placed

    def _swap(self, files: list[tuple[str, str, str | Path]], extra: dict[str, bytes]) -> set[str]:
        """A staging copy of the folder (unchanged files moved as links), swapped in; the names
        copied anew."""
        staging = self.folder.with_name(f".{self.folder.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        placed = set()
        try:
            staging.mkdir(parents=True)
            for name, digest, source in files:
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                if self._current(name, digest, source):  # the same file (inode, size, mtime), moved with the folder
                    os.link(self.folder / name, staging / name)
                else:
                    (move_file if self.moved_out else copy_file)(source, staging / name)
                    placed.add(name)
            for name, data in extra.items():
                atomic_write_bytes(staging / name, data)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        replace_dir(staging, self.folder)
        return placed


def place(source: str | Path, target: Path) -> None:
    """Put `source` at `target` atomically: a hard link to the same read-only bytes, or a copy
    where the two are on different file systems (an item cache elsewhere) or links are not
    supported."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if stat.S_IMODE(os.stat(source).st_mode) & 0o222:  # an entry cached before outputs were links
        os.chmod(source, READ_ONLY)
    temporary = target.with_name(f".{target.name}.link")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise _disk_full(error, target)
        copy_file(source, temporary)
    try:
        os.replace(temporary, target)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        raise _disk_full(error, target) if isinstance(error, OSError) else error


def move_file(source: str | Path, target: Path) -> None:
    """Move a cached file to `target` (a rename; a copy, then the cached file removed, across
    file systems), readable and writable as a copy would be: its bytes leave the cache."""
    try:
        os.rename(source, target)
    except FileNotFoundError:
        raise FileNotFoundError(f"{source} left the item cache while this build placed it (another build sharing "
                                f"the cache moved it out); run the build again") from None
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise _disk_full(error, target)
        copy_file(source, target)
        os.unlink(source)
    os.chmod(target, published_mode())


def _disk_full(error: OSError, target: Path) -> OSError:
    if error.errno == errno.ENOSPC:
        return DiskFull(f"no space left on the device while writing {target}")
    return error


def remove_others(folder: Path, names: set[str]) -> None:
    """Remove every file under `folder` that `names` (paths relative to it) does not list, and
    the folders that leaves empty."""
    root = os.fspath(folder)
    for current, folders, files in os.walk(root, topdown=False):
        prefix = "" if current == root else Path(current).relative_to(root).as_posix() + "/"
        for name in files + [f for f in folders if os.path.islink(os.path.join(current, f))]:
            if prefix + name not in names:
                os.unlink(os.path.join(current, name))
        if current != root and not os.listdir(current):
            os.rmdir(current)
