"""Throughput settings: how fast to build, never what to build.

Read from the `runtime:` section of params.yaml (which no stage declares as a DVC parameter)
and from G4G_* environment variables, which win. None of them enters a content key, so
changing them rebuilds nothing.

The builder's trust decisions live here too, never in a recipe and never in the repository:
which LLM endpoints a recipe may send prompts to (`llm_endpoints`) and which environment
variable holds the API key sent to them (`llm_api_key_env`). They are read from the user's
config file (`$XDG_CONFIG_HOME/g4g/endpoints.yaml`, by default `~/.config/g4g/endpoints.yaml`)
and G4G_LLM_* variables, which win; params.yaml is tracked, so a pull request could change it,
and naming them there is an error. The item cache folder (`cache_dir`) is the builder's too:
params.yaml may name one only inside the project (the default, `.g4g/cache`); anywhere else
comes from the user's config file or G4G_CACHE_DIR, since `g4g cache gc` removes files there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from base.untrusted import load_yaml, redact_url, url_problem


PRECISIONS = ("auto", "fp32", "fp16", "bf16")
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
EXECUTORS = ("local", "ray")
STAGES = ("extract", "plan", "compose", "caption", "score", "pack", "train", "train-prior", "evaluate",
          "evaluate-generate", "evaluate-measure")  # the stages, and the runs of their item loops
RAY_ADDRESS = re.compile(r"(local|auto|(ray://)?[A-Za-z0-9_.-]+:[0-9]+)\Z")
TRUST = ("llm_endpoints", "llm_api_key_env")  # read only from outside the repository
USER_KEYS = (*TRUST, "cache_dir")  # what the user's config file may set
BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


class SettingsError(ValueError):
    """A runtime setting (params.yaml `runtime:` or a G4G_* variable) is invalid."""


@dataclass(frozen=True)
class Settings:
    workers: int = max(1, os.cpu_count() or 1)  # processes for item work
    batch_size: int = 8  # items per task sent to a worker
    device: str = "auto"  # for model backends: auto (cuda when present), cpu, cuda, cuda:1, ...
    precision: str = "auto"  # auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16
    torch_compile: bool = False  # compile diffusion UNets (slow start, faster steps)
    cpu_offload: bool = False  # keep diffusion models in CPU memory between uses (small GPUs)
    gradient_checkpointing: bool = False  # training: recompute activations (less memory, slower steps)
    cache_dir: str = ".g4g/cache"  # the item cache, shared by all recipes of this project
    executor: str = "local"  # where item batches run: local, ray, or per stage (compose=ray,score=ray)
    ray_address: str = "local"  # local (a private instance), auto (the `ray start` cluster), ray://host:port
    ray_gpus: str = ""  # GPUs per Ray worker by stage (compose=1,score=0.5); model stages: 1 if the cluster has GPUs
    llm_endpoints: tuple = ("https://api.openai.com/v1",)  # URL prefixes a recipe's base_url may use
    llm_api_key_env: str = "OPENAI_API_KEY"  # the variable whose value is sent to them as the API key


def load_settings(params_file: Path = Path("params.yaml")) -> Settings:
    values: dict[str, object] = {}
    if params_file.exists():
        try:
            params = yaml.safe_load(params_file.read_text()) or {}
        except (yaml.YAMLError, RecursionError) as error:
            raise SettingsError(f"{params_file}: not valid YAML: {' '.join(str(error).split())}") from None
        runtime = params.get("runtime") if isinstance(params, dict) else None
        if runtime is not None and not isinstance(runtime, dict):
            raise SettingsError(f"{params_file}: runtime: a mapping of settings, e.g. {{workers: 2}}")
        trusted = sorted(set(runtime or {}) & set(TRUST))
        if trusted:
            raise SettingsError(f"{params_file}: runtime.{trusted[0]}: the endpoints a build may send the API key "
                                f"to are the builder's choice, never the repository's (a pull request could change "
                                f"params.yaml); set it in {user_config()} or G4G_{trusted[0].upper()}")
        values.update(runtime or {})
        if "cache_dir" in (runtime or {}):
            _check_project_cache(params_file, runtime["cache_dir"])
    values.update(_user_trust())
    for field in fields(Settings):
        env = os.environ.get(f"G4G_{field.name.upper()}")
        if env is not None:
            values[field.name] = env
    unknown = sorted(set(values) - {f.name for f in fields(Settings)})
    if unknown:
        raise SettingsError(f"{params_file}: runtime: unknown setting(s) {unknown}; valid: "
                            f"{', '.join(f.name for f in fields(Settings))}")
    typed = {}
    for field in fields(Settings):
        if field.name in values:
            try:
                typed[field.name] = _coerce(field.type, values[field.name])
            except (ValueError, KeyError, TypeError):
                wanted = {"int": "a whole number", "bool": f"a boolean ({', '.join(BOOLEANS)})",
                          "tuple": "a list of URLs (comma-separated in a variable)"}[field.type]
                raise SettingsError(f"{params_file}: runtime.{field.name} (or G4G_{field.name.upper()}): "
                                    f"{values[field.name]!r} is not {wanted}") from None
    settings = Settings(**typed)
    if settings.workers < 1 or settings.batch_size < 1:
        raise SettingsError(f"{params_file}: runtime: workers and batch_size must be >= 1, got "
                            f"{settings.workers} and {settings.batch_size}")
    if settings.precision not in PRECISIONS:
        raise SettingsError(f"{params_file}: runtime.precision '{settings.precision}'; valid: {', '.join(PRECISIONS)}")
    for url in settings.llm_endpoints:
        problem = url_problem(url)
        if problem:
            raise SettingsError(f"{user_config()} llm_endpoints (or G4G_LLM_ENDPOINTS): "
                                f"{redact_url(url)}: {problem}")
    for name, valid in (("executor", EXECUTORS), ("ray_gpus", None)):
        try:
            per_stage(getattr(settings, name), valid)
        except ValueError as error:
            raise SettingsError(f"{params_file}: runtime.{name} (or G4G_{name.upper()}): {error}") from None
    if not RAY_ADDRESS.match(settings.ray_address):
        raise SettingsError(f"{params_file}: runtime.ray_address (or G4G_RAY_ADDRESS): {settings.ray_address!r}; "
                            "valid: local, auto, ray://HOST:PORT or HOST:PORT")
    if not VARIABLE_NAME.match(settings.llm_api_key_env):
        raise SettingsError(f"{user_config()} llm_api_key_env (or G4G_LLM_API_KEY_ENV): "
                            f"{settings.llm_api_key_env!r} is not an environment variable name")
    return settings


def _check_project_cache(params_file: Path, value: object) -> None:
    """params.yaml's cache_dir must lie inside the project (a relative path that stays there,
    links resolved): a pull request must not point `g4g cache gc` at the builder's files."""
    root = params_file.resolve().parent
    inside = isinstance(value, str) and value and not Path(value).is_absolute()
    if inside:
        try:
            (root / value).resolve().relative_to(root)
        except ValueError:
            inside = False
    if not inside:
        raise SettingsError(f"{params_file}: runtime.cache_dir {value!r}: the repository may only name a folder "
                            f"inside the project (e.g. .g4g/cache); a cache elsewhere is the builder's choice: set "
                            f"cache_dir in {user_config()} or G4G_CACHE_DIR")


def user_config() -> Path:
    """The builder's own settings file, outside every repository."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "g4g" / "endpoints.yaml"


def _user_trust() -> dict[str, object]:
    """`llm_endpoints`, `llm_api_key_env` and `cache_dir` from the user's config file (none
    when it is absent)."""
    path = user_config()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise SettingsError(f"{path}: cannot read ({error})") from None
    try:
        trust = load_yaml(text, str(path)) or {}
    except ValueError as error:
        raise SettingsError(str(error)) from None
    unknown = sorted(set(trust) - set(USER_KEYS)) if isinstance(trust, dict) else ["(not a mapping)"]
    if unknown:
        raise SettingsError(f"{path}: unknown key(s) {unknown}; valid: {', '.join(USER_KEYS)}, e.g. "
                            f"llm_endpoints: [http://localhost:8000/v1]")
    return trust


def per_stage(value: str, valid: tuple[str, ...] | None = None) -> dict[str, str]:
    """A per-stage setting by stage: `V` (every stage, as `*`) or `stage=V,stage=V`; values are
    from `valid`, or GPU counts (numbers >= 0) when `valid` is None."""
    by_stage = _by_stage(value)
    for stage, choice in by_stage.items():
        if stage != "*" and stage not in STAGES:
            raise ValueError(f"unknown stage '{stage}' in {value!r}; valid: {', '.join(STAGES)}")
        if valid is not None and choice not in valid:
            raise ValueError(f"'{choice}' in {value!r}; valid: {', '.join(valid)}, alone or per stage "
                             f"(e.g. compose={valid[-1]},score={valid[-1]})")
        if valid is None and not _is_gpus(choice):
            raise ValueError(f"'{choice}' in {value!r} is not a number of GPUs >= 0 (e.g. compose=1,score=0.5)")
    return by_stage


def for_stage(value: str, stage: str) -> str | None:
    """The value of a per-stage setting for `stage` (a run of it, like evaluate-measure, falls
    back to its stage, then to the value for every stage); None when it names none of them."""
    by_stage = _by_stage(value)
    return by_stage.get(stage, by_stage.get(stage.split("-")[0], by_stage.get("*")))


def _by_stage(value: str) -> dict[str, str]:
    entries = [entry.strip() for entry in value.split(",") if entry.strip()]
    if len(entries) == 1 and "=" not in entries[0]:
        return {"*": entries[0]}
    return {stage.strip(): choice.strip() for stage, _, choice in (entry.partition("=") for entry in entries)}


def _is_gpus(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False


def _coerce(kind: str, value: object) -> object:
    if kind == "int":
        return int(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        return BOOLEANS[str(value).lower()]  # KeyError for anything else
    if kind == "tuple":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise TypeError(value)
        return tuple(item.strip() for item in items if item.strip())
    return str(value)

