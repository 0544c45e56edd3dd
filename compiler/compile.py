"""The `compile` stage: params.yaml's recipe -> build/compiled/<stage>.json.

DVC runs it on every `dvc repro` (it is cheap); it rewrites the same bytes when nothing that
matters changed, so DVC skips every stage whose build document is unchanged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from base.errors import RecipeError
from base.files import dumps_json, write_json
from compiler.buildplan import build
from compiler.fingerprint import HashMemo
from compiler.recipe import compose_recipe, locate_key, validate

STAGES = ("extract", "plan", "compose", "caption", "score", "pack", "train", "evaluate")
HASH_MEMO = Path(".g4g/hashes.json")  # sha256 of photos and weights by (size, mtime, inode)


def read_params(params_file: Path) -> tuple[str, list[str]]:
    """The selected recipe name and its Hydra overrides from params.yaml."""
    try:
        params: dict[str, Any] = yaml.safe_load(params_file.read_text()) or {}
    except (yaml.YAMLError, RecursionError) as error:
        raise RecipeError(f"{params_file}: not valid YAML: {' '.join(str(error).split())}") from None
    recipe = params.get("recipe") if isinstance(params, dict) else None
    if not isinstance(recipe, str) or not recipe:
        raise RecipeError(f"{params_file}: recipe: name a recipe in recipes/ (for example 'demo')")
    overrides = params.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise RecipeError(f"{params_file}: overrides: a list of Hydra override strings, e.g. ['seed=1']")
    return recipe, overrides


def compile_recipe(root: Path, recipe_name: str, overrides: list[str]) -> dict[str, dict[str, Any]]:
    """Compose, validate and expand one recipe; raises RecipeError on any problem."""
    recipes_dir, templates_dir = root / "recipes", root / "templates"
    recipe_file = recipes_dir / f"{recipe_name}.yaml"
    recipe = compose_recipe(recipes_dir, recipe_name, overrides)
    backends = validate(recipe, recipe_file, templates_dir)
    memo = HashMemo(root / HASH_MEMO)
    try:
        return build(recipe, backends, root, templates_dir, memo)
    except RecipeError as error:
        if error.key is None:
            raise
        raise RecipeError(f"{locate_key(recipes_dir, recipe_file, error.key)}: {error}") from None
    finally:
        memo.save()


def write_documents(documents: dict[str, dict[str, Any]], out_dir: Path) -> None:
    """Write every stage's document; unchanged ones keep their bytes (and their mtime)."""
    for stage in STAGES:
        path = out_dir / f"{stage}.json"
        if path.exists() and path.read_text(encoding="utf-8") == dumps_json(documents[stage]):
            continue
        write_json(path, documents[stage])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("build/compiled"))
    args = parser.parse_args(argv)
    try:
        recipe_name, overrides = read_params(args.params)
        documents = compile_recipe(Path.cwd(), recipe_name, overrides)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_documents(documents, args.out)
    counts = {stage: len(documents[stage]["items"]) for stage in STAGES}
    print(f"compile: recipe '{recipe_name}': " + ", ".join(f"{n} {s}" for s, n in counts.items()), file=sys.stderr)
    if documents["pack"]["recipe"]["output"]["license"] == "unknown":
        print(f"warning: recipe '{recipe_name}': output.license is not set, so the dataset card says 'unknown'; set "
              f"it to the Hugging Face licence id your photos allow (cc-by-4.0, mit, other, ...)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
