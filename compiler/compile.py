"""The `compile` stage: params.yaml's recipe -> build/compiled/<stage>.json.

DVC runs it on every `dvc repro`; it rewrites the same bytes when nothing that matters
changed, so DVC skips every stage whose build document is unchanged. When nothing it read last
time changed (`base.input_record`), it stops before importing anything heavy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from base import input_record, installed
from base.errors import RecipeError
from base.files import DiskFull

STAGES = ("extract", "plan", "compose", "caption", "score", "pack", "train", "evaluate")
HASH_MEMO = Path(".g4g/hashes.json")  # sha256 of photos and weights by (size, mtime, inode)
INPUT_RECORD = Path(".g4g/compile-inputs.json")  # what the last compile read, and what it printed


def read_params(params_file: Path) -> tuple[str, list[str]]:
    """The selected recipe name and its Hydra overrides from params.yaml."""
    import yaml

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
    """The documents of one recipe as a stage reads them (every item's parts whole)."""
    from base.compiled import expanded

    return {stage: expanded(document) for stage, document in compile_documents(root, recipe_name, overrides).items()}


def compile_documents(root: Path, recipe_name: str, overrides: list[str]) -> dict[str, dict[str, Any]]:
    """Compose, validate and expand one recipe into the documents as written; raises RecipeError
    on any problem."""
    from compiler.buildplan import build
    from compiler.fingerprint import FileMemo
    from compiler.recipe import compose_recipe, locate_key, validate

    recipes_dir, templates_dir = root / "recipes", root / "templates"
    recipe_file = recipes_dir / f"{recipe_name}.yaml"
    recipe = compose_recipe(recipes_dir, recipe_name, overrides)
    backends = validate(recipe, recipe_file, templates_dir)
    memo = FileMemo(root / HASH_MEMO)
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
    from base.files import atomic_write_bytes, dumps_json_document

    for stage in STAGES:
        path = out_dir / f"{stage}.json"
        data = dumps_json_document(documents[stage], shares_values=True).encode("utf-8")
        if not (path.exists() and path.read_bytes() == data):
            atomic_write_bytes(path, data)


def current_documents(params_file: Path = Path("params.yaml"), out_dir: Path = Path("build/compiled")) \
        -> dict[str, dict[str, Any]] | None:
    """The documents the last compile wrote, when nothing it read has changed since (what a
    compile now would write), else None."""
    from base.compiled import read_compiled

    if input_record.unchanged(INPUT_RECORD, [str(params_file), str(out_dir)]) is None:
        return None
    return {stage: read_compiled(out_dir / f"{stage}.json") for stage in STAGES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("build/compiled"))
    args = parser.parse_args(argv)
    arguments = [str(args.params), str(args.out)]
    unchanged = input_record.unchanged(INPUT_RECORD, arguments)
    if unchanged is not None:
        print("\n".join(unchanged + ["compile: nothing it read changed since the last compile; documents kept"]),
              file=sys.stderr)
        return 0
    recorder = input_record.Recorder(ignored=[args.out, INPUT_RECORD, HASH_MEMO, installed.memo_folder()])
    try:
        return _compile(args, arguments, recorder)
    except (RecipeError, DiskFull) as error:
        recorder.stop()
        INPUT_RECORD.unlink(missing_ok=True)
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, RecipeError) else 1


def _compile(args: argparse.Namespace, arguments: list[str], recorder: input_record.Recorder) -> int:
    """Compile the selected recipe, write the documents and the record of what was read."""
    from compiler.recipe import pose_warnings
    from stages.card.readme import dataset_license

    recipe_name, overrides = read_params(args.params)
    documents = compile_documents(Path.cwd(), recipe_name, overrides)
    write_documents(documents, args.out)
    counts = {stage: len(documents[stage]["items"]) for stage in STAGES}
    messages = [f"compile: recipe '{recipe_name}': " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    licence = dataset_license(documents["pack"]["recipe"])
    if licence["license"] == "unknown":
        unstated = [what.replace("`", "") for what, name in licence["sources"] if not name]
        messages.append(f"warning: recipe '{recipe_name}': output.license is not set and {', '.join(unstated)} "
                        f"state no photo licence, so the dataset card says 'unknown'; give each concept and "
                        f"background its photos' `license` (cc-by-4.0, unsplash, ...) or set output.license")
    messages += pose_warnings(documents)
    print("\n".join(messages), file=sys.stderr)
    recorder.save(INPUT_RECORD, arguments, [args.out / f"{stage}.json" for stage in STAGES], messages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
