"""Where item batches run. One small interface, so a distributed engine (Ray, Dask) can take
the local process pool's place without touching any stage: the runner picks one per stage as
`runtime.executor` says (stages/runtime/ray_executor.py runs them on a Ray cluster, and builds
on this module, never the other way round)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterable, Iterator, Protocol


class Executor(Protocol):
    def imap_unordered(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Any]:
        """Apply the picklable `fn` to every task; yield results as they complete."""


class WorkerFailed(RuntimeError):
    """A batch failed on a remote worker for a reason that is not one item's: the message
    names its items, the node and why."""


class LocalExecutor:
    """In-process for one worker (easy to debug), a process pool otherwise."""

    def __init__(self, workers: int):
        self.workers = workers

    def imap_unordered(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Any]:
        if self.workers <= 1 or len(tasks) <= 1:
            yield from map(fn, tasks)
            return
        with ProcessPoolExecutor(max_workers=min(self.workers, len(tasks))) as pool:
            futures = [pool.submit(fn, task) for task in tasks]
            for future in as_completed(futures):
                yield future.result()


def batched(items: Iterable[Any], size: int) -> list[list[Any]]:
    items = list(items)
    return [items[i:i + size] for i in range(0, len(items), size)]

