"""Integrity of builds (issue 8): a damaged item cache is repaired, never reused; editing an
output reaches no cache; kills, a concurrent `dvc repro` and a full disk lose nothing.

The tests marked `slow` run `dvc repro` in a temporary git repository (about 2-3 s of DVC
start-up per call); the kill campaign prints its figures with `pytest -s`.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tarfile
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from PIL import Image

from base.files import DiskFull
from compiler.dvc_state import recover
from stages.runtime.cache import RECORD, VERIFIED, ItemCache
from tests.conftest import build_in_process, dataset_bytes, run_tool

STAGES = ("extract", "plan", "compose", "caption", "score", "pack")
CACHE = Path(".g4g/cache")
IMAGES = 6 * 4 + 4 * 5  # in the tiny dataset: per sample an image, a union mask and a mask per concept


def reports(root: Path) -> dict:
    return {p.stem: json.loads(p.read_text()) for p in (root / "reports").glob("*.json")}


def cache_entries(root: Path, stage: str) -> list[tuple[str, Path]]:
    """(key, folder) of every committed entry of `stage`, in key order."""
    cache = ItemCache(root / CACHE, stage)
    return [(key, cache.file(key, "")) for key in cache.keys()]


def damaged_entries(root: Path) -> dict[str, str]:
    """'stage/key' -> what is wrong, for every entry of every stage that lookup would reject."""
    damaged = {}
    for stage in STAGES:
        cache = ItemCache(root / CACHE, stage)
        for key in cache.keys():
            damage = cache.lookup(key)[1]
            if damage is not None:
                damaged[f"{stage}/{key}"] = damage
    return damaged


def stored_record(folder: Path) -> dict:
    return json.loads((folder / RECORD).read_text())["record"]


def flip_bit(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)[0]
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte ^ 0x10]))


def damage_cache(root: Path) -> dict[str, list[str]]:
    """Damage one entry of each stage but plan, in six ways; returns stage -> ids of the
    damaged items."""
    compose = [folder for _, folder in cache_entries(root, "compose")]
    truncated, flipped = stored_record(compose[0]), stored_record(compose[1])
    image = compose[0] / truncated["image"]
    os.truncate(image, image.stat().st_size // 2)
    flip_bit(compose[1] / flipped["mask"])

    extract = cache_entries(root, "extract")[0][1]
    deleted = stored_record(extract)
    (extract / sorted(deleted["files"])[0]).unlink()

    caption = cache_entries(root, "caption")[0][1]
    unreadable = stored_record(caption)
    (caption / RECORD).write_bytes((caption / RECORD).read_bytes()[:40])

    score = cache_entries(root, "score")[0][1]
    stored = json.loads((score / RECORD).read_text())
    tampered = stored["record"]
    tampered["keep"] = not tampered["keep"]  # valid JSON, a plausible record, a wrong digest
    (score / RECORD).write_text(json.dumps(stored))

    pack = cache_entries(root, "pack")[0][1]  # its shard was moved to dataset/: the entry holds a record only
    shard = stored_record(pack)["id"]
    (pack / RECORD).unlink()
    return {"extract": [deleted["id"]], "compose": [truncated["id"], flipped["id"]], "caption": [unreadable["id"]],
            "score": [tampered["id"]], "pack": [shard]}


# Reused from the last run's records, not the cache: records without files (caption, score), and
# shards still in dataset/ as pack placed them.
UNREAD = ("caption", "pack", "score")


def assert_repaired(built: dict, damaged: dict[str, list[str]], log: str) -> None:
    """Each stage recomputed exactly the damaged items it read (same bytes, so nothing
    downstream). Caption and score entries hold a record only, and pack's shards are still in
    dataset/ as placed: an unchanged item is reused from the last run's records without opening
    its entry, whose damage `g4g cache verify` reports (or the next build that needs it repairs)."""
    for stage in STAGES:
        count = 0 if stage in UNREAD else len(damaged.get(stage, []))
        assert (built[stage]["repaired"], built[stage]["computed"]) == (count, count), (stage, built[stage])
        assert built[stage]["failed"] == 0
    for stage, ids in damaged.items():
        for item_id in ids:
            assert (f"warning: {stage}: cached item {item_id} (" in log) == (stage not in UNREAD)
    assert "Traceback" not in log


def unread_damage(root: Path) -> list[str]:
    """The stages of the damaged entries left after a build: those of `UNREAD`."""
    return sorted(entry.split("/")[0] for entry in damaged_entries(root))


def decoded_images(root: Path) -> int:
    """Decode every image of every shard (header check, then a full load); returns how many."""
    count = 0
    for shard in sorted((root / "dataset").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith((".jpg", ".png", ".webp")):
                    data = tar.extractfile(member).read()
                    Image.open(io.BytesIO(data)).verify()
                    Image.open(io.BytesIO(data)).load()
                    count += 1
    return count


def test_damaged_cache_entries_are_recomputed_in_process(project, capsys):
    build_in_process(project)
    clean = dataset_bytes(project)
    capsys.readouterr()

    damaged = damage_cache(project)
    assert len(damaged_entries(project)) == 6
    built = build_in_process(project)

    assert_repaired(built, damaged, capsys.readouterr().err)
    assert unread_damage(project) == list(UNREAD)
    assert decoded_images(project) == IMAGES
    assert dataset_bytes(project) == clean


@pytest.mark.slow
def test_damaged_cache_entries_are_recomputed_by_dvc_repro_force(dvc_project):
    run_tool(dvc_project, "dvc", "repro")
    clean = dataset_bytes(dvc_project)

    damaged = damage_cache(dvc_project)
    result = run_tool(dvc_project, "dvc", "repro", "-f")

    assert_repaired(reports(dvc_project), damaged, result.stderr)
    assert unread_damage(dvc_project) == list(UNREAD)
    assert decoded_images(dvc_project) == IMAGES
    assert dataset_bytes(dvc_project) == clean


def file_digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.blake2b(p.read_bytes(), digest_size=20).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def overwrite_in_place(path: Path) -> bytes:
    """Overwrite bytes in the middle of `path` as an editor saving in place would; returns
    the original content."""
    original = path.read_bytes()
    with open(path, "r+b") as handle:
        handle.seek(len(original) // 2)
        handle.write(bytes(255 - b for b in original[len(original) // 2:][:64]))
    assert path.read_bytes() != original
    return original


@pytest.mark.slow
def test_editing_outputs_in_place_never_reaches_a_build_or_dvcs_cache(dvc_project):
    """An image of `build/` is a read-only hard link to the item cache (one copy on disk); a
    shard of `dataset/` is a copy, which DVC caches. An edit that forces its way into the image
    (as root) damages the shared bytes: the next build finds the entry damaged and recomputes
    it. An edit of the shard reaches no cache: the next build puts it back."""
    run_tool(dvc_project, "dvc", "repro")
    dvc_cache = file_digests(dvc_project / ".dvc/cache")
    item_cache = file_digests(dvc_project / CACHE)
    image = sorted((dvc_project / "build/images").glob("*.jpg"))[0]
    shard = sorted((dvc_project / "dataset").glob("*.tar"))[0]
    assert stat.S_IMODE(image.stat().st_mode) == 0o444
    assert any(os.path.samefile(image, path) for path in (dvc_project / CACHE / "compose").rglob(image.name))
    assert shard.stat().st_nlink == 1

    originals = {image: overwrite_in_place(image), shard: overwrite_in_place(shard)}

    assert file_digests(dvc_project / ".dvc/cache") == dvc_cache
    run = run_tool(dvc_project, "dvc", "repro")
    assert f"warning: compose: cached item {image.stem} (" in run.stderr
    assert all(path.read_bytes() == data for path, data in originals.items())  # the build restored them
    after = file_digests(dvc_project / ".dvc/cache")
    assert {path: after.get(path) for path in dvc_cache} == dvc_cache  # new run-cache entries are fine
    assert damaged_entries(dvc_project) == {}
    now = file_digests(dvc_project / CACHE)
    assert {p: now[p] for p in item_cache if not p.endswith(VERIFIED)} == \
        {p: d for p, d in item_cache.items() if not p.endswith(VERIFIED)}  # the damaged entry made again


def test_an_output_edit_keeping_size_and_mtime_never_reaches_the_dataset(project):
    """An in-place edit that leaves size and mtime as they were (a tool that preserves the
    date, `touch -r`, or an edit within a coarse file system's timestamp granularity) must
    not be packed into a shard, nor committed to the pack cache under the image's key."""
    build_in_process(project)
    clean = dataset_bytes(project)
    image = sorted((project / "build/images").glob("*.jpg"))[0]
    status = image.stat()
    overwrite_in_place(image)
    os.utime(image, ns=(status.st_atime_ns, status.st_mtime_ns))
    shutil.rmtree(project / CACHE / "pack")  # the shards are rebuilt (dropped by `g4g cache gc`, say)

    build_in_process(project)

    assert [name for name, data in dataset_bytes(project).items() if clean[name] != data] == []


def repro_environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONUNBUFFERED": "1", **extra}


class Repro:
    """`dvc repro` running in its own process group, its output lines timestamped as they come."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.started = time.monotonic()
        self.process = subprocess.Popen(["dvc", "repro"], cwd=root, env=env, start_new_session=True, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[tuple[float, str]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))

    def stage_starts(self) -> dict[str, float]:
        """Stage -> seconds after start when DVC began running it."""
        return {line.split("'")[1]: at for at, line in list(self.lines) if line.startswith("Running stage '")}

    def stage(self) -> str | None:
        starts = self.stage_starts()
        return max(starts, key=starts.get) if starts else None

    def wait_until(self, condition, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not condition() and self.process.poll() is None:
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.002)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.reader.join()

    def finish(self, timeout: float = 120) -> float:
        assert self.process.wait(timeout) == 0, self.output()
        self.reader.join()
        return time.monotonic() - self.started

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)


def reset_build(root: Path) -> None:
    """Back to a fresh checkout: no outputs, no lock, no item cache, no DVC cache (whose
    run-cache would restore stages instead of running them)."""
    for name in (".g4g", "build", "dataset", "reports", ".dvc/cache"):
        shutil.rmtree(root / name, ignore_errors=True)
    (root / "dvc.lock").unlink(missing_ok=True)


def test_written_files_are_readable_as_the_umask_allows(tmp_path):
    from base.files import atomic_write_bytes

    previous = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "card.md", b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "card.md").stat().st_mode & 0o777 == 0o644


def test_g4g_recover_sets_aside_the_dvc_state_a_kill_tore(dvc_project):
    """DVC refuses a half-written rwlock and dvc.lock; `g4g recover` removes the lock, moves
    the dvc.lock aside (nothing deleted) and DVC runs again."""
    lockfile = dvc_project / "dvc.lock"
    whole = (Path(__file__).parents[1] / "dvc.lock").read_text()  # the demo build's
    lockfile.write_text(whole[: whole.index("    cmd:")])  # killed just after a stage's name
    (dvc_project / ".dvc/tmp").mkdir(parents=True, exist_ok=True)
    (dvc_project / ".dvc/tmp/rwlock").write_text('{"read": {"dvc')
    refused = run_tool(dvc_project, "dvc", "status", check=False)
    assert refused.returncode != 0 and "dvc.lock" in refused.stderr + refused.stdout

    said = run_tool(dvc_project, "g4g", "recover").stdout
    assert "rwlock" in said and "dvc.lock.torn" in said, said
    assert not (dvc_project / ".dvc/tmp/rwlock").exists()
    assert (dvc_project / "dvc.lock.torn").read_text() == whole[: whole.index("    cmd:")]
    run_tool(dvc_project, "dvc", "status")
    assert "nothing to recover" in run_tool(dvc_project, "g4g", "recover").stdout


@pytest.mark.slow
def test_kill_campaign_every_stage_reruns_to_the_same_bytes(dvc_project):
    """SIGKILL `dvc repro` (its whole process group) inside each stage at two seeded random
    moments, one per round: at a random time into the stage (start-up, work, DVC's own cache
    commit) and just after a random number of its items were committed. Each kill is
    followed by a rerun that resumes the build and is killed in turn inside the next stage;
    the last one completes. Every kill must leave no entry that lookup rejects, and each
    round must end with the shards of an uninterrupted build."""
    env = repro_environment(G4G_WORKERS="1", G4G_BATCH_SIZE="1")
    rng = random.Random(8)
    started = time.monotonic()
    reference = Repro(dvc_project, env)
    total = reference.finish()
    starts = reference.stage_starts()
    ends = [starts[stage] for stage in STAGES[1:]] + [total]
    window = {stage: end - starts[stage] for stage, end in zip(STAGES, ends)}
    items = {stage: len(cache_entries(dvc_project, stage)) for stage in STAGES}
    uninterrupted = dataset_bytes(dvc_project)

    def after_random_time(repro: Repro, stage: str) -> str:
        delay = rng.uniform(0.05, 0.95) * window[stage]
        at = repro.stage_starts()[stage] + delay
        repro.wait_until(lambda: time.monotonic() - repro.started >= at)
        return f"{delay:.2f}s in"

    def after_random_commits(repro: Repro, stage: str) -> str:
        committed = rng.randint(1, items[stage] - 1)
        repro.wait_until(lambda: len(cache_entries(dvc_project, stage)) >= committed)
        time.sleep(rng.uniform(0, 0.02))
        return f"after {committed}/{items[stage]} commits"

    figures, torn_locks = [], 0
    for round_number, kill_point in enumerate((after_random_time, after_random_commits), 1):
        reset_build(dvc_project)
        for stage in STAGES:
            torn_locks += len(recover(dvc_project))
            repro = Repro(dvc_project, env)
            repro.wait_until(lambda: stage in repro.stage_starts())
            if stage not in repro.stage_starts():  # a timed kill before landed past this stage
                repro.kill()
                figures.append((round_number, stage, "-", "built before the kill"))
                continue
            moment = kill_point(repro, stage)
            landed_in, finished = repro.stage(), repro.process.poll() is not None
            repro.kill()
            figures.append((round_number, stage, moment, "finished first" if finished else f"killed in {landed_in}"))
            assert damaged_entries(dvc_project) == {}, figures[-1]
        torn_locks += len(recover(dvc_project))
        Repro(dvc_project, env).finish()
        assert dataset_bytes(dvc_project) == uninterrupted, f"round {round_number}"
        assert damaged_entries(dvc_project) == {}

    inside = [outcome == f"killed in {stage}" for _, stage, _, outcome in figures]
    staging = CACHE / ".staging"
    orphans = sum(1 for p in (dvc_project / staging).glob("*") if any(p.iterdir()))
    print(f"\nkill campaign: {len(STAGES)} stages x 2 kill points, {sum(inside)}/{len(figures)} kills inside their "
          f"stage, 2/2 resumed builds byte-identical to an uninterrupted one, 0 damaged cache entries after any "
          f"kill; {orphans} half-written staging folders left in {staging}; {torn_locks} torn DVC state files set aside by g4g recover "
          f"({time.monotonic() - started:.0f}s; uninterrupted build {total:.1f}s)")
    for round_number, stage, moment, outcome in figures:
        print(f"  round {round_number} {stage:8} {moment:>22}: {outcome}")
    # A kill after some commits is always inside its stage; a timed one lands past it when this
    # run is faster than the measured one.
    assert all(inside[len(STAGES):]), figures


@pytest.mark.slow
def test_second_repro_in_the_same_workspace_fails_clearly_and_damages_nothing(dvc_project, tmp_path, monkeypatch):
    first = Repro(dvc_project, repro_environment())
    first.wait_until(lambda: "extract" in first.stage_starts())
    time.sleep(0.3)  # into the stage's command (extract takes seconds)
    os.killpg(first.process.pid, signal.SIGSTOP)  # hold it mid-build while the second one tries
    try:
        second = run_tool(dvc_project, "dvc", "repro", check=False)
    finally:
        os.killpg(first.process.pid, signal.SIGCONT)
    first.finish()
    assert second.returncode != 0 and "Traceback" not in second.stderr
    blocked = f"is busy, it is being blocked by:\n  (PID {first.process.pid}): " in second.stderr
    locked = "Unable to acquire lock. Most likely another DVC process is running" in second.stderr
    assert blocked or locked, second.stderr
    concurrent = dataset_bytes(dvc_project)
    assert damaged_entries(dvc_project) == {}

    monkeypatch.setenv("G4G_CACHE_DIR", str(tmp_path / "clean-cache"))
    build_in_process(dvc_project)
    assert dataset_bytes(dvc_project) == concurrent


def build_up_to_compose(root: Path) -> None:
    from compiler import compile as compile_stage
    from stages import extract, plan

    assert compile_stage.main(["--params", str(root / "params.yaml"), "--out", str(root / "build/compiled")]) == 0
    extract.run(Path("build/compiled/extract.json"), Path("build/cutouts"), Path("build/cutouts.json"))
    plan.run(Path("build/compiled/plan.json"), Path("build/cutouts.json"), Path("build/layouts.json"))


def run_compose() -> None:
    from stages import compose

    compose.run(Path("build/compiled/compose.json"), Path("build/layouts.json"), Path("build/cutouts"),
                Path("build/images"), Path("build/images.json"))


def no_space(target: Path, data: bytes) -> None:
    """What a full disk does to a write: the first bytes land, then ENOSPC."""
    Path(target).write_bytes(data[:100])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))


def fill_cache_disk_after(monkeypatch: pytest.MonkeyPatch, writes: int) -> None:
    """The item cache's file writer fails from its write number `writes` + 1 on."""
    from stages.runtime import cache

    real, calls = cache._write_synced, []

    def write(path: Path, data: bytes, *mode: int) -> None:
        calls.append(path)
        return real(path, data, *mode) if len(calls) <= writes else no_space(path, data)

    monkeypatch.setattr(cache, "_write_synced", write)


def fill_output_disk_after(monkeypatch: pytest.MonkeyPatch, links: int) -> None:
    """Links into stage outputs fail from link number `links` + 1 on, as on a full disk (a new
    directory entry needs a block)."""
    from stages.runtime import outputs

    real, calls = outputs.os.link, []

    def link(source, target, **options) -> None:
        calls.append(target)
        if len(calls) > links:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        return real(source, target, **options)

    monkeypatch.setattr(outputs.os, "link", link)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("workers", ["1", "2"], ids=["in-process", "2-workers"])
def test_full_disk_in_the_cache_writer_leaves_nothing_partial(project, monkeypatch, workers):
    build_in_process(project)
    clean = dataset_bytes(project)
    monkeypatch.setenv("G4G_CACHE_DIR", str(project / "fresh-cache"))
    build_up_to_compose(project)
    outputs = tree(project / "build")

    with monkeypatch.context() as disk:
        disk.setenv("G4G_WORKERS", workers)  # workers are forked: each counts its own writes
        fill_cache_disk_after(disk, writes=7)  # 5 files of an item committed, the next one half written
        with pytest.raises(DiskFull) as raised:
            run_compose()

    message = str(raised.value)
    assert isinstance(raised.value, OSError)
    assert message.startswith(f"no space left on the device of the item cache ({project / 'fresh-cache'}) while "
                              "committing item cat_mug-0000")
    compose_cache = ItemCache(project / "fresh-cache", "compose")
    committed = [compose_cache.lookup(key) for key in compose_cache.keys()]
    assert committed and all(record is not None for record, _ in committed)
    assert [p for p in (project / "fresh-cache/.staging").rglob("*") if not p.is_dir()] == []
    assert tree(project / "build") == outputs  # no partial output: the last complete one stays

    build_in_process(project)
    assert dataset_bytes(project) == clean


def test_full_disk_while_linking_outputs_leaves_whole_files_and_reruns_to_the_same_folder(project, monkeypatch):
    build_up_to_compose(project)
    run_compose()
    clean = tree(project / "build/images")
    shutil.rmtree(project / "build/images")

    with monkeypatch.context() as disk:
        fill_output_disk_after(disk, links=3)
        with pytest.raises(DiskFull, match=r"no space left on the device while writing .*build/images/"):
            run_compose()

    assert damaged_entries(project) == {}
    partial = tree(project / "build/images")  # three whole files, no temporaries
    assert len(partial) == 3 and all(clean[name] == data for name, data in partial.items())
    run_compose()
    assert tree(project / "build/images") == clean


def test_full_disk_through_the_stage_cli_is_one_error_line(project, monkeypatch, capsys):
    from stages import compose

    build_up_to_compose(project)
    capsys.readouterr()
    fill_cache_disk_after(monkeypatch, writes=0)
    monkeypatch.setattr(sys, "argv", ["python -m stages.compose"])

    with pytest.raises(SystemExit) as exited:
        compose.main()

    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no space left on the device of the item cache") and err.count("\n") == 1
    assert "Traceback" not in err


DEEP_JSON = "[" * 200_000 + "]" * 200_000  # deeper than Python's parser recurses


def test_state_nested_too_deep_reads_as_absent_or_damaged(project, capsys):
    """Every JSON file g4g keeps between runs (the input record, memos, run logs, a cache entry's
    record) and every JSON row of the key records replaced by JSON nested 200,000 deep, as
    damage or an attacker might."""
    from compiler import cli

    build_in_process(project)
    clean = dataset_bytes(project)
    state = [p for p in (project / ".g4g").rglob("*.json")
             if not p.relative_to(project).is_relative_to(CACHE) or p.name == RECORD]
    state += list((project / "reports").glob("*.json"))
    assert len([p for p in state if p.name == RECORD]) > 10 and len(state) > 30
    for path in state:
        path.write_text(DEEP_JSON)
    records = sorted((project / ".g4g/keys").glob("*.sqlite"))  # the key records: every row's JSON
    assert len(records) == 6
    for path in records:
        with closing(sqlite3.connect(path)) as database:
            database.execute("UPDATE items SET entry = ?", (DEEP_JSON,))
            database.execute("UPDATE part_values SET value = ?", (DEEP_JSON,))
            database.commit()
    capsys.readouterr()

    assert cli.main(["report"]) == 0
    assert cli.main(["explain", "cat_mug-00001"]) == 2  # the keys record reads as absent
    assert "error: no item 'cat_mug-00001' in the last build" in capsys.readouterr().err
    assert cli.main(["cache", "verify"]) == 1
    out = capsys.readouterr().out
    assert "damaged" in out and "RecursionError" not in out
    build_in_process(project)
    assert dataset_bytes(project) == clean
    assert damaged_entries(project) == {}


def test_full_disk_while_compile_writes_is_one_error_line(project, monkeypatch, capsys):
    from base import files
    from compiler import compile as compile_stage

    monkeypatch.setattr(files.tempfile, "mkstemp", lambda **_: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    capsys.readouterr()
    assert compile_stage.main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no space left on the device while writing ") and err.count("\n") == 1
    assert not (project / compile_stage.INPUT_RECORD).exists()


def test_g4g_recover_removes_a_lock_whose_holders_all_exited(tmp_path):
    from compiler.dvc_state import RWLOCK

    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    lock = tmp_path / RWLOCK
    lock.parent.mkdir(parents=True)
    held = {"read": {"build/layouts.json": [{"pid": os.getpid(), "cmd": "dvc repro"}]}, "write": {}}
    lock.write_text(json.dumps(held))
    assert recover(tmp_path) == [] and lock.exists()  # a live holder: DVC's business
    lock.write_text(json.dumps({"read": {}, "write": {"build/captions.json": {"pid": exited.pid, "cmd": "dvc repro"}}}))
    assert recover(tmp_path) == [f"removed {RWLOCK}: every process it names has exited (a killed run's lock)"]
    assert not lock.exists()


def test_a_checked_cache_file_is_read_again_only_when_its_stat_changes(project, monkeypatch):
    """The second lookup of an unchanged entry reads nothing; a rewrite that keeps the size and
    puts the mtime back still changes the ctime, and is caught."""
    from stages.runtime import cache as cache_module
    from stages.runtime.cache import VerifiedFiles

    build_in_process(project)
    cache = ItemCache(project / CACHE, "compose")
    key = next(cache.keys())
    verified = VerifiedFiles(cache.root)
    assert cache.lookup(key, verified)[1] is None
    verified.save()
    reads = []
    real = cache_module.blake2b_file
    monkeypatch.setattr(cache_module, "blake2b_file", lambda path: reads.append(path) or real(path))
    verified = VerifiedFiles(cache.root)
    assert cache.lookup(key, verified) == (cache.lookup(key)[0], None) and len(reads) == len(
        stored_record(cache.file(key, ""))["files"])  # only the full lookup read them

    image = next(p for p in cache.file(key, "").iterdir() if p.suffix in (".jpg", ".png"))
    info = image.stat()
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF
    image.write_bytes(bytes(data))
    os.utime(image, ns=(info.st_atime_ns, info.st_mtime_ns))  # same size, same mtime
    assert "does not match its digest" in cache.lookup(key, VerifiedFiles(cache.root))[1]
