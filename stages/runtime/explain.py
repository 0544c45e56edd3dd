"""Why an item was recomputed: each stage keeps the key parts of its last build.

A key is the hash of named parts (code, environment, backend, weights, inputs, ...). After a
stage runs, `.g4g/keys/<stage>.sqlite` holds every item's key and a digest per part, with each
distinct part value stored once, so `g4g explain ITEM` can name the parts that changed since
the build before (down to the code module or library) and the report can count them. It is
a SQLite database updated in one transaction: an edit rewrites the rows of the items it
changed, not a document of every item (at 20,000 images, score's record was 47 MB of JSON,
read and written whole by every run), and a killed run leaves the record as it was.

A stage `dvc repro` restores from DVC's run cache runs no code, so its record stays that of
the stage's last run. Both the record and the stage's index (`build/<index>.json`, a DVC
output restored with the stage) carry a digest of every item's key; where they differ, the
index came back with a restored stage and `explain` says so instead of describing another build.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Iterator

from base.files import DiskFull, loads_json, read_json
from base.keys import canonical_json, content_key

STATE_DIR = Path(".g4g/keys")
STAGE_INDEX = {"extract": Path("build/cutouts.json"), "plan": Path("build/layouts.json"),  # each carries
               "compose": Path("build/images.json"), "caption": Path("build/captions.json"),  # its run's
               "score": Path("build/scores.json")}  # keys digest
SUFFIX = ".sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, entry TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS part_values (digest TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""
NOT_OURS = (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_ERROR)  # damaged, or another schema
LOCK_WAIT = 60  # seconds a run waits for a reader (`g4g explain`) to finish
Entry = dict[str, Any]  # {"key", "parts": {name: digest}, "previous": {"key", "parts"} | None, "computed"}


def _state_file(stage: str, state_dir: Path) -> Path:
    return state_dir / f"{stage}{SUFFIX}"


def recorded_stages(state_dir: Path = STATE_DIR) -> list[str]:
    """The stages that have a record in `state_dir`."""
    return sorted(p.name[:-len(SUFFIX)] for p in state_dir.glob(f"*{SUFFIX}")) if state_dir.is_dir() else []


@contextmanager
def _database(path: Path) -> Iterator[sqlite3.Connection]:
    """The record, open (made where there is none); sqlite3.DatabaseError where the file is
    not a record of ours (damaged, another tool's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, timeout=LOCK_WAIT, isolation_level=None)) as connection:  # transactions begun by hand
        connection.executescript(SCHEMA)
        yield connection


def _entries(connection: sqlite3.Connection) -> dict[str, Entry]:
    """Every well-formed item row; a row changed by hand into anything else reads as absent."""
    entries = {}
    for item_id, text in connection.execute("SELECT id, entry FROM items"):
        try:
            entry = loads_json(text) if isinstance(text, str) else None
        except ValueError:
            continue
        if isinstance(item_id, str) and _well_formed(entry):
            entries[item_id] = entry
    return entries


def _well_formed(entry: Any) -> bool:
    previous = entry.get("previous") if isinstance(entry, dict) else None
    return (isinstance(entry, dict) and isinstance(entry.get("key"), str) and _digests(entry.get("parts"))
            and isinstance(entry.get("computed"), bool)
            and (previous is None or isinstance(previous, dict) and isinstance(previous.get("key"), str)
                 and _digests(previous.get("parts"))))


def _digests(parts: Any) -> bool:
    return isinstance(parts, dict) and all(isinstance(digest, str) for digest in parts.values())


def load(stage: str, state_dir: Path = STATE_DIR) -> dict[str, Any]:
    """The stage's last state: {"items": id -> entry, "values": digest -> part value,
    "keys_digest"}; a missing or damaged record reads as no state, and the stage's next run
    rewrites it."""
    state: dict[str, Any] = {"items": {}, "values": {}}
    path = _state_file(stage, state_dir)
    if not path.is_file():
        return state
    try:
        with _database(path) as connection:
            state["items"] = _entries(connection)
            for digest, text in connection.execute("SELECT digest, value FROM part_values"):
                try:
                    state["values"][digest] = loads_json(text)
                except (TypeError, ValueError):
                    continue
            row = connection.execute("SELECT value FROM meta WHERE name = 'keys_digest'").fetchone()
            if row is not None:
                state["keys_digest"] = row[0]
    except sqlite3.Error:
        return {"items": {}, "values": {}}
    return state


def item_keys(stage: str, state_dir: Path = STATE_DIR) -> set[str]:
    """The key of every item of the stage's last run (its part values unread)."""
    path = _state_file(stage, state_dir)
    try:
        if path.is_file():
            with _database(path) as connection:
                return {entry["key"] for entry in _entries(connection).values()}
    except sqlite3.Error:
        pass
    return set()


def changed_parts(before: dict[str, str] | None, after: dict[str, str]) -> list[str]:
    """Names of the parts whose digest differs (or `new` for an item built for the first time)."""
    if before is None:
        return ["new"]
    return sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))


def keys_digest(items: list[dict[str, Any]]) -> str:
    return content_key(sorted([item["id"], item["key"]] for item in items))


def record(stage: str, items: list[dict[str, Any]], computed: set[str],
           state_dir: Path = STATE_DIR) -> tuple[dict[str, int], str]:
    """Store this build's parts; return, over the computed items, how often each part changed,
    and the digest of every item's key (the stage's report carries it too). Only the rows
    that differ from the last run's are written; a record that is not ours is made anew."""
    path = _state_file(stage, state_dir)
    path.with_suffix(".json").unlink(missing_ok=True)  # the record as older builds wrote it
    digest = keys_digest(items)
    try:
        counts = _write(path, items, computed, digest)
    except sqlite3.DatabaseError as error:
        if getattr(error, "sqlite_errorcode", None) not in NOT_OURS:  # busy, locked: never thrown away
            raise
        for damaged in (path, path.with_name(path.name + "-journal")):
            damaged.unlink(missing_ok=True)
        counts = _write(path, items, computed, digest)
    return counts, digest


def _write(path: Path, items: list[dict[str, Any]], computed: set[str], digest: str) -> dict[str, int]:
    """`_record` into the database at `path`; a full disk is DiskFull, naming it."""
    try:
        with _database(path) as connection:
            return _record(connection, items, computed, digest)
    except sqlite3.DatabaseError as error:
        if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise DiskFull(f"no space left on the device while writing {path}") from None
        raise


def _record(connection: sqlite3.Connection, items: list[dict[str, Any]], computed: set[str],
            digest: str) -> dict[str, int]:
    """`record` in one transaction; the counts of changed parts."""
    connection.execute("BEGIN IMMEDIATE")
    previous = _entries(connection)
    changed: dict[str, Entry] = {}
    values: dict[str, Any] = {}
    counts: Counter[str] = Counter()
    digest_of: dict[int, str] = {}  # a part value items share (plan's request), by identity: hashed once
    for item in items:
        old = previous.get(item["id"])
        if old is not None and old["key"] == item["key"]:  # the same key: the same parts, hashed last time
            digests = old["parts"]
        else:
            digests = {}
            for name, value in item["parts"].items():
                if id(value) not in digest_of:
                    digest_of[id(value)] = content_key(value)
                digests[name] = digest_of[id(value)]
                values[digests[name]] = value
        if item["id"] in computed:
            counts.update(changed_parts(old["parts"] if old else None, digests) or ["cache"])
        entry = {"key": item["key"], "parts": digests,
                 "previous": {"key": old["key"], "parts": old["parts"]} if old else None,
                 "computed": item["id"] in computed}
        if entry != old:
            changed[item["id"]] = entry
    stored_ids = {item_id for (item_id,) in connection.execute("SELECT id FROM items")}
    gone = stored_ids - {item["id"] for item in items}  # rows not of ours included
    connection.executemany("DELETE FROM items WHERE id = ?", [(item_id,) for item_id in sorted(gone)])
    connection.executemany("INSERT OR REPLACE INTO items VALUES (?, ?)",
                           [(item_id, canonical_json(entry)) for item_id, entry in sorted(changed.items())])
    connection.executemany("INSERT OR IGNORE INTO part_values VALUES (?, ?)",
                           [(d, canonical_json(value)) for d, value in sorted(values.items())])
    if changed or gone:  # drop the values no entry names any more
        named = {d for item_id, entry in {**previous, **changed}.items() if item_id not in gone
                 for parts in (entry["parts"], (entry["previous"] or {}).get("parts", {})) for d in parts.values()}
        stored = {d for (d,) in connection.execute("SELECT digest FROM part_values")}
        connection.executemany("DELETE FROM part_values WHERE digest = ?", [(d,) for d in sorted(stored - named)])
    connection.execute("INSERT OR REPLACE INTO meta VALUES ('keys_digest', ?)", (digest,))
    connection.execute("COMMIT")
    return dict(counts)


def restored(stage: str, state: dict[str, Any], root: Path = Path(".")) -> bool:
    """Whether the stage's index (a DVC output, restored with the stage) is not the one its
    record was made with: DVC restored the stage from its run cache (or the index came from
    elsewhere, e.g. `git checkout`)."""
    if stage not in STAGE_INDEX:
        return False
    try:
        index = read_json(root / STAGE_INDEX[stage])
    except (OSError, ValueError):
        return False
    digest = index.get("keys_digest") if isinstance(index, dict) else None
    return bool(digest) and digest != state.get("keys_digest")


def _difference(before: Any, after: Any) -> str:
    """What differs between two values of one part, briefly."""
    if isinstance(before, dict) and isinstance(after, dict):
        names = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        return ", ".join(f"{k} {_short(before.get(k))} -> {_short(after.get(k))}" for k in names[:8]) + \
            (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    return f"{_short(before)} -> {_short(after)}"


def _short(value: Any) -> str:
    """A value as one short token: strings as they are, structures by digest."""
    if value is None:
        text = "absent"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (dict, list)):
        text = content_key(value)[:12]
    else:
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def explain(item_id: str, stages: list[str], state_dir: Path = STATE_DIR, root: Path = Path(".")) -> list[str]:
    """Lines saying, per stage, whether `item_id` was reused or recomputed in the last build and
    which parts of its key changed (or that DVC restored the stage, so no record says)."""
    lines = []
    for stage in stages:
        state = load(stage, state_dir)
        matches = sorted(i for i in state["items"] if i == item_id or i.startswith(f"{item_id}/"))
        if matches and restored(stage, state, root):
            lines.append(f"{stage}: restored from DVC's run cache, so the last build ran no code of it and "
                         f"{_state_file(stage, state_dir)} describes an earlier run; `dvc repro --force -s {stage}` "
                         "runs it again (reusing every cached item) and records why each item was built")
            continue
        for match in matches:
            entry = state["items"][match]
            verdict = "recomputed" if entry["computed"] else "reused"
            lines.append(f"{stage} {match}: {verdict} (key {entry['key']})")
            previous = entry["previous"]
            if previous is None:
                lines.append("  first build of this item")
                continue
            why = changed_parts(previous["parts"], entry["parts"])
            if not why and entry["computed"]:
                lines.append("  no input changed: its cache entry was missing or damaged")
            for name in why:
                old = state["values"].get(previous["parts"].get(name))
                new = state["values"].get(entry["parts"].get(name))
                lines.append(f"  {name}: {_difference(old, new)}")
    return lines
