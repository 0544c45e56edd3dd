"""One side of a diff: the packed dataset of a git revision (from DVC's cache) or the workspace.

A revision's files are read through DVC's own file system (`dvc.api.DVCFileSystem`), which
finds `dataset/` through that revision's `dvc.lock` and reads it from the local DVC cache; the
workspace side reads `dataset/` as it is on disk. Shards are streamed once: each sample keeps
its provenance JSON and the sha256 of every member, never the bytes (`images` re-reads the
few shards a page of thumbnails needs).
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

DATASET = "dataset"
IMAGE_EXTENSIONS = ("jpg", "png", "webp")


class DiffError(ValueError):
    """A revision cannot be compared: unknown, never built, or its outputs are not cached."""


@dataclass
class Sample:
    """A packed sample: its provenance JSON and the sha256 of each member (by extension)."""

    shard: str
    provenance: dict[str, Any]
    digests: dict[str, str] = field(default_factory=dict)


@dataclass
class Snapshot:
    """The dataset of one revision: recipe, kept samples (by key), rejected rows (by key)."""

    label: str
    rev: str | None
    sha: str | None
    recipe: dict[str, Any]
    samples: dict[str, Sample]
    rejected: dict[str, dict[str, Any]]
    open_file: Callable[[str], BinaryIO]

    def images(self, keys: set[str]) -> dict[str, bytes]:
        """The image bytes of the samples `keys`, reading only the shards that hold them."""
        wanted = {key for key in keys if key in self.samples}
        found: dict[str, bytes] = {}
        for shard in sorted({self.samples[key].shard for key in wanted}):
            for key, extension, data in _members(self.open_file(f"{DATASET}/{shard}")):
                if key in wanted and extension in IMAGE_EXTENSIONS:
                    found[key] = data
        return found


def _members(stream: BinaryIO):
    """(sample key, extension, bytes) of each member of a WebDataset shard, in order."""
    with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for info in tar:
            if info.isfile():
                key, _, extension = info.name.partition(".")
                yield key, extension, tar.extractfile(info).read()


def _read(label: str, open_file: Callable[[str], BinaryIO], rev: str | None, sha: str | None) -> Snapshot:
    def text(name: str) -> str:
        with open_file(f"{DATASET}/{name}") as stream:
            return stream.read().decode("utf-8")

    recipe = json.loads(text("recipe.json"))
    manifest = [json.loads(line) for line in text("manifest.jsonl").splitlines() if line]
    rejected = {row["key"]: row for row in (json.loads(line) for line in text("rejected.jsonl").splitlines() if line)}
    samples: dict[str, Sample] = {}
    for shard in sorted({row["shard"] for row in manifest}):
        for key, extension, data in _members(open_file(f"{DATASET}/{shard}")):
            sample = samples.setdefault(key, Sample(shard, {}))
            sample.digests[extension] = hashlib.sha256(data).hexdigest()
            if extension == "json":
                sample.provenance = json.loads(data)
    missing = sorted({row["key"] for row in manifest} - samples.keys())
    if missing:
        raise DiffError(f"{label}: {DATASET}/manifest.jsonl lists samples no shard holds: {', '.join(missing[:5])}")
    return Snapshot(label, rev, sha, recipe, samples, rejected, open_file)


def workspace(root: Path) -> Snapshot:
    """The dataset as it is in `root/dataset` (the last `dvc repro`, committed or not)."""
    if not (root / DATASET / "recipe.json").is_file():
        raise DiffError(f"the workspace has no built {DATASET}/ (no {DATASET}/recipe.json in {root}): run `dvc repro`")
    return _read("workspace", lambda name: (root / name).open("rb"), None, None)


def revision(root: Path, rev: str) -> Snapshot:
    """The dataset of git revision or DVC experiment `rev`, from the local DVC cache."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.scm import RevError, resolve_rev

    try:
        with Repo(str(root)) as repo:
            sha = resolve_rev(repo.scm, rev)
    except RevError:
        raise DiffError(f"unknown revision '{rev}': valid are git commits, branches, tags (HEAD~1, main, v1) "
                        f"and DVC experiment names (`dvc exp show`)") from None
    except DvcException as error:
        raise DiffError(f"{root} is not a DVC repository in git ({error}); run `g4g diff` in the project") from None
    label = f"{rev} ({sha[:7]})"
    fs = DVCFileSystem(str(root), rev=sha)
    if not (fs.exists(DATASET) and fs.info(DATASET).get("md5")):  # an out dvc.lock records no hash of: never built
        raise DiffError(f"{label} has no {DATASET}/ (its dvc.lock records no pack output): it was not built; "
                        f"build it with `git checkout {sha[:7]} && dvc repro`")
    try:
        if not fs.exists(f"{DATASET}/recipe.json"):  # the directory's listing is not cached either
            raise FileNotFoundError(f"{DATASET}/recipe.json")
        return _read(label, lambda name: fs.open(name, "rb"), rev, sha)
    except FileNotFoundError:
        raise DiffError(f"{label}: its {DATASET}/ is not in the local DVC cache. Fetch it from the DVC remote "
                        f"with `dvc fetch --all-commits {DATASET}` (or `git checkout {sha[:7]} && dvc pull {DATASET}`), "
                        f"or rebuild it with `git checkout {sha[:7]} && dvc repro`") from None
