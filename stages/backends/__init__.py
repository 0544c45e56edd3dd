"""Backends are strategies behind a string key, one module each.

A backend module defines `VERSION` (bumped whenever its output for the same input changes; it
enters every content key), `Params` (a dataclass of its recipe options, checked at compile
time) and `Backend` (constructed once per worker from those params). Modules import heavy
libraries lazily, so the compiler can read `Params` cheaply. Options that only change how fast
a backend runs are listed in its module's `THROUGHPUT`: they reach the backend, never a key or
the dataset's record. Adding a backend means one new module and one line here.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import json
from types import ModuleType
from typing import Any

REGISTRY: dict[str, dict[str, str]] = {
    "extract": {
        "u2netp": "stages.backends.extract.u2netp",
        "alpha": "stages.backends.extract.alpha",
    },
    "plan": {
        "solver": "stages.backends.plan.solver",
        "openai": "stages.backends.plan.openai",
        "hf": "stages.backends.plan.hf",
        "replay": "stages.backends.plan.replay",
    },
    "compose": {"paste": "stages.backends.compose.paste", "sdxl-inpaint": "stages.backends.compose.sdxl_inpaint"},
    "caption": {
        "template": "stages.backends.caption.template",
        "vlm": "stages.backends.caption.vlm",
        "vlm-openai": "stages.backends.caption.vlm_openai",
    },
    "score": {"geometric": "stages.backends.score.geometric", "clip": "stages.backends.score.clip"},
    "train": {
        "none": "stages.backends.train.none",
        "custom-diffusion": "stages.backends.train.custom_diffusion",
        "lora": "stages.backends.train.lora",
    },
    "evaluate": {"none": "stages.backends.evaluate.none", "clip": "stages.backends.evaluate.clip"},
}


# Backends that run PyTorch models: they need the `models` extra (torch, diffusers, transformers,
# open_clip), which the demo's install leaves out.
MODEL_BACKENDS = {("plan", "hf"), ("compose", "sdxl-inpaint"), ("caption", "vlm"), ("score", "clip"),
                  ("train", "custom-diffusion"), ("train", "lora"), ("evaluate", "clip")}
MODEL_PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "open_clip", "accelerate", "peft")


def missing_packages(kind: str, name: str) -> list[str]:
    """The model libraries backend `name` needs that are not installed (empty when it needs none)."""
    if (kind, name) not in MODEL_BACKENDS:
        return []
    return [package for package in MODEL_PACKAGES if importlib.util.find_spec(package) is None]


def names(kind: str) -> list[str]:
    return sorted(REGISTRY[kind])


def module(kind: str, name: str) -> ModuleType:
    """The backend module registered as `name` for stage `kind`."""
    if name not in REGISTRY.get(kind, {}):
        raise KeyError(f"unknown {kind} backend '{name}'; valid: {', '.join(names(kind))}")
    return importlib.import_module(REGISTRY[kind][name])


_LOADED: dict[str, Any] = {}


def create(kind: str, description: dict[str, Any], **runtime: Any) -> Any:
    """The backend a build document describes, built once per process (models load once).

    `runtime` offers throughput settings (device, threads, ...); each backend receives only
    those its constructor names.
    """
    backend_module = module(kind, description["name"])
    accepted = inspect.signature(backend_module.Backend).parameters
    runtime = {k: v for k, v in runtime.items() if k in accepted}
    memo = json.dumps([kind, description, runtime], sort_keys=True, default=str)
    if memo not in _LOADED:
        _LOADED[memo] = backend_module.Backend(backend_module.Params(**description["params"]), **runtime)
    return _LOADED[memo]


def describe(kind: str, name: str, params: dict[str, Any], files: dict[str, str] | None = None) -> dict[str, Any]:
    """What identifies a backend's behaviour in keys and provenance: name, version, options
    and the sha256 of every file an option names (templates, examples, plans)."""
    description = {"name": name, "version": module(kind, name).VERSION, "params": params}
    if files:
        description["files"] = files
    return description


ENDPOINT_THROUGHPUT = ("concurrency", "timeout", "max_retries")  # of a backend asking a chat endpoint


def throughput_options(kind: str, name: str) -> frozenset[str]:
    """Options of a backend that change how fast it runs, not what it makes (its `THROUGHPUT`)."""
    return frozenset(getattr(module(kind, name), "THROUGHPUT", ()))


def keyed(kind: str, description: dict[str, Any]) -> dict[str, Any]:
    """A backend's description as keys and the dataset record it: without its throughput options,
    so changing them recomputes nothing."""
    ignored = throughput_options(kind, description["name"])
    return {**description, "params": {k: v for k, v in description["params"].items() if k not in ignored}}


def file_options(kind: str, name: str) -> dict[str, str]:
    """Options of a backend that name files, with the folder each is relative to."""
    return dict(getattr(module(kind, name).Params, "FILES", {}))


def option_names(kind: str, name: str) -> list[str]:
    return [f.name for f in dataclasses.fields(module(kind, name).Params)]
