"""Item batches on a Ray cluster (`runtime.executor: ray`): the same batch function, the same
item cache, the same bytes as the local process pool.

Stages that load a model (a backend declaring `weights`, and the diffusion samplers of train
and evaluate) run in Ray actors: `backends.create` memoizes per process, so each actor loads
its model once and keeps it for every batch it is given; each asks for the GPUs
`runtime.ray_gpus` gives its stage (one by default where its model runs on a GPU and the
cluster has GPUs). Light stages run as Ray tasks. A worker killed mid-batch is retried (task
retries, actor restarts); its batch commits the same items under the same keys, so nothing
changes.

Workers commit items to the item cache themselves and the driver copies them out, so every
node must see the driver's project directory and item cache at the same paths (a shared
filesystem). Before its first batch, each worker checks that it does: the driver drops a
probe folder into the cache that a worker on a node-local directory would not see.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import os
import socket
import sys
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import stages
from base.settings import Settings, SettingsError, for_stage
from stages.runtime import ray_address, ray_instance
from stages.runtime.executor import WorkerFailed

RETRIES = 3  # a batch whose worker dies is run again this many times
IN_FLIGHT_PER_ACTOR = 2  # the next batch waits in the actor's queue, so it never idles between batches
SAMPLERS = ("train-prior", "evaluate-generate")  # item loops that always sample a diffusion model
CODE_ROOT = str(Path(stages.__file__).resolve().parent.parent)
CACHE_HELP = ("every Ray node must mount the item cache at the same path (a shared filesystem: NFS, CephFS, "
              "Lustre, a Kubernetes ReadWriteMany volume); set runtime.cache_dir (or G4G_CACHE_DIR) to it")


class NodeSetupError(RuntimeError):
    """A Ray node cannot see the project or the item cache where the driver does."""


def connect(settings: Settings):
    """The `ray` module, connected as `runtime.ray_address` says: `local` joins the build's
    shared private instance (`stages.runtime.ray_instance`); other addresses are checked first
    (`stages.runtime.ray_address`). An existing connection, as in tests or notebooks, is kept."""
    loaded = sys.modules.get("ray")
    if loaded is not None and loaded.is_initialized():
        return loaded
    if settings.ray_address == "local" and "ray" not in sys.modules:  # read when Ray is imported
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # the keeper's instance has Ray's token; older Rays ignore it
    try:
        ray = _ray()
    except ImportError:
        raise SettingsError("runtime.executor (or G4G_EXECUTOR) asks for Ray, which is not installed: "
                            "pip install 'g4g[ray]', or set the executor to local") from None
    address = settings.ray_address
    setting = f"runtime.ray_address (or G4G_RAY_ADDRESS) '{address}'"
    if address == "local":
        address = ray_instance.join()  # the build's shared private instance
    elif address != "auto":
        ray_address.check(address, setting)
    try:
        ray.init(address=address)
    except ConnectionError as error:
        raise SettingsError(f"{setting}: no Ray cluster found ({' '.join(str(error).split())}); start one "
                            "with `ray start --head`, or use local for a private instance") from None
    return ray


def model_needs(stage: str, context: dict[str, Any]) -> tuple[bool, bool]:
    """(whether the stage's batches load a model, worth keeping loaded in an actor; whether it
    runs on a GPU where there is one: its backend takes a `device`, or it trains or samples)."""
    from stages import backends

    if stage in SAMPLERS:
        return True, True
    description = context.get("backend") or context.get("document", {}).get("backend")
    if not isinstance(description, dict) or "name" not in description:
        return False, False
    try:
        module = backends.module(stage.split("-")[0], description["name"])
    except KeyError:
        return False, False
    if not hasattr(module, "weights"):
        return False, False
    backend = getattr(module, "Backend", None)
    return True, backend is None or "device" in inspect.signature(backend).parameters


_CHECKED: set[str] = set()  # probes this worker process has found


@dataclass(frozen=True)
class Placement:
    """Where the driver runs: every worker enters its directory and checks, once per stage
    run, that it imports the same code and sees the same item cache."""
    cwd: str
    code_root: str
    cache_root: str
    probe: str

    def enter(self) -> None:
        try:
            os.chdir(self.cwd)
        except OSError as error:
            raise NodeSetupError(f"this node cannot enter the project directory {self.cwd} ({error.strerror}): "
                                 "every Ray node must mount the project at the driver's path") from None
        if self.probe in _CHECKED:
            return
        if CODE_ROOT != self.code_root:
            raise NodeSetupError(f"this node runs the g4g code in {CODE_ROOT}, the driver the one in "
                                 f"{self.code_root}: every Ray node must mount the project at the driver's path")
        if not (Path(self.cache_root) / ".staging" / self.probe).is_dir():
            raise NodeSetupError(f"this node cannot reach the item cache {self.cache_root} (the driver's "
                                 f"probe {self.probe} is not there): {CACHE_HELP}")
        _CHECKED.add(self.probe)


def importable(value: Any) -> Any:
    """`value` with every function of `__main__` replaced by the same function of its module: a
    stage run as `python -m stages.compose` defines its batch function in `__main__`, which Ray
    workers do not run, so they get `stages.compose`'s own, by reference."""
    name = getattr(getattr(sys.modules["__main__"], "__spec__", None), "name", None)
    if isinstance(value, functools.partial):
        return functools.partial(importable(value.func), *map(importable, value.args),
                                 **{key: importable(item) for key, item in value.keywords.items()})
    if name and callable(value) and getattr(value, "__module__", None) == "__main__":
        return getattr(importlib.import_module(name), value.__qualname__)
    return value


def _ray():
    """The `ray` module. Imported by name: an `import` statement would make Ray's version part
    of every stage's content keys (compiler/fingerprint.py reads the imports), yet where a batch
    runs changes no byte, so installing or upgrading Ray must rebuild nothing."""
    return importlib.import_module("ray")


def _node() -> str:
    return f"{socket.gethostname()} ({importlib.import_module('ray.util').get_node_ip_address()})"


def _on_node(fn: Callable[[Any], Any], placement: Placement, task: Any) -> Any:
    """Run one batch where the driver would; an error carries the node it happened on."""
    try:
        placement.enter()
        return fn(task)
    except Exception as error:
        with contextlib.suppress(AttributeError):  # an exception type without a __dict__ goes as it is
            error.g4g_node = _node()
        raise


def _run_batch(fn: Callable[[Any], Any], placement: Placement, task: Any) -> Any:
    """A Ray task: one batch of a light stage."""
    return _on_node(fn, placement, task)


class _BatchWorker:
    """A Ray actor: runs the batches of a model stage, keeping what `fn` loads between them."""

    def __init__(self, fn: Callable[[Any], Any], placement: Placement):
        self.fn, self.placement = fn, placement

    def run(self, task: Any) -> Any:
        return _on_node(self.fn, self.placement, task)


class RayExecutor:
    """Runs a stage's item batches on Ray: as many at a time as `runtime.workers` (actors for a
    model stage, tasks otherwise), each asking for `runtime.ray_gpus` of its stage."""

    def __init__(self, stage: str, settings: Settings, context: dict[str, Any], cache_root: Path):
        self.stage, self.settings = stage, settings
        self.cache_root = Path(cache_root).resolve()
        self.uses_model, self.uses_gpu = model_needs(stage, context)

    def imap_unordered(self, fn: Callable[[Any], Any], tasks: list[Any]) -> Iterator[Any]:
        if not tasks:
            return
        ray = connect(self.settings)
        gpus = self.gpus(ray.cluster_resources())
        self.cache_root.joinpath(".staging").mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(dir=self.cache_root / ".staging", prefix="ray-probe-"))
        placement = Placement(os.getcwd(), CODE_ROOT, str(self.cache_root), probe.name)
        fn = importable(fn)
        fn_ref = ray.put(fn)
        actors: list[Any] = []
        pending: dict[Any, tuple[Any, Any]] = {}
        try:
            if self.uses_model:
                worker = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=RETRIES,
                                    max_task_retries=RETRIES)(_BatchWorker)
                actors = [worker.remote(fn, placement)
                          for _ in range(self.actor_count(ray.cluster_resources(), gpus, len(tasks)))]
                slots = deque(actor for actor in actors for _ in range(IN_FLIGHT_PER_ACTOR))
                submit = lambda actor, task: actor.run.remote(task)  # noqa: E731
            else:
                remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=RETRIES)(_run_batch)
                slots = deque([None] * min(self.settings.workers, len(tasks)))
                submit = lambda _, task: remote.remote(fn_ref, placement, task)  # noqa: E731
            queue = deque(tasks)
            while queue or pending:
                while queue and slots:
                    slot, task = slots.popleft(), queue.popleft()
                    pending[submit(slot, task)] = (slot, task)
                [done], _ = ray.wait(list(pending), num_returns=1)
                slot, task = pending.pop(done)
                slots.append(slot)
                yield self._result(ray, done, task)
        finally:  # a stage stopped by an error leaves nothing running
            for ref in pending if not actors else ():
                ray.cancel(ref)
            for actor in actors:
                ray.kill(actor)
            probe.rmdir()

    def gpus(self, resources: dict[str, float]) -> float:
        """GPUs per worker: `runtime.ray_gpus` for this stage, else 1 for a stage whose model
        runs on a GPU, on a cluster with GPUs (unless runtime.device is cpu), else 0."""
        named = for_stage(self.settings.ray_gpus, self.stage)
        available = resources.get("GPU", 0)
        if named is None:
            return 1.0 if self.uses_gpu and available >= 1 and self.settings.device != "cpu" else 0.0
        if float(named) > available:
            raise SettingsError(f"runtime.ray_gpus (or G4G_RAY_GPUS): {self.stage} asks for {named} GPUs per "
                                f"worker; the Ray cluster has {available:g}")
        return float(named)

    def actor_count(self, resources: dict[str, float], gpus: float, batches: int) -> int:
        """Actors to start: `runtime.workers`, no more than there are batches or than the
        cluster can place at once (an actor waiting for room would hold its batches back)."""
        room = int(resources.get("CPU", 1))
        if gpus:
            room = min(room, int(resources.get("GPU", 0) / gpus))
        return max(1, min(self.settings.workers, batches, room))

    def _result(self, ray, done, task: Any) -> Any:
        """The batch's result, or an error naming its items, the node and why."""
        from base.errors import BackendUnavailable
        from base.files import DiskFull

        items = ", ".join(str(item.get("id")) for item in task) if isinstance(task, list) else str(task)
        try:
            return ray.get(done)
        except ray.exceptions.RayTaskError as error:
            cause = error.cause
            where = f"{self.stage}: items {items} on node {getattr(cause, 'g4g_node', 'unknown')}"
            if isinstance(cause, (NodeSetupError, BackendUnavailable, DiskFull, SettingsError)):
                raise WorkerFailed(f"{where}: {cause}") from None
            raise WorkerFailed(f"{where}: {type(cause).__name__}: {cause}\n{error}") from None
        except ray.exceptions.RayError as error:
            raise WorkerFailed(f"{self.stage}: items {items}: the Ray worker was lost {RETRIES + 1} times "
                               f"({type(error).__name__}: {' '.join(str(error).split())[:500]})") from None
