"""The item-level loop every stage shares: reuse cached items, compute the rest in batches on
the executor, link results into the stage's output folder, write the index and the report."""

from __future__ import annotations

import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from base.errors import BackendUnavailable, ChangedDuringBuild, ItemError
from base.files import DiskFull, write_json, write_json_document
from base.keys import content_keys
from base.settings import Settings, for_stage
from base.untrusted import escape_controls
from stages.runtime import explain, last_run
from stages.runtime.cache import ItemCache, VerifiedFiles
from stages.runtime.executor import Executor, LocalExecutor, WorkerFailed, batched
from stages.runtime.outputs import OutputFolder

ItemOutput = tuple[dict[str, Any], dict[str, bytes]]
"""What computing one item gives: its record and its files (name -> bytes)."""

BatchFn = Callable[[list[dict[str, Any]], dict[str, Any]], list["ItemOutput | ItemError"]]


def each_item(fn: Callable[[dict[str, Any], dict[str, Any]], ItemOutput]) -> BatchFn:
    """Lift a one-item function to a batch function that reports ItemErrors per item."""

    @functools.wraps(fn)
    def batch(items: list[dict[str, Any]], context: dict[str, Any]) -> list[ItemOutput | ItemError]:
        outputs: list[ItemOutput | ItemError] = []
        for item in items:
            try:
                outputs.append(fn(item, context))
            except ItemError as error:
                outputs.append(error)
        return outputs

    return batch


@dataclass
class StageResult:
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> record
    failures: dict[str, str] = field(default_factory=dict)  # id -> reason
    skipped: dict[str, str] = field(default_factory=dict)  # id -> upstream reason
    computed: int = 0
    reused: int = 0
    repaired: int = 0  # damaged cache entries discarded and recomputed
    changed_inputs: int = 0  # items whose input was edited after compile hashed it: the stage must rerun
    recomputed_because: dict[str, int] = field(default_factory=dict)  # key part -> items
    keys_digest: str = ""  # of every item's key: ties the report to its record in .g4g/keys
    seconds: float = 0.0
    outputs: OutputFolder | None = None  # the output folder as this run found it (files not stat'ed twice)

    def entries(self) -> list[dict[str, Any]]:
        """The records in id order (with each file's size and digest)."""
        return list(self.records.values())

    def report(self, stage: str, backend: str, **extra: Any) -> dict[str, Any]:
        return {
            "stage": stage, "backend": backend,
            "items": len(self.records) + len(self.failures) + len(self.skipped),
            "computed": self.computed, "reused": self.reused, "repaired": self.repaired,
            "failed": len(self.failures), "skipped": len(self.skipped),
            "seconds": round(self.seconds, 3),
            "recomputed_because": dict(sorted(self.recomputed_because.items())),
            "keys_digest": self.keys_digest,
            "failures": dict(sorted(self.failures.items())),
            "skipped_items": dict(sorted(self.skipped.items())),
            **extra,
        }


def _work(batch: list[dict[str, Any]], process: BatchFn, context: dict[str, Any], cache: ItemCache,
          moved_out: bool = False):
    """Runs in a worker: compute one batch, commit each good item to the cache."""
    outcomes = []
    for item, output in zip(batch, process(batch, context)):
        if isinstance(output, ItemError):
            outcomes.append((item["id"], None, str(output), isinstance(output, ChangedDuringBuild)))
            continue
        record, files = output
        outcomes.append((item["id"], cache.commit(item["key"], {"id": item["id"], **record}, files, moved_out),
                         None, False))
    return outcomes


def executor_for(stage: str, settings: Settings, context: dict[str, Any], cache_root: Path) -> Executor:
    """The executor `runtime.executor` names for `stage` (local when it names none)."""
    if (for_stage(settings.executor, stage) or "local") == "local":
        return LocalExecutor(settings.workers)
    from stages.runtime.ray_executor import RayExecutor  # Ray only when a stage asks for it

    return RayExecutor(stage, settings, context, cache_root)


def run_items(
    stage: str,
    items: list[dict[str, Any]],
    process: BatchFn,
    context: dict[str, Any],
    settings: Settings,
    skipped: dict[str, str] | None = None,
    outputs: Path | None = None,
    dvc_cached: bool = False,
    moved_out: bool = False,
) -> tuple[StageResult, ItemCache]:
    """Reuse or compute every item; `process` must be picklable.

    Each item has an `id` and `parts`: everything that determines its output, by name. Its
    content key is the hash of the parts. An item the last run produced under the same key is
    reused from that run's records when its files are still as placed in `outputs` (the
    folder `materialize` fills, `dvc_cached` as there; records without files need none); any
    other is looked up in the item cache, whose entry is verified before reuse (files re-read
    only when their stat changed), and a damaged one is discarded (with a warning) and
    recomputed. So an edit checks the items it touched, not the whole dataset. `moved_out`
    (with `dvc_cached` outputs): `materialize` moves the files out of the item cache instead of
    copying them, so they are on disk once besides DVC's cache; an item whose file is no longer
    in `outputs` as placed is computed again.
    """
    start = time.perf_counter()
    cache = ItemCache(Path(settings.cache_dir), stage)
    cache.hold()
    verified = VerifiedFiles(cache.root)
    placed = OutputFolder(outputs, dvc_cached, moved_out) if outputs is not None else None
    result = StageResult(skipped=dict(skipped or {}), outputs=placed)
    previous = last_run.load(stage, cache.root)
    for item, key in zip(items, content_keys(stage, [item["parts"] for item in items])):
        item["key"] = key
    todo, unsure = [], []
    for item in items:
        record = previous.get(item["key"])
        if record is not None and record.get("id") == item["id"] and (
                not record["files"] or placed is not None and placed.holds(record["files"])):
            result.records[item["id"]] = record
            result.reused += 1
        else:
            unsure.append(item)
    for item in tqdm(unsure, desc=f"{stage} (checking cache)", unit="item", disable=None, file=sys.stderr,
                     leave=False):
        record, damage = cache.lookup(item["key"], verified)
        if damage is not None:
            tqdm.write(f"warning: {stage}: cached item {item['id']} ({item['key']}) is damaged: {damage}; "
                       "recomputing it", file=sys.stderr)
            cache.discard(item["key"])
            result.repaired += 1
        if record is not None:
            result.records[item["id"]] = record
            result.reused += 1
        else:
            todo.append(item)
    verified.save()
    work = functools.partial(_work, process=process, context=context, cache=cache, moved_out=moved_out)
    executor = executor_for(stage, settings, context, cache.base)
    with tqdm(total=len(todo), desc=stage, unit="item", disable=None, file=sys.stderr) as progress:
        for outcomes in executor.imap_unordered(work, batched(todo, settings.batch_size)):
            for item_id, record, reason, changed in outcomes:
                if record is None:
                    result.failures[item_id] = reason
                    if changed:
                        result.changed_inputs += 1
                else:
                    result.records[item_id] = record
                    result.computed += 1
            progress.update(len(outcomes))
    result.records = dict(sorted(result.records.items()))
    last_run.save(stage, list(result.records.values()), cache.root, previous)
    result.recomputed_because, result.keys_digest = explain.record(stage, items, {item["id"] for item in todo})
    result.seconds = time.perf_counter() - start
    return result, cache


def materialize(result: StageResult, cache: ItemCache, out_dir: Path, extra: dict[str, bytes] | None = None,
                dvc_cached: bool = False) -> None:
    """Make `out_dir` hold the current items' files plus `extra` files, touching only what
    changed: hard links to the item cache updated in place, or, for a folder DVC caches,
    copies (or the cached files themselves, moved out) swapped in whole (see `OutputFolder`)."""
    files = [(name, meta["blake2b"], cache.file_path(record["key"], name))
             for record in result.records.values() for name, meta in record["files"].items()]
    folder = result.outputs
    if folder is None or folder.folder != Path(out_dir) or folder.dvc_cached != dvc_cached:
        folder = OutputFolder(out_dir, dvc_cached)
    folder.update(files, extra)


def finish(stage: str, result: StageResult, backend: str, index: Path, index_body: dict[str, Any],
           reports_dir: Path = Path("reports"), **extra: Any) -> None:
    """Write the stage index and `reports/<stage>.json`, and print a one-line summary (ids and
    reasons may quote file names: their control characters are escaped)."""
    write_json_document(index, {
        **index_body, "failed": [{"id": i, "reason": r} for i, r in sorted(result.failures.items())],
        "skipped": [{"id": i, "reason": r} for i, r in sorted(result.skipped.items())],
        "keys_digest": result.keys_digest})  # ties the index to .g4g/keys (explain.restored)
    report = result.report(stage, backend, **extra)
    write_json(reports_dir / f"{stage}.json", report)
    repaired = f", {result.repaired} damaged cache entries repaired" if result.repaired else ""
    print(f"{stage}: {report['items']} items: {result.computed} computed, {result.reused} reused, "
          f"{len(result.failures)} failed, {len(result.skipped)} skipped{repaired} ({result.seconds:.1f}s)",
          file=sys.stderr)
    for item_id, reason in sorted(result.failures.items()):
        print(escape_controls(f"  failed {item_id}: {reason}"), file=sys.stderr)
    if result.changed_inputs:  # fail the stage, so that DVC records nothing and the next run redoes it
        raise StageFailed(f"{stage}: {result.changed_inputs} items read a file that changed during the build "
                          f"(nothing was cached from those bytes); rerun `dvc repro`")


class StageFailed(RuntimeError):
    """The stage cannot produce a trustworthy output; the message says what and how to fix it."""


def run_cli(run_stage: Callable[[], None]) -> None:
    """Run a stage; a backend that cannot start or a bad runtime setting ends it with its own
    message, not a traceback."""
    from base.settings import SettingsError

    try:
        run_stage()
    except (BackendUnavailable, SettingsError, DiskFull, StageFailed, WorkerFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


def attach(items: list[dict[str, Any]], index: dict[str, Any], records: str, field_name: str,
           upstream: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Give each item its upstream record as `field_name`; items without one are skipped with
    the upstream stage's reason."""
    by_id = {record["id"]: record for record in index[records]}
    reasons = {entry["id"]: f"{upstream}: {entry['reason']}" for entry in index["failed"] + index["skipped"]}
    ready = [{**item, field_name: by_id[item["id"]]} for item in items if item["id"] in by_id]
    skipped = {item["id"]: reasons.get(item["id"], f"no {upstream} output")
               for item in items if item["id"] not in by_id}
    return ready, skipped
