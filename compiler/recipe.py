"""Compose a recipe with Hydra, check it against the schema and the backend registry.

Every error names the recipe file the offending key comes from, the key path and what
would be valid; nothing is built from an invalid recipe.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Iterator

import yaml
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from base.errors import RecipeError
from base.keys import file_sha256
from base.sources import confined
from compiler import schema
from compiler.schema import (
    IMAGE_FORMATS,
    MAX_CONCEPTS_PER_IMAGE,
    MAX_IMAGES,
    MAX_RESOLUTION,
    MAX_SHADOW_LENGTH,
    MAX_SHARD_SIZE,
    MAX_SIZE,
    MAX_SIZE_CM,
    MIN_CAMERA_HEIGHT_CM,
    MIN_CONCEPTS_PER_IMAGE,
    MIN_VIEW_SIDE,
    PLACEMENTS,
    STAGE_KINDS,
    TOKEN_STYLES,
    Recipe,
)
from base.settings import SettingsError, load_settings, user_config
from base.untrusted import endpoint_allowed, escape_controls, redact_url, url_problem
from stages import backends
from stages.card.readme import WHOLE as WHOLE_DATASET

SCHEMA_NAME = "schema"
GENERATING_COMPOSERS = ("sdxl-inpaint",)  # compose backends that paint a background from its phrase
SCHEMA_CLASSES = {cls.__name__: cls for cls in (schema.Recipe, schema.Concept, schema.Background,
                                                schema.Composition, schema.Strategy, schema.Backends,
                                                schema.Output, schema.Scene, schema.Surface, schema.Region, schema.Light)}
RECIPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*\Z")  # a file in recipes/, never a path
IDENTIFIER = re.compile(r"[a-z0-9][a-z0-9_+-]*\Z")  # lowercase: webdataset lowercases field names
MAX_INCLUDE_DEPTH = 50  # files deep in defaults lists


def _register_schema() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=Recipe)


def describe_error(error: Exception, recipes_dir: Path, recipe_file: Path) -> str:
    """One line: the file the bad key comes from, the key path, the problem, the valid keys."""
    message = str(error)
    source = re.search(r"In '([^']+)'", message)
    full_key = getattr(error, "full_key", None) or _search(r"full_key: (\S+)", message)
    if source and (recipes_dir / f"{source.group(1)}.yaml").is_file():
        origin = recipes_dir / f"{source.group(1)}.yaml"
    else:
        origin = locate_key(recipes_dir, recipe_file, full_key) if full_key else recipe_file
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    problem = next((line for line in lines if not line.startswith(("In ", "full_key", "reference_type",
                                                                    "object_type", "Error merging"))), lines[0])
    schema = _search(r"not in '(\w+)'", problem)
    if schema in SCHEMA_CLASSES:
        problem += f"; valid keys: {', '.join(f.name for f in dataclasses.fields(SCHEMA_CLASSES[schema]))}"
    return f"{origin}: {full_key + ': ' if full_key else ''}{problem}"


def _search(pattern: str, text: str) -> str | None:
    found = re.search(pattern, text)
    return found.group(1) if found else None


def compose_recipe(recipes_dir: Path, name: str, overrides: list[str] | None = None) -> Recipe:
    """Hydra-compose `recipes_dir/name.yaml` with `overrides` into a typed `Recipe`.

    A recipe may come from someone else: it is read only from `recipes_dir` (no `..`, no
    `hydra.searchpath`) and may not call resolvers (`${oc.env:...}`, `${now:...}`), so it
    cannot read files elsewhere, the environment or the clock.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    recipes_dir = Path(recipes_dir).resolve()
    available = sorted(p.stem for p in recipes_dir.glob("*.yaml") if RECIPE_NAME.match(p.stem))
    recipe_file = recipes_dir / f"{name}.yaml"
    if not RECIPE_NAME.match(name) or not recipe_file.is_file():
        raise RecipeError(f"recipe {name!r} not found in {recipes_dir} (a recipe is named by its file there: "
                          f"letters, digits, '_', '-', '+'); available: {', '.join(available)}")
    overrides = list(overrides or [])
    _refuse_override_resolvers(overrides)
    _check_includes(recipes_dir, recipe_file.resolve(), [])
    _register_schema()
    try:
        with initialize_config_dir(config_dir=str(recipes_dir), version_base=None):
            _check_defaults(GlobalHydra.instance().config_loader(), name, overrides, recipe_file)
            cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
        if cfg.hydra.searchpath:
            raise RecipeError(f"{recipe_file}: hydra.searchpath: recipes are read only from {recipes_dir}; "
                              f"put shared config groups in a folder there")
        with open_dict(cfg):
            del cfg["hydra"]
        _refuse_resolvers(cfg, recipes_dir, recipe_file)
        typed = OmegaConf.merge(OmegaConf.structured(Recipe), cfg)
        return OmegaConf.to_object(typed)
    except (HydraException, OmegaConfBaseException) as error:
        cause = error.__cause__ if isinstance(error.__cause__, yaml.YAMLError) else None
        message = _describe_yaml(cause) if cause else describe_error(error, recipes_dir, recipe_file)
        raise RecipeError(escape_controls(message)) from None
    except yaml.YAMLError as error:
        raise RecipeError(escape_controls(_describe_yaml(error))) from None
    except RecursionError:
        raise RecipeError(f"{recipe_file}: nests too deep to compose (RecursionError); valid: a recipe and "
                          f"config groups of ordinary depth") from None


def _refuse_override_resolvers(overrides: list[str]) -> None:
    """Overrides may not call resolvers: a group override (`backends=${oc.env:...}`) would be
    evaluated while the defaults list is computed, before anything else is checked."""
    for override in overrides:
        calls = _resolver_calls(override.partition("=")[2])
        if calls:
            raise RecipeError(f"override '{escape_controls(override)}': '{escape_controls(calls[0])}': an override "
                              f"cannot call resolvers (oc.env, oc.decode, now, ...); write the value itself")


def _check_includes(recipes_dir: Path, config: Path, chain: list[Path]) -> None:
    """Walk the defaults lists `config` includes, before Hydra does: a resolver call there
    (`backends: ${oc.env:...}`) is refused before anything evaluates it, an include cycle and
    YAML nested past Python's recursion limit are errors naming the files."""
    if config in chain:
        loop = " -> ".join(path.relative_to(recipes_dir).as_posix() for path in chain[chain.index(config):] + [config])
        raise RecipeError(f"{chain[-1]}: defaults: the includes form a cycle ({loop}); valid: defaults that "
                          f"never include a file that includes them")
    if len(chain) > MAX_INCLUDE_DEPTH:
        raise RecipeError(f"{config}: defaults nest more than {MAX_INCLUDE_DEPTH} files deep")
    try:
        document = yaml.safe_load(config.read_text(encoding="utf-8"))
    except RecursionError:
        raise RecipeError(f"{config}: YAML nested too deep to read (RecursionError); valid: ordinary nesting, "
                          f"a few hundred levels at most") from None
    except (OSError, ValueError, yaml.YAMLError):
        return  # composing reports it, with the line
    defaults = document.get("defaults") if isinstance(document, dict) else None
    for index, entry in enumerate(defaults if isinstance(defaults, list) else []):
        pairs = entry.items() if isinstance(entry, dict) else [(None, entry)]
        for group, option in pairs:
            for text in (group, *(option if isinstance(option, list) else [option])):
                calls = _resolver_calls(text) if isinstance(text, str) else []
                if calls:
                    raise RecipeError(f"{config}: defaults[{index}]: '{escape_controls(calls[0])}': a defaults "
                                      f"list cannot call resolvers (oc.env, oc.decode, now, ...); name the config "
                                      f"itself")
            for target in _included(recipes_dir, config, group, option):
                _check_includes(recipes_dir, target, chain + [config])


def _included(recipes_dir: Path, config: Path, group: Any, option: Any) -> list[Path]:
    """The files of the recipes folder one defaults entry loads (those it names plainly)."""
    options = option if isinstance(option, list) else [option]
    plain = all(isinstance(o, str) and "${" not in o for o in options)
    if not plain or (group is not None and not isinstance(group, str)):
        return []
    if group is not None:
        group = group.split()[-1].split("@")[0]  # `override g@pkg` -> g
        names = [f"{group}/{o}" for o in options]
    else:
        names = [o.split()[-1].split("@")[0] for o in options if o.split()]  # `optional x` -> x
    paths = [recipes_dir / f"{name.lstrip('/')}.yaml" if name.startswith("/") else config.parent / f"{name}.yaml"
             for name in names]
    return [path.resolve() for path in paths if path.is_file() and confined(recipes_dir, str(path)) is not None]


def _describe_yaml(error: yaml.YAMLError) -> str:
    """`file, line N: not valid YAML: problem` from a YAML parser error."""
    mark = getattr(error, "problem_mark", None)
    where = f"{mark.name}, line {mark.line + 1}" if mark else "a recipe file"
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{where}: not valid YAML: {problem}"


def _check_defaults(loader, name: str, overrides: list[str], recipe_file: Path) -> None:
    """Refuse a defaults-list entry or override that climbs out of the recipes folder."""
    from hydra.types import RunMode

    for entry in loader.compute_defaults_list(config_name=name, overrides=overrides, run_mode=RunMode.RUN).defaults:
        if entry.config_path and (".." in entry.config_path.split("/") or entry.config_path.startswith("/")):
            raise RecipeError(f"{recipe_file}: defaults: '{escape_controls(entry.config_path)}' leaves the recipes "
                              f"folder; valid: config groups inside it, without '..'")


def _strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(key path, text) of every string in a container of dicts and lists."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


def _resolver_calls(text: str) -> list[str]:
    """The `${name:...}` resolver calls in an OmegaConf string (plain `${key}` references are fine)."""
    from omegaconf import grammar_parser
    from omegaconf.errors import GrammarParseError
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

    if "${" not in text:
        return []
    try:
        nodes = [grammar_parser.parse(text, parser_rule="configValue")]
    except GrammarParseError:
        return []  # OmegaConf cannot resolve it either; composing reports it
    calls = []
    while nodes:
        node = nodes.pop()
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            calls.append(node.getText())
        nodes.extend(node.getChildren() if hasattr(node, "getChildren") else [])
    return calls


def _refuse_resolvers(cfg: Any, recipes_dir: Path, recipe_file: Path) -> None:
    for key, text in _strings(OmegaConf.to_container(cfg, resolve=False)):
        calls = _resolver_calls(text)
        if calls:
            origin = locate_key(recipes_dir, recipe_file, key)
            raise RecipeError(f"{origin}: {escape_controls(key)}: '{escape_controls(calls[0])}': a recipe cannot "
                              f"call resolvers (oc.env, oc.decode, now, ...), so it cannot read the environment or "
                              f"the clock; write the value itself, or refer to another key as ${{key}}")


def locate_key(recipes_dir: Path, recipe_file: Path, key_path: str) -> Path:
    """The recipe file that defines `key_path` (the recipe itself or one of its group files)."""
    candidates = [(recipe_file, "")] + [
        (path, path.parent.relative_to(recipes_dir).as_posix().replace("/", "."))
        for path in sorted(recipes_dir.glob("*/**/*.yaml"))
    ]
    for path, package in candidates:
        prefix = f"{package}." if package else ""
        if package and not key_path.startswith(prefix):
            continue
        try:
            node = OmegaConf.load(path)
        except (OmegaConfBaseException, yaml.YAMLError, RecursionError):
            continue
        if OmegaConf.select(node, key_path[len(prefix):], default=None) is not None:
            return path
    return recipe_file


def validate(recipe: Recipe, recipe_file: Path, templates_dir: Path) -> dict[str, dict[str, Any]]:
    """Cross-reference checks the schema cannot express; returns validated backend configs."""

    def fail(key: str, problem: str) -> None:
        origin = locate_key(recipe_file.parent, recipe_file, key)
        raise RecipeError(escape_controls(f"{origin}: {key}: {problem}"))

    if not IDENTIFIER.match(recipe.name):
        fail("name", f"'{recipe.name}' is not a valid name; use lowercase letters, digits, '_', '-', '+'")
    for section in ("concepts", "backgrounds", "compositions"):
        for ident in getattr(recipe, section):
            if not IDENTIFIER.match(ident):
                fail(f"{section}.{ident}", "ids use letters a-z, digits, '_', '-', '+' (no capitals, dots or slashes)")
    if WHOLE_DATASET in recipe.compositions:
        fail(f"compositions.{WHOLE_DATASET}", f"'{WHOLE_DATASET}' names the whole dataset in its card; rename the composition")
    for key, text in _strings(dataclasses.asdict(recipe)):
        if escape_controls(text, keep="\n\t") != text:
            fail(key, f"'{escape_controls(text, limit=80)}' holds control or format characters; write plain text")
    if not recipe.compositions:
        fail("compositions", "the recipe declares no composition")
    tokens: dict[str, str] = {}
    for cid, concept in recipe.concepts.items():
        if not concept.images:
            fail(f"concepts.{cid}.images", "at least one image path, glob or pkg: reference")
        if not 0 < concept.size <= MAX_SIZE:  # NaN fails too
            fail(f"concepts.{cid}.size", f"{concept.size}; valid: > 0 and at most {MAX_SIZE:g} (the largest object "
                 f"is 1.0)")
        if not 0 <= concept.size_cm <= MAX_SIZE_CM:
            fail(f"concepts.{cid}.size_cm", f"{concept.size_cm}; valid: 0 (not given) to {MAX_SIZE_CM:g} cm")
        if concept.placement not in PLACEMENTS:
            fail(f"concepts.{cid}.placement", f"'{concept.placement}'; valid: {', '.join(PLACEMENTS)}")
        for stem, view in concept.views.items():
            if not 0 <= view.elevation_deg <= 90:
                fail(f"concepts.{cid}.views.{stem}.elevation_deg", f"{view.elevation_deg}; valid: 0 (level) to 90 "
                     f"(straight above)")
        if concept.token in tokens:
            fail(f"concepts.{cid}.token", f"'{concept.token}' is also the token of '{tokens[concept.token]}'")
        tokens[concept.token] = cid
    generates_backgrounds = recipe.backends.compose.get("name") in GENERATING_COMPOSERS
    for bid, background in recipe.backgrounds.items():
        if not background.images and not generates_backgrounds:
            fail(f"backgrounds.{bid}.images", "at least one image path, glob or pkg: reference (or use a compose "
                 f"backend that generates backgrounds: {', '.join(GENERATING_COMPOSERS)})")
        if background.scene is not None:
            for key, problem in scene_problems(background.scene):
                fail(f"backgrounds.{bid}.scene.{key}", problem)
    for comp_id, comp in recipe.compositions.items():
        where = f"compositions.{comp_id}"
        count = len(comp.concepts)
        if not MIN_CONCEPTS_PER_IMAGE <= count <= MAX_CONCEPTS_PER_IMAGE:
            fail(f"{where}.concepts", f"{count} concepts; a composition has "
                 f"{MIN_CONCEPTS_PER_IMAGE}-{MAX_CONCEPTS_PER_IMAGE}")
        for index, cid in enumerate(comp.concepts):
            if cid not in recipe.concepts:
                fail(f"{where}.concepts[{index}]", f"unknown concept '{cid}'; valid: {', '.join(sorted(recipe.concepts))}")
        if len(set(comp.concepts)) != count:
            fail(f"{where}.concepts", "a concept is listed twice")
        if not comp.backgrounds:
            fail(f"{where}.backgrounds", f"at least one of: {', '.join(sorted(recipe.backgrounds))}")
        for index, bid in enumerate(comp.backgrounds):
            if bid not in recipe.backgrounds:
                fail(f"{where}.backgrounds[{index}]", f"unknown background '{bid}'; valid: {', '.join(sorted(recipe.backgrounds))}")
        if not 1 <= comp.num_images <= MAX_IMAGES:
            fail(f"{where}.num_images", f"{comp.num_images}; valid: 1-{MAX_IMAGES}")
        for bid in comp.backgrounds:
            unsized = [cid for cid in comp.concepts if recipe.backgrounds[bid].scene and not recipe.concepts[cid].size_cm]
            if unsized:
                fail(f"concepts.{unsized[0]}.size_cm", f"not given; composition '{comp_id}' uses background '{bid}', "
                     f"whose scene template sizes objects by their real size: give the longer side in cm (a cat: 40)")
    total = sum(comp.num_images for comp in recipe.compositions.values())
    if total > MAX_IMAGES:
        fail("compositions", f"{total} images in all; valid: at most {MAX_IMAGES} in one recipe")
    if recipe.strategy.token_style not in TOKEN_STYLES:
        fail("strategy.token_style", f"'{recipe.strategy.token_style}'; valid: {', '.join(TOKEN_STYLES)}")
    for role in ("short_caption", "detailed_caption"):
        template = getattr(recipe.strategy, role)
        if confined(templates_dir, template) is None:
            fail(f"strategy.{role}", f"'{template}' is outside {templates_dir}; templates are read only from there "
                 f"(symlinks out of it are refused)")
        if not (templates_dir / template).is_file():
            fail(f"strategy.{role}", f"template '{template}' not found in {templates_dir}")
    output = recipe.output
    if not 64 <= output.resolution <= MAX_RESOLUTION or output.resolution % 8:
        fail("output.resolution", f"{output.resolution}; valid: a multiple of 8 from 64 to {MAX_RESOLUTION}")
    if output.image_format not in IMAGE_FORMATS:
        fail("output.image_format", f"'{output.image_format}'; valid: {', '.join(IMAGE_FORMATS)}")
    if not 1 <= output.jpeg_quality <= 100:
        fail("output.jpeg_quality", f"{output.jpeg_quality}; valid: 1-100")
    if not 1 <= output.shard_size <= MAX_SHARD_SIZE:
        fail("output.shard_size", f"{output.shard_size}; valid: 1-{MAX_SHARD_SIZE}")
    root = templates_dir.parent
    return {kind: _validate_backend(kind, dict(getattr(recipe.backends, kind)), fail, root) for kind in STAGE_KINDS}


def pose_warnings(documents: dict[str, dict[str, Any]]) -> list[str]:
    """A warning per concept that every image would show in one pose: a single view (photo)
    and `mirror` off, so a model trained on the dataset sees it only so."""
    views: dict[str, int] = {}
    for item in documents["extract"]["items"]:
        views[item["concept"]] = views.get(item["concept"], 0) + 1
    recipe = documents["pack"]["recipe"]
    return [f"warning: recipe '{recipe['name']}': concepts.{cid} has a single view ({views.get(cid, 0)} photo) and "
            f"mirror off, so every image shows it in the same pose; add photos of other poses, or set "
            f"concepts.{cid}.mirror: true if it may appear flipped left-right (an animal may, a logo may not)"
            for cid, concept in sorted(recipe["concepts"].items()) if views.get(cid, 0) <= 1 and not concept["mirror"]]


def occluder_problems(key: str, occluder: schema.Occluder) -> Iterator[tuple[str, str]]:
    """(key, problem) for an occluder without a region or with its ground row out of the photo."""
    if occluder.polygon is None and not occluder.mask:
        yield key, "neither polygon nor mask; an occluder is a polygon, a mask PNG painted over the photo, or both"
    if occluder.mask is not None and not str(occluder.mask).lower().endswith(".png"):
        yield f"{key}.mask", f"'{occluder.mask}'; valid: a grey PNG beside the photo (255 where the occluder is)"
    if not 0 < occluder.front <= 1:
        yield f"{key}.front", (f"{occluder.front}; valid: the row (0-1] where it meets the ground, as a fraction of "
                               f"the photo height")


def scene_problems(scene: schema.Scene) -> Iterator[tuple[str, str]]:
    """(key, problem) for every value of a scene template out of its valid range (NaN and
    infinities included: every comparison below fails for them)."""
    if not 0 <= scene.horizon < 1:
        yield "horizon", f"{scene.horizon}; the row of the horizon as a fraction of the photo height, 0-1"
    if not MIN_CAMERA_HEIGHT_CM <= scene.camera_height_cm <= MAX_SIZE_CM:
        yield "camera_height_cm", (f"{scene.camera_height_cm}; valid: {MIN_CAMERA_HEIGHT_CM:g} to {MAX_SIZE_CM:g} "
                                   f"(a photo taken standing: about 150)")
    if not 0 < scene.size_tolerance <= 1:
        yield "size_tolerance", f"{scene.size_tolerance}; valid: a fraction in (0, 1]"
    if scene.fov_deg is not None and not 1 <= scene.fov_deg <= 170:
        yield "fov_deg", f"{scene.fov_deg}; valid: 1-170, the photo's vertical field of view in degrees (a phone: about 50)"
    if scene.view is not None and (len(scene.view) != 4 or not all(0 <= v <= 1 for v in scene.view)
                                   or not (scene.view[2] >= MIN_VIEW_SIDE and scene.view[3] >= MIN_VIEW_SIDE)
                                   or scene.view[0] + scene.view[2] > 1 or scene.view[1] + scene.view[3] > 1):
        yield "view", (f"{scene.view}; [x, y, w, h] of a region inside the photo, as fractions (0-1), w and h at "
                       f"least {MIN_VIEW_SIDE:g}")
    polygons = [("ground", scene.ground)]
    polygons += [(f"surfaces.{name}.polygon", surface.polygon) for name, surface in scene.surfaces.items()]
    polygons += [(f"holes[{index}]", hole) for index, hole in enumerate(scene.holes)]
    polygons += [(f"forbidden[{index}].polygon", region.polygon) for index, region in enumerate(scene.forbidden)]
    polygons += [(f"occluders[{index}].polygon", occluder.polygon) for index, occluder in enumerate(scene.occluders)
                 if occluder.polygon is not None]
    for index, occluder in enumerate(scene.occluders):
        yield from occluder_problems(f"occluders[{index}]", occluder)
        if occluder.support and occluder.support not in scene.surfaces:
            yield f"occluders[{index}].support", (f"'{occluder.support}'; valid: a surface of this template "
                                                   f"({', '.join(sorted(scene.surfaces)) or 'none'}), or none")
    malformed = set()
    for key, polygon in polygons:
        if len(polygon) < 3 or not all(isinstance(point, list) and len(point) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in point)
                for point in polygon):
            malformed.add(key)
            yield key, "a polygon of at least 3 [x, y] points, each a fraction of the photo's width and height (0-1)"
    for name, surface in scene.surfaces.items():
        if not 0 < surface.height_cm <= scene.camera_height_cm - MIN_CAMERA_HEIGHT_CM:
            yield f"surfaces.{name}.height_cm", (f"{surface.height_cm}; above the ground and at least "
                                                 f"{MIN_CAMERA_HEIGHT_CM:g} cm below the camera "
                                                 f"(camera_height_cm {scene.camera_height_cm})")
        if not 0 < surface.max_size_cm <= MAX_SIZE_CM:
            yield f"surfaces.{name}.max_size_cm", f"{surface.max_size_cm} must be > 0 (the largest object it holds)"
        if f"surfaces.{name}.polygon" not in malformed and min(y for _, y in surface.polygon) <= scene.horizon:
            yield f"surfaces.{name}.polygon", "reaches above the horizon; a surface below eye level is seen from above"
    if "ground" not in malformed and all(y <= scene.horizon for _, y in scene.ground):
        yield "ground", "lies wholly above the horizon; the ground is seen below eye level"
    if scene.light is not None:
        if not -360 <= scene.light.direction_deg <= 360:
            yield "light.direction_deg", (f"{scene.light.direction_deg}; valid: -360 to 360, where shadows fall in the "
                                          f"photo (0 up, 90 right, 180 down, 270 left)")
        if not 0 < scene.light.length <= MAX_SHADOW_LENGTH:
            yield "light.length", (f"{scene.light.length}; valid: > 0 and at most {MAX_SHADOW_LENGTH:g}, a shadow's "
                                   f"length / the height of what casts it, both in the photo")
        if not 0 <= scene.light.softness <= 1:
            yield "light.softness", f"{scene.light.softness}; valid: 0 (hard sun) to 1 (overcast)"


def _check_endpoint(key: str, url: str, fail, root: Path) -> None:
    """A recipe's endpoint must be approved by the builder's runtime settings: a recipe never
    decides where prompts, and the API key sent with them, go."""
    problem = url_problem(url)
    if problem:
        fail(key, f"{redact_url(url)}: {problem}")
    try:
        settings = load_settings(root / "params.yaml")
    except SettingsError as error:
        raise RecipeError(str(error)) from None
    if not endpoint_allowed(url, settings.llm_endpoints):
        fail(key, f"{redact_url(url)} is not an approved LLM endpoint; the builder approves endpoints in "
                  f"{user_config()} (llm_endpoints) or G4G_LLM_ENDPOINTS, now: {', '.join(settings.llm_endpoints)}")


def _validate_backend(kind: str, config: dict[str, Any], fail, root: Path) -> dict[str, Any]:
    """Check the backend key and its options against the backend's own `Params` dataclass."""
    name = config.pop("name", None)
    if name not in backends.names(kind):
        fail(f"backends.{kind}.name", f"'{name}'; valid: {', '.join(backends.names(kind))}")
    missing = backends.missing_packages(kind, name)
    if missing:
        fail(f"backends.{kind}.name", f"'{name}' runs PyTorch models, and {', '.join(missing)} "
             f"{'is' if len(missing) == 1 else 'are'} not installed here: pip install -e '.[models]' "
             f"(`make test` installs every extra)")
    params_class = backends.module(kind, name).Params
    try:
        params = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(params_class), config))
        params_class(**params)  # runs the backend's own range checks, if it has any
    except (OmegaConfBaseException, ValueError) as error:
        key = getattr(error, "full_key", "") or ""
        options = backends.option_names(kind, name)
        foreign = [option for option in config if option not in options]
        hint = (f"; if a backends group set {', '.join(foreign)} for another {kind} backend (they stay when only "
                f"`name` changes), drop them with the overrides "
                f"{' '.join(f'~backends.{kind}.{o}' for o in foreign)} (params.yaml `overrides`)" if foreign else "")
        fail(f"backends.{kind}.{key}".rstrip("."),
             f"{str(error).splitlines()[0]} (options of {kind} backend '{name}': {', '.join(options)}){hint}")
    for option in getattr(params_class, "URLS", ()):
        _check_endpoint(f"backends.{kind}.{option}", params[option], fail, root)
    files = {}
    for option, folder in backends.file_options(kind, name).items():
        if params[option]:
            path = confined(root / folder, params[option])
            if path is None:
                fail(f"backends.{kind}.{option}", f"'{params[option]}' is outside {root / folder}; files are read "
                     f"only from there (symlinks out of it are refused)")
            if not path.is_file():
                fail(f"backends.{kind}.{option}", f"file {path} not found")
            files[option] = file_sha256(path)
    return backends.describe(kind, name, params, files)
