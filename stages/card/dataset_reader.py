"""Reading a packed dataset that someone else may have built: bounded and layout-checked.

`g4g card`, `g4g diff` (a revision from DVC's cache, or the workspace) and `g4g export` read
datasets they did not write, so nothing in one is trusted. Files are taken only by the names
pack writes (`recipe.json`, `manifest.jsonl`, `<name>.tar` shards, inside `dataset/`), opened
only when they are regular files (a FIFO never blocks), and read up to a size. Shard members
are taken only when they are regular files named `<key>.<extension>` with the key of a
composition of the recipe, and only up to a declared size (checked in the tar header, before
a byte is read); what is hashed is streamed, never held. JSON is parsed with a depth limit,
images are checked against the pixel limits before decoding. A member that breaks a rule is
a per-sample problem naming it (escaped); a file that breaks one is a DatasetError.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import stat
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from base.files import loads_json
from base.untrusted import escape_controls

MAX_JSON_BYTES = 16 << 20  # a sample's provenance JSON (a few KB)
MAX_MEMBER_BYTES = 256 << 20  # any other member: an image of the largest canvas, a mask, a caption
MAX_INDEX_BYTES = 1 << 30  # recipe.json, manifest.jsonl, rejected.jsonl, sizes.json
MAX_MEMBERS = 2_000_000  # members of one shard (100,000 samples of a dozen members each, and more)
CHUNK = 1 << 20
IMAGE_EXTENSIONS = ("jpg", "png", "webp")
SHARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+.-]*\.tar\Z")
MEMBER_NAME = re.compile(r"(?P<key>(?P<composition>[a-z0-9][a-z0-9_+-]*)-[0-9]+)\.(?P<extension>[a-z0-9_.+-]+)\Z")


class DatasetError(ValueError):
    """A dataset file is missing, too large, not a regular file or not what pack writes."""


@dataclass
class Member:
    """One member of a shard that passed every check: its sha256 (when the reader hashes), and
    its bytes when asked for."""

    key: str
    extension: str
    sha256: str | None
    data: bytes | None


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading only when it is a regular file (a link to one is followed, as
    DVC's link cache types need): a FIFO or device is refused without blocking on it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as error:
        raise DatasetError(f"{path}: cannot be opened ({error.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DatasetError(f"{path}: not a regular file (a folder, pipe or device); valid: the files pack writes")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def folder_opener(folder: Path) -> Callable[[str], BinaryIO]:
    """Opens `folder/<name>` with `open_regular` (names are checked by the reader first)."""
    return lambda name: open_regular(Path(folder) / name)


def read_bounded(stream: BinaryIO, limit: int, what: str) -> bytes:
    """All of `stream` (closed after), or a DatasetError past `limit` bytes."""
    with stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise DatasetError(f"{what}: over {limit:,} bytes; valid: the file pack writes")
    return data


class DatasetReader:
    """The files of one packed dataset, through `open_file(name)` (a name inside the dataset
    folder); `problems` collects what was skipped, one escaped line each."""

    def __init__(self, label: str, open_file: Callable[[str], BinaryIO], digests: bool = True):
        """`digests`: hash every member (`g4g diff`); the card reads keys, JSON and a few images,
        and leaves the other members' bytes unread."""
        self.label, self.open_file, self.digests = label, open_file, digests
        self.problems: list[str] = []

    def text(self, name: str) -> str:
        try:
            data = read_bounded(self.open_file(name), MAX_INDEX_BYTES, f"{self.label}: {name}")
        except FileNotFoundError:
            raise DatasetError(f"{self.label}: no {name} in the dataset; it is not a packed dataset (build it with "
                               f"`dvc repro`)") from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetError(f"{self.label}: {name} is not UTF-8 text") from None

    def json(self, name: str, kind: type = dict) -> Any:
        """A JSON file of the dataset, which must be a `kind` (a mapping by default)."""
        try:
            value = loads_json(self.text(name))
        except ValueError as error:
            if isinstance(error, DatasetError):
                raise
            raise DatasetError(f"{self.label}: {name} is not valid JSON ({escape_controls(str(error), limit=120)})"
                               ) from None
        if not isinstance(value, kind):
            raise DatasetError(f"{self.label}: {name} is not a JSON {'object' if kind is dict else kind.__name__}")
        return value

    def recipe(self) -> dict[str, Any]:
        """recipe.json, with the parts readers use checked: the compositions and their concepts."""
        recipe = self.json("recipe.json")
        compositions = recipe.get("recipe", {}).get("compositions") if isinstance(recipe.get("recipe"), dict) else None
        if not isinstance(compositions, dict) or not all(
                isinstance(c, dict) and isinstance(c.get("concepts"), list) for c in compositions.values()):
            raise DatasetError(f"{self.label}: recipe.json has no recipe.compositions of concept lists; it is not "
                               f"the recipe.json pack writes")
        return recipe

    def rows(self, name: str, fields: tuple[str, ...] = ("key",)) -> list[dict[str, Any]]:
        """The rows of a JSON Lines file, each an object with string `fields`."""
        rows = []
        for number, line in enumerate(self.text(name).splitlines(), 1):
            if not line:
                continue
            try:
                row = loads_json(line)
            except ValueError:
                row = None
            if not (isinstance(row, dict) and all(isinstance(row.get(f), str) for f in fields)):
                raise DatasetError(f"{self.label}: {name} line {number} is not an object with "
                                   f"{', '.join(fields)}")
            rows.append(row)
        return rows

    def shard_names(self, names: Any, source: str) -> list[str]:
        """The shard file names `source` lists, each a plain `<name>.tar` inside the dataset folder."""
        for name in names:
            if not (isinstance(name, str) and SHARD_NAME.match(name)):
                raise DatasetError(f"{self.label}: {source} names the shard {escape_controls(repr(name), limit=80)}; "
                                   f"valid: a NAME.tar file inside the dataset folder")
        return sorted(set(names))

    def members(self, shard: str, compositions: set[str],
                wanted: Callable[[str, str], bool] = lambda key, extension: False) -> Iterator[Member]:
        """The members of `shard` that pass every check, in order, with their bytes when they
        are JSON (parsed by the caller) or `wanted(key, extension)` says so; the others are
        recorded in `problems`."""
        try:
            stream = self.open_file(shard)
        except FileNotFoundError:
            raise DatasetError(f"{self.label}: the shard {shard} is missing from the dataset") from None
        count = 0
        try:
            with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
                for info in tar:
                    count += 1
                    if count > MAX_MEMBERS:
                        self.problem(shard, info.name, f"more than {MAX_MEMBERS:,} members; the rest was not read")
                        return
                    member = self._member(tar, info, shard, compositions, wanted)
                    if member is not None:
                        yield member
        except (tarfile.TarError, EOFError, OSError) as error:
            self.problem(shard, None, f"the shard is damaged ({escape_controls(str(error), limit=120)}); "
                                      f"its later members were not read")

    def _member(self, tar: tarfile.TarFile, info: tarfile.TarInfo, shard: str, compositions: set[str],
                wanted: Callable[[str, str], bool]) -> Member | None:
        found = MEMBER_NAME.match(info.name)
        if not info.isreg():
            return self.problem(shard, info.name, "not a regular file (a link, folder or device)")
        if found is None or found["composition"] not in compositions:
            return self.problem(shard, info.name, "not named <key>.<extension> with the key of a composition "
                                                  "of the recipe")
        key, extension = found["key"], found["extension"]
        keep = wanted(key, extension) or extension == "json"
        limit = MAX_JSON_BYTES if extension == "json" else MAX_MEMBER_BYTES
        if info.size > limit:
            return self.problem(shard, info.name, f"declares {info.size:,} bytes; valid: at most {limit:,}")
        if not (keep or self.digests):
            return Member(key, extension, None, None)  # the stream skips its bytes
        digest, kept = hashlib.sha256(), []
        source = tar.extractfile(info)
        for chunk in iter(lambda: source.read(CHUNK), b""):
            digest.update(chunk)
            if keep:
                kept.append(chunk)
        return Member(key, extension, digest.hexdigest(), b"".join(kept) if keep else None)

    def problem(self, shard: str, member: str | None, reason: str) -> None:
        where = f"{shard}" + (f": {escape_controls(repr(member), limit=120)}" if member is not None else "")
        self.problems.append(f"{self.label}: {where}: {reason}")
        return None

    def provenance(self, shard: str, member: Member) -> dict[str, Any] | None:
        """A sample's JSON member when it has the shape pack writes (the fields readers use),
        or None (a problem)."""
        try:
            value = loads_json(member.data)
        except (ValueError, UnicodeDecodeError) as error:
            return self.problem(shard, f"{member.key}.json", f"not valid JSON ({escape_controls(str(error), limit=80)})")
        wrong = shape_problem(value, member.key)
        return value if wrong is None else self.problem(shard, f"{member.key}.json", wrong)

    def image(self, shard: str, member: Member) -> bytes | None:
        """An image member's bytes when its header names a size within the pixel limits (checked
        before any decoding), else None (a problem)."""
        from PIL import Image

        from stages.runtime.images import MAX_SIDE

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(member.data)) as image:
                    width, height = image.size
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            return self.problem(shard, f"{member.key}.{member.extension}", f"over {Image.MAX_IMAGE_PIXELS:,} "
                                f"pixels (Pillow's decompression-bomb limit); not decoded")
        except (OSError, ValueError, SyntaxError):
            return self.problem(shard, f"{member.key}.{member.extension}", "not a readable image")
        if max(width, height) > MAX_SIDE or width * height > Image.MAX_IMAGE_PIXELS:
            return self.problem(shard, f"{member.key}.{member.extension}",
                                f"{width}x{height} pixels; valid: sides up to {MAX_SIDE} and at most "
                                f"{Image.MAX_IMAGE_PIXELS:,} pixels")
        return member.data


PROVENANCE = {"key": str, "composition": str, "seed": int, "canvas": list, "concepts": list, "background": dict,
              "captions": dict, "score": dict, "item_keys": dict}  # a sample's JSON: what card and diff read
CONCEPT = {"id": str, "box": list, "cutout": dict}
CUTOUT = {"id": str, "sha256": str, "box_in_source": list}


def _numbers(value: Any, count: int) -> bool:
    return isinstance(value, list) and len(value) == count and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)


def shape_problem(value: Any, key: str) -> str | None:
    """What is wrong with a sample's JSON for the readers (None: nothing)."""
    if not isinstance(value, dict):
        return "not a JSON object"
    wrong = [name for name, kind in PROVENANCE.items() if not isinstance(value.get(name), kind)]
    if wrong:
        return f"not the JSON pack writes: {', '.join(wrong)} missing or of the wrong type"
    if value["key"] != key or value["key"].rsplit("-", 1)[0] != value["composition"]:
        return f"its key {escape_controls(repr(value['key']), limit=80)} is not the member's"
    if not (_numbers(value["canvas"], 2) and min(value["canvas"]) > 0):
        return "canvas is not [width, height]"
    if not all(isinstance(c, dict) and all(isinstance(c.get(n), k) for n, k in CONCEPT.items())
               and _numbers(c["box"], 4) and all(isinstance(c["cutout"].get(n), k) for n, k in CUTOUT.items())
               for c in value["concepts"]):
        return "concepts are not objects with id, box [x, y, w, h] and cutout (id, sha256, box_in_source)"
    if not (all(isinstance(text, str) for text in value["captions"].values())
            and isinstance(value["captions"].get("short"), str) and isinstance(value["captions"].get("detailed"), str)):
        return "captions are not short and detailed texts"
    score = value["score"]
    if not (isinstance(score.get("concepts"), list) and all(isinstance(c, dict) for c in score["concepts"])
            and isinstance(score.get("metrics") or {}, dict)):
        return "score has no list of concepts or its metrics are not a mapping"
    return None
