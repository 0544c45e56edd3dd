"""params.yaml holds the recipe a build compiles, resolved, as DVC params.

`g4g params` composes the recipe params.yaml names (`recipe: demo`) and writes every resolved
key beside it, so DVC sees the recipe as it sees any params: `dvc params diff` names an edited
key, `dvc exp run -S compositions.cat_dog.num_images=140 -S backends.plan.max_overlap=0.1`
sets two, and `dvc repro` and `dvc exp run` build the same thing (what params.yaml says).
A params.yaml without resolved keys builds the named recipe file as it is (with `overrides`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from compiler.errors import RecipeError
from compiler.schema import Recipe

SETTINGS = ("recipe", "overrides", "runtime")  # params.yaml's keys that are not the recipe's
HEADER = """\
# The recipe `dvc repro` builds: `recipe` names its file in recipes/, and the keys below it are
# that recipe resolved (`g4g params` rewrites them from the file). Edit them here or with
# `dvc exp run -S KEY=VALUE`; `dvc params diff` shows what changed.
"""
RUNTIME_NOTE = """
# Throughput only: never part of a cache key, so changing these rebuilds nothing.
# G4G_WORKERS / G4G_BATCH_SIZE / G4G_DEVICE / G4G_CACHE_DIR override them; also precision,
# gradient_checkpointing, executor (local, ray, or per stage: compose=ray), ray_address, ray_gpus.
"""


def recipe_keys(params: dict[str, Any]) -> dict[str, Any]:
    """The resolved recipe params.yaml holds (empty when it names a recipe file only)."""
    return {key: value for key, value in params.items() if key not in SETTINGS}


def typed_recipe(keys: dict[str, Any], params_file: Path) -> Recipe:
    """The resolved recipe of params.yaml as a `Recipe`; errors name the file and key."""
    for key, text in _leaves(keys):
        if isinstance(text, str) and "${" in text:
            raise RecipeError(f"{params_file}: {key}: interpolations ('${{...}}') are not allowed in a recipe")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Recipe), keys))
    except OmegaConfBaseException as error:
        problem = str(error).splitlines()[0]
        where = f"{error.full_key}: " if getattr(error, "full_key", None) else ""
        raise RecipeError(f"{params_file}: {where}{problem}") from None


def resolved(recipe: Recipe) -> dict[str, Any]:
    """A `Recipe` as plain YAML-ready data, every key present."""
    return OmegaConf.to_container(OmegaConf.structured(recipe), enum_to_str=True)


def params_view(recipe: Recipe, backends: dict[str, Any]) -> dict[str, Any]:
    """The recipe's keys as params.yaml holds them: every backend option with its value
    (`backends`: compiler.recipe.validate's), so `dvc exp run -S` can set any of them."""
    return {**resolved(recipe), "backends": {kind: {"name": b["name"], **b["params"]} for kind, b in backends.items()}}


def departures(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """`key: params.yaml's value (recipe file's value)` wherever two params views differ."""
    ours, theirs = dict(_leaves(ours)), dict(_leaves(theirs))
    return [f"{key}: {ours.get(key, '(absent)')!r} (recipe file: {theirs.get(key, '(absent)')!r})"
            for key in sorted(set(ours) | set(theirs)) if ours.get(key) != theirs.get(key)]


def write_params(params_file: Path, params: dict[str, Any], keys: dict[str, Any]) -> None:
    """Rewrite params.yaml: its recipe name and runtime kept, the recipe's keys (`params_view`) anew."""
    def dump(data: dict[str, Any]) -> str:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110) if data else ""

    settings = {key: params[key] for key in ("recipe",) if key in params}
    runtime = {"runtime": params["runtime"]} if "runtime" in params else {}
    params_file.write_text(HEADER + dump(settings) + dump(keys) + (RUNTIME_NOTE + dump(runtime) if runtime else ""),
                           encoding="utf-8")


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf; lists are leaves, as `dvc params diff` shows them."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    else:
        yield path, value


def _params_command(args: Any) -> int:
    from compiler.compile import read_params, read_yaml
    from compiler.recipe import compose_recipe, validate

    params = read_yaml(args.params)
    name = args.recipe or read_params(args.params)[0]
    recipe = compose_recipe(Path("recipes"), name, list(args.override))
    backends = validate(recipe, Path("recipes") / f"{name}.yaml", Path("templates"))
    write_params(args.params, {**params, "recipe": name}, params_view(recipe, backends))
    print(f"{args.params}: recipe '{name}' resolved ({len(list(_leaves(recipe_keys(read_yaml(args.params)))))} keys)")
    return 0


def add_parser(commands: Any) -> None:
    """`g4g params [RECIPE]`: compose a recipe into params.yaml."""
    command = commands.add_parser("params", help="write a recipe, resolved, into params.yaml (DVC params)")
    command.add_argument("recipe", nargs="?", help="recipe name in recipes/ (default: params.yaml's `recipe`)")
    command.add_argument("-o", "--override", action="append", default=[], help="Hydra override, e.g. seed=3")
    command.add_argument("--params", type=Path, default=Path("params.yaml"))
    command.set_defaults(run=_params_command)
