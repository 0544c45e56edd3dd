"""`runtime.executor: ray` on a two-node Ray cluster on this machine: the same bytes as the
local pool, models loaded once per actor, killed workers retried, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from base.errors import BackendUnavailable
from base.settings import Settings, SettingsError, for_stage, load_settings
from stages import backends
from stages.runtime import ray_executor
from stages.runtime.executor import WorkerFailed
from stages.runtime.runner import run_items
from tests.conftest import REPO, build_in_process, dataset_bytes, run_tool

ray = pytest.importorskip("ray")

U2NETP = backends.describe("extract", "u2netp", {"threshold": 70, "max_side": 1024, "min_confidence": 0.5})


@pytest.fixture(scope="module")
def ray_cluster():
    """Two Ray nodes of one CPU each, started once for this module."""
    from ray.cluster_utils import Cluster

    cwd = os.getcwd()
    os.chdir(REPO)  # Ray puts the driver's directory on its workers' path: the code under test
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)  # killed workers are expected here
    finally:
        os.chdir(cwd)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def ray_settings(tmp_path: Path, **changes) -> Settings:
    return replace(Settings(workers=2, batch_size=1, executor="ray", cache_dir=str(tmp_path / "cache")), **changes)


def numbered_items(count: int) -> list[dict]:
    return [{"id": f"item{n}", "n": n, "parts": {"n": n}} for n in range(count)]


def count_loads(items: list[dict], context: dict) -> list:
    """Loads the context's backend as every stage does; records whether this batch loaded it."""
    before = len(backends._LOADED)
    backends.create("extract", context["backend"])
    return [({"pid": os.getpid(), "loaded": len(backends._LOADED) - before}, {}) for _ in items]


def die_once(items: list[dict], context: dict) -> list:
    """Kills its own worker process the first time it meets item3, then computes normally."""
    marker = Path(context["marker"])
    if any(item["id"] == "item3" for item in items) and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return [({"square": item["n"] ** 2}, {f"{item['id']}.txt": str(item["n"] ** 2).encode()}) for item in items]


def cannot_load(items: list[dict], context: dict) -> list:
    raise BackendUnavailable("weights /models/sdxl not found on this node")


def test_the_tiny_build_gives_the_same_bytes_on_ray_as_on_the_local_pool(project, ray_cluster, monkeypatch):
    build_in_process(project)
    local = dataset_bytes(project)
    for folder in (".g4g", "build", "dataset", "reports"):
        shutil.rmtree(project / folder)
    monkeypatch.setenv("G4G_EXECUTOR", "ray")
    monkeypatch.setenv("G4G_WORKERS", "2")
    reports = build_in_process(project)
    assert dataset_bytes(project) == local
    assert all(reports[stage]["computed"] == reports[stage]["items"] for stage in ("extract", "compose", "score"))
    assert reports["compose"]["failed"] == 0 and reports["compose"]["reused"] == 0

    # Mixed executors, as `dvc repro` runs a stage: compose alone on Ray (joining the running
    # cluster), then every stage locally, reusing what the Ray workers committed.
    shutil.rmtree(project / ".g4g/cache/compose")
    run_tool(project, "python", "-m", "stages.compose", G4G_EXECUTOR="compose=ray", G4G_RAY_ADDRESS=ray_cluster.address)
    monkeypatch.delenv("G4G_EXECUTOR")
    reports = build_in_process(project)
    assert reports["compose"]["reused"] == 10 and reports["extract"]["reused"] == 4
    assert dataset_bytes(project) == local


def test_a_model_stage_loads_its_model_once_per_actor(project, ray_cluster):
    result, _ = run_items("extract", numbered_items(8), count_loads, {"backend": U2NETP}, ray_settings(project))
    records = list(result.records.values())
    actors = {record["pid"] for record in records}
    assert len(records) == 8 and os.getpid() not in actors
    assert sum(record["loaded"] for record in records) == len(actors) == 2  # 8 batches, 2 loads


@pytest.mark.parametrize("backend", [None, U2NETP], ids=["task", "actor"])
def test_a_worker_killed_mid_stage_is_retried_with_the_same_result(project, ray_cluster, backend):
    (project / "never-kill").touch()
    expected, _ = run_items("extract", numbered_items(6), die_once, {"backend": backend, "marker": "never-kill"},
                            Settings(workers=1, cache_dir="local"))
    context = {"backend": backend, "marker": str(project / "killed-once")}
    result, _ = run_items("extract", numbered_items(6), die_once, context, ray_settings(project))
    assert (project / "killed-once").exists()  # the kill happened
    assert result.computed == 6 and not result.failures
    assert result.records == expected.records


def test_a_node_that_cannot_load_its_model_names_the_items_and_why(project, ray_cluster):
    with pytest.raises(WorkerFailed, match=r"extract: items item[01] on node \S+ \([\d.]+\): "
                                           r"weights /models/sdxl not found"):
        run_items("extract", numbered_items(2), cannot_load, {"backend": U2NETP}, ray_settings(project))


def test_a_worker_that_cannot_reach_the_item_cache_says_where_it_must_be(project, ray_cluster, monkeypatch):
    elsewhere = project / "node-local"  # what a node without the shared mount sees: not the driver's probe
    monkeypatch.setattr(ray_executor.tempfile, "mkdtemp", lambda dir, prefix: str(elsewhere.mkdir() or elsewhere))
    settings = ray_settings(project)
    with pytest.raises(WorkerFailed) as error:
        run_items("extract", numbered_items(2), die_once, {"marker": str(project / "m")}, settings)
    message = str(error.value)
    assert f"cannot reach the item cache {Path(settings.cache_dir).resolve()}" in message
    assert "runtime.cache_dir (or G4G_CACHE_DIR)" in message and "shared filesystem" in message
    assert not (Path(settings.cache_dir) / "extract").exists()  # nothing was committed


def test_ray_absent_names_the_setting_and_the_extra(project, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    with pytest.raises(SettingsError, match=r"runtime\.executor \(or G4G_EXECUTOR\).*pip install 'g4g\[ray\]'"):
        run_items("extract", numbered_items(1), die_once, {"marker": "m"}, ray_settings(project))


def test_an_unreachable_cluster_names_the_setting(project, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    settings = ray_settings(project, ray_address=f"ray://127.0.0.1:{port}")
    with pytest.raises(SettingsError, match=rf"runtime\.ray_address \(or G4G_RAY_ADDRESS\) 'ray://127\.0\.0\.1:{port}'"
                                            r": no Ray cluster answers there"):
        run_items("extract", numbered_items(1), die_once, {"marker": "m"}, settings)


def test_a_ray_head_passes_the_address_check(ray_cluster):
    from stages.runtime.ray_address import check

    check(ray_cluster.address, "runtime.ray_address")  # a real Ray head answers as gRPC does


@pytest.mark.parametrize("answer", [None, b"HTTP/1.1 400 Bad Request\r\n\r\n"])  # silent; a web server
def test_an_address_that_is_not_ray_fails_within_seconds_naming_the_setting(project, monkeypatch, answer):
    import threading
    import time

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        if answer:
            threading.Thread(target=lambda: server.accept()[0].sendall(answer), daemon=True).start()
        monkeypatch.setattr(ray, "is_initialized", lambda: False)
        began = time.monotonic()
        with pytest.raises(SettingsError, match=rf"runtime\.ray_address \(or G4G_RAY_ADDRESS\) '127\.0\.0\.1:{port}': "
                                                r"something listens there, but it is not a Ray head node"):
            run_items("extract", numbered_items(1), die_once, {"marker": "m"},
                      ray_settings(project, ray_address=f"127.0.0.1:{port}"))
        assert time.monotonic() - began < 10


def test_a_ray_client_address_without_the_client_extra_says_what_to_install(project, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "grpc" else real(name, *a))
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with socket.socket() as server:  # a live port, as a Ray Client server's would be
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = "ray://127.0.0.1:%d" % server.getsockname()[1]
        with pytest.raises(SettingsError, match=rf"'{address}': a ray:// address needs the Ray Client, which is "
                                                r"not installed: pip install 'ray\[client\]'"):
            run_items("extract", numbered_items(1), die_once, {"marker": "m"}, ray_settings(project, ray_address=address))


def test_installing_ray_changes_no_key(project):
    """Where batches run changes no byte, so Ray's version is in no stage's environment."""
    from compiler.compile import compile_recipe

    documents = compile_recipe(project, "tiny", [])
    assert '"pillow"' in json.dumps(documents) and '"ray"' not in json.dumps(documents)


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("G4G_EXECUTOR", "dask", r"runtime\.executor \(or G4G_EXECUTOR\): 'dask' in 'dask'; valid: local, ray"),
    ("G4G_EXECUTOR", "compse=ray", r"runtime\.executor .*unknown stage 'compse' in 'compse=ray'; valid: extract, "),
    ("G4G_RAY_GPUS", "compose=one", r"runtime\.ray_gpus .*'one' in 'compose=one' is not a number of GPUs"),
    ("G4G_RAY_ADDRESS", "head-node", r"runtime\.ray_address .*'head-node'; valid: local, auto, ray://HOST:PORT"),
])
def test_bad_ray_settings_name_the_setting_and_valid_values(tmp_path, monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message):
        load_settings(tmp_path / "params.yaml")


def test_per_stage_settings_fall_back_from_a_run_to_its_stage_to_every_stage():
    assert for_stage("compose=ray,evaluate=ray", "evaluate-measure") == "ray"
    assert for_stage("compose=ray", "score") is None
    assert for_stage("ray", "train-prior") == "ray"
    assert for_stage("0.5,", "score") == "0.5" and for_stage("", "score") is None


def test_model_stages_ask_for_a_gpu_each_where_the_cluster_has_them(tmp_path):
    gpus = {"CPU": 16, "GPU": 4}
    compose = ray_executor.RayExecutor("compose", ray_settings(tmp_path, workers=8),
                                       {"backend": {"name": "sdxl-inpaint"}}, tmp_path)
    assert compose.uses_model and compose.gpus(gpus) == 1 and compose.actor_count(gpus, 1, 100) == 4
    caption = ray_executor.RayExecutor("caption", ray_settings(tmp_path), {"backend": {"name": "template"}}, tmp_path)
    assert not caption.uses_model and caption.gpus(gpus) == 0
    shared = ray_executor.RayExecutor("score", ray_settings(tmp_path, workers=8, ray_gpus="score=0.5"),
                                      {"backend": {"name": "clip"}}, tmp_path)
    assert shared.gpus(gpus) == 0.5 and shared.actor_count(gpus, 0.5, 100) == 8
    with pytest.raises(SettingsError, match=r"runtime\.ray_gpus .*compose asks for 1 GPUs per worker; the Ray "
                                            r"cluster has 0"):
        ray_executor.RayExecutor("compose", ray_settings(tmp_path, ray_gpus="1"), {}, tmp_path).gpus({"CPU": 16})
    assert compose.gpus({"CPU": 16}) == 0  # no GPU in the cluster: CPU actors
    extract = ray_executor.RayExecutor("extract", ray_settings(tmp_path), {"backend": U2NETP}, tmp_path)
    assert extract.uses_model and extract.gpus(gpus) == 0  # an ONNX model on the CPU: an actor, no GPU
    assert ray_executor.RayExecutor("train-prior", ray_settings(tmp_path), {}, tmp_path).gpus(gpus) == 1
