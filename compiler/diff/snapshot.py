"""One side of a diff: the packed dataset of a git revision (from DVC's cache) or the workspace.

A revision's files are read through DVC's own file system (`dvc.api.DVCFileSystem`), which
finds `dataset/` through that revision's `dvc.lock` and reads it from the local DVC cache; the
workspace side reads `dataset/` as it is on disk. The manifest holds each sample's provenance
and the sha256 of each of its members (`stages.manifest`), so no shard is opened: `verify`
streams every shard once and reports where it does not hold what the manifest says, and a
dataset packed before the manifest held digests is read from its shards (said in `notes`).
`images` reads the few shards a page of thumbnails needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

from base.untrusted import escape_controls
from stages import manifest as manifest_rows
from stages.card.dataset_reader import IMAGE_EXTENSIONS, DatasetError, DatasetReader, folder_opener, shape_problem

DATASET = "dataset"


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
    """The dataset of one revision: recipe, kept samples (by key), rejected rows (by key), and
    what was skipped as not what pack writes (one escaped line each)."""

    label: str
    rev: str | None
    sha: str | None
    recipe: dict[str, Any]
    samples: dict[str, Sample]
    rejected: dict[str, dict[str, Any]]
    open_file: Callable[[str], BinaryIO]  # a file of the revision by its path in the project
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how it was read, where that is not the usual way
    mismatches: list[str] = field(default_factory=list)  # `verify`: where the shards differ from the manifest

    def images(self, keys: set[str]) -> dict[str, bytes]:
        """The image bytes of the samples `keys`, reading only the shards that hold them (an
        image past the pixel limits is left out, as a problem)."""
        wanted = {key for key in keys if key in self.samples}
        reader = _reader(self.label, self.open_file)
        compositions = set(self.recipe["recipe"]["compositions"])
        found: dict[str, bytes] = {}
        for shard in sorted({self.samples[key].shard for key in wanted}):
            for member in reader.members(shard, compositions,
                                         lambda key, extension: key in wanted and extension in IMAGE_EXTENSIONS):
                if member.key in wanted and member.extension in IMAGE_EXTENSIONS:
                    data = reader.image(shard, member)
                    if data is not None:
                        found[member.key] = data
        self.problems += reader.problems
        return found


def _reader(label: str, open_file: Callable[[str], BinaryIO]) -> DatasetReader:
    return DatasetReader(label, lambda name: open_file(f"{DATASET}/{name}"))


def _read(label: str, open_file: Callable[[str], BinaryIO], rev: str | None, sha: str | None,
          verify: bool = False) -> Snapshot:
    """One side, from its manifest (its shards too when `verify`, or when the manifest has no
    digests: a dataset packed before it had)."""
    reader = _reader(label, open_file)
    try:
        recipe = reader.recipe()
        manifest = reader.rows("manifest.jsonl", ("key", "shard"))
        rejected = {row["key"]: row for row in reader.rows("rejected.jsonl")}
        shards = reader.shard_names([row["shard"] for row in manifest], "manifest.jsonl")
        listed = _listed(reader, recipe, manifest)
    except DatasetError as error:
        raise DiffError(str(error)) from None
    notes = []
    if listed is None:
        notes.append(f"{label}: its manifest.jsonl has no member digests (packed before they were recorded); "
                     f"read its {len(shards)} shards instead")
    if listed is not None and not verify:
        return Snapshot(label, rev, sha, recipe, listed, rejected, open_file, reader.problems, notes)
    samples = _from_shards(reader, recipe, shards)
    missing = sorted({row["key"] for row in manifest} - samples.keys())
    if missing:
        reader.problems.append(f"{label}: {DATASET}/manifest.jsonl lists samples no shard holds (whole): "
                               f"{', '.join(escape_controls(key, limit=80) for key in missing[:5])}")
    mismatches = _mismatches(label, listed, samples) if listed is not None else []
    return Snapshot(label, rev, sha, recipe, samples, rejected, open_file, reader.problems, notes, mismatches)


def _listed(reader: DatasetReader, recipe: dict[str, Any], manifest: list[dict[str, Any]]) -> dict[str, Sample] | None:
    """The samples as the manifest records them (a row of the wrong shape is a problem), or
    None when it records no digests."""
    if not all(manifest_rows.has_digests(row) for row in manifest):
        return None
    try:
        shared = manifest_rows.dataset_wide(recipe)
    except (KeyError, TypeError, AttributeError):
        raise DatasetError(f"{reader.label}: recipe.json has no name, backends (name, version, params) and "
                           f"software; it is not the recipe.json pack writes") from None
    samples = {}
    for row in manifest:
        record = manifest_rows.provenance(row, shared)
        wrong = shape_problem(record, row["key"])
        if wrong is None and not all(isinstance(m, dict) and isinstance(m.get("name"), str)
                                     and isinstance(m.get("sha256"), str) for m in row["members"]):
            wrong = "members are not name and sha256 pairs"
        if wrong is None:
            samples[row["key"]] = Sample(row["shard"], record, manifest_rows.digests(row))
        else:
            reader.problem("manifest.jsonl", row["key"], wrong)
    return samples


def _from_shards(reader: DatasetReader, recipe: dict[str, Any], shards: list[str]) -> dict[str, Sample]:
    """Every sample the shards hold whole: its provenance JSON and the sha256 of each member."""
    compositions = set(recipe["recipe"]["compositions"])
    samples: dict[str, Sample] = {}
    for shard in shards:
        try:
            for member in reader.members(shard, compositions):
                sample = samples.setdefault(member.key, Sample(shard, {}))
                sample.digests[member.extension] = member.sha256
                if member.extension == "json":
                    sample.provenance = reader.provenance(shard, member) or {}
        except DatasetError as error:
            raise DiffError(str(error)) from None
    for key in sorted(key for key, sample in samples.items() if not sample.provenance):
        if "json" not in samples[key].digests:
            reader.problem(samples[key].shard, key, "a sample without its JSON member")
        del samples[key]  # its JSON is missing or was refused (a problem already says why)
    return samples


def _mismatches(label: str, listed: dict[str, Sample], found: dict[str, Sample]) -> list[str]:
    """Where the shards do not hold what the manifest says: one line per sample."""
    lines = []
    for key in sorted(listed.keys() & found.keys()):
        expected, actual = listed[key], found[key]
        differing = sorted(name for name in expected.digests.keys() | actual.digests.keys()
                           if expected.digests.get(name) != actual.digests.get(name))
        where = f"{label}: verify: {escape_controls(key, limit=80)}"
        if expected.shard != actual.shard:
            lines.append(f"{where}: in {actual.shard}, the manifest says {expected.shard}")
        if differing:
            lines.append(f"{where}: members differ from the manifest's sha256: "
                         f"{', '.join(escape_controls(name, limit=40) for name in differing)}")
        elif expected.provenance != actual.provenance:
            lines.append(f"{where}: the manifest's provenance differs from the sample's JSON member")
    extra = sorted(found.keys() - listed.keys())
    if extra:
        lines.append(f"{label}: verify: shards hold samples the manifest does not list: "
                     f"{', '.join(escape_controls(key, limit=80) for key in extra[:5])}")
    return lines


def workspace(root: Path, verify: bool = False) -> Snapshot:
    """The dataset as it is in `root/dataset` (the last `dvc repro`, committed or not); its
    shards are read too when `verify`."""
    if not (root / DATASET / "recipe.json").is_file():
        raise DiffError(f"the workspace has no built {DATASET}/ (no {DATASET}/recipe.json in {root}): run `dvc repro`")
    return _read("workspace", folder_opener(root), None, None, verify)


def revision(root: Path, rev: str, verify: bool = False) -> Snapshot:
    """The dataset of git revision or DVC experiment `rev`, from the local DVC cache; its
    shards are read too when `verify`."""
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
        return _read(label, lambda name: fs.open(name, "rb"), rev, sha, verify)
    except FileNotFoundError:
        raise DiffError(f"{label}: its {DATASET}/ is not in the local DVC cache. Fetch it from the DVC remote "
                        f"with `dvc fetch --all-commits {DATASET}` (or `git checkout {sha[:7]} && dvc pull {DATASET}`), "
                        f"or rebuild it with `git checkout {sha[:7]} && dvc repro`") from None
