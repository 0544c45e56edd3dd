"""`g4g scene PHOTO [--template T]`: draw a scene template over its photo, to write one in minutes.

Always a grid of photo fractions (the template's coordinates). With a template: the horizon,
the ground (green), surfaces (yellow, with their height), forbidden regions (red, with the row
in front of which objects may cover them), occluders (blue, over their mask, with the dashed row
where they meet the ground: what stands behind it is hidden by it), the canvas view (white) and reference poles of
`pole_cm` standing on the ground and surfaces at the perspective's size: if a pole beside the
bench looks as tall as a pole of that height would, the horizon and camera height are right.
A template's `light` draws each pole's shadow (dark) where compose casts it: lay them beside the
shadows of real posts and trunks in the photo to check the direction and length.
With a recipe (the project's, or `--recipe`), each of its concepts gets a coloured dot wherever
its feet may go at its real size on the canvas (`stages.backends.plan.reach.feet_map`: the
solver's `min_size`, the filter's `min_area` and `min_visible`, the view, holes, occluders), with
a legend line naming what failed elsewhere, with counts; its views are the built cut-outs
(build/cutouts.json) when there are any, else a square of its real size.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from base.errors import RecipeError
from stages.scene import centre_crop, contains, light_of, on_canvas

FEET = [(255, 80, 200), (80, 200, 255), (255, 160, 40), (160, 255, 80), (200, 120, 255)]  # per concept, cycled

GRID = (255, 255, 255, 90)
GROUND = (40, 220, 80, 70)
SURFACE = (255, 210, 40, 110)
FORBIDDEN = (230, 40, 40, 100)
OCCLUDER = (70, 120, 255, 120)
HORIZON = (60, 220, 255, 255)
POLE = (255, 255, 255, 255)
SHADOW = (20, 20, 20, 210)
CANVAS = (1024, 1024)
PREVIEWS = Path(".g4g/previews")  # where previews go without -o: inside the project's git-ignored state
MAX_TEMPLATE_BYTES = 1 << 20  # a scene template file: a few lines of YAML


def load_template(spec: str, root: Path, recipe: str | None) -> dict[str, Any]:
    """A template from a YAML file (a scene mapping) or by background id from the recipe
    (composed and its templates checked, without compiling the build: no photo is hashed);
    either way checked by the recipe schema and its ranges."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return template_file(path)
    from compiler.compile import read_params
    from compiler.recipe import compose_recipe, scene_problems

    if recipe is None and not (root / "params.yaml").is_file():
        raise RecipeError(f"--template {spec}: not a .yaml file, and {root} is no g4g project (no params.yaml) "
                          f"whose recipe could name it; valid: a scene YAML file, or run this in the project")
    name, overrides = (recipe, []) if recipe else read_params(root / "params.yaml")
    backgrounds = compose_recipe(root / "recipes", name, overrides).backgrounds
    scenes = {bid: bg.scene for bid, bg in backgrounds.items() if bg.scene is not None}
    if spec not in scenes:
        raise RecipeError(f"--template {spec}: no background with a scene template of that id in recipe '{name}' "
                          f"(valid: {', '.join(sorted(scenes)) or 'none'}), and not a .yaml file")
    for key, problem in scene_problems(scenes[spec]):
        raise RecipeError(f"recipe '{name}': backgrounds.{spec}.scene.{key}: {problem}")
    return dataclasses.asdict(scenes[spec])


def template_file(path: Path) -> dict[str, Any]:
    """A scene template from a YAML file (the mapping itself, or under `scene:`), read with the
    alias limits of untrusted YAML and checked by the recipe's `Scene` schema and ranges."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from base.untrusted import escape_controls, load_yaml
    from compiler.recipe import scene_problems
    from compiler.schema import Scene

    with open(path, "rb") as handle:
        data = handle.read(MAX_TEMPLATE_BYTES + 1)
    if len(data) > MAX_TEMPLATE_BYTES:
        raise RecipeError(f"{path}: over {MAX_TEMPLATE_BYTES:,} bytes; valid: a scene template (a few lines of YAML)")
    try:
        document = load_yaml(data.decode("utf-8"), str(path))
    except (ValueError, UnicodeDecodeError) as error:
        raise RecipeError(str(error) if isinstance(error, ValueError) and str(error).startswith(str(path))
                          else f"{path}: not UTF-8 YAML") from None
    mapping = document.get("scene", document) if isinstance(document, dict) else None
    if not isinstance(mapping, dict):
        raise RecipeError(f"{path}: not a scene mapping; valid keys: {', '.join(Scene.__dataclass_fields__)}")
    try:
        scene = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Scene), mapping))
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        problem = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise RecipeError(escape_controls(f"{path}: {key + ': ' if key else ''}{problem}; valid keys: "
                                          f"{', '.join(Scene.__dataclass_fields__)}", limit=400)) from None
    for key, problem in scene_problems(scene):
        raise RecipeError(escape_controls(f"{path}: scene.{key}: {problem}", limit=400))
    return dataclasses.asdict(scene)


def render(photo: Image.Image, template: dict[str, Any] | None, pole_cm: float = 50.0,
           masks: dict[str, Image.Image] | None = None, feet: list[tuple[str, list, float]] | None = None) -> Image.Image:
    """The photo with the grid and, given a template, everything it declares drawn over it
    (occluders painted as masks from `masks`, by the template's mask reference), and `feet`:
    (legend, foot points in photo pixels, their spacing) per concept, side by side."""
    base = photo.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    width, height = base.size
    line = max(1, round(max(base.size) / 500))
    draw.font = ImageFont.load_default(size=max(10, round(max(base.size) / 60)))
    for step in range(1, 10):
        x, y = width * step / 10, height * step / 10
        draw.line([(x, 0), (x, height)], fill=GRID, width=line)
        draw.line([(0, y), (width, y)], fill=GRID, width=line)
        draw.text((x + 3, 3), f"{step / 10:.1f}", fill=(255, 255, 255, 255))
        draw.text((3, y + 3), f"{step / 10:.1f}", fill=(255, 255, 255, 255))
    if template:
        scene = on_canvas({**template, "view": None}, base.size, base.size, masks or {})  # photo pixels
        draw.polygon([tuple(p) for p in scene.supports[0].polygon], fill=GROUND)
        for surface in scene.supports[1:]:
            draw.polygon([tuple(p) for p in surface.polygon], fill=SURFACE)
            draw.text(tuple(surface.polygon.min(axis=0) - (0, 14)),
                      f"{surface.name}: {surface.height_cm:g} cm, holds <= {surface.max_size_cm:g} cm", fill=SURFACE)
        for blocker in scene.forbidden:
            draw.polygon([tuple(p) for p in blocker.polygon], fill=FORBIDDEN)
            left, right = blocker.polygon[:, 0].min(), blocker.polygon[:, 0].max()
            if blocker.front < height:
                draw.line([(left, blocker.front), (right, blocker.front)], fill=FORBIDDEN[:3] + (255,), width=line)
        layer = draw_occluders(layer, scene, template, line)
        draw = ImageDraw.Draw(layer)
        draw.font = ImageFont.load_default(size=max(10, round(max(base.size) / 60)))
        draw.line([(0, scene.horizon), (width, scene.horizon)], fill=HORIZON, width=2 * line)
        draw.text((6, scene.horizon - 16), f"horizon {template['horizon']:g}, camera {template['camera_height_cm']:g} cm"
                  + (f"; light: shadows fall at {light.direction_deg:g} deg, x{light.length:g} long, softness "
                     f"{light.softness:g}" if (light := light_of(template)) else ""), fill=HORIZON)
        light = light_of(template)
        for support in scene.supports:
            for foot in lattice(support.polygon, scene.horizon):
                tall = scene.size_at(foot[1], support, pole_cm)
                if light is not None:
                    dx, dy = light.shadow_of(tall)
                    draw.line([foot, (foot[0] + dx, foot[1] + dy)], fill=SHADOW, width=2 * line)
                draw.line([foot, (foot[0], foot[1] - tall)], fill=POLE, width=2 * line)
                draw.ellipse([foot[0] - 2 * line, foot[1] - line, foot[0] + 2 * line, foot[1] + line], fill=POLE)
        left, top, crop_w, crop_h = centre_crop(base.size, CANVAS, template.get("view"))
        draw.rectangle([left, top, left + crop_w - 1, top + crop_h - 1], outline=(255, 255, 255, 255), width=2 * line)
        draw.text((left + 6, top + 6), f"canvas view ({pole_cm:g} cm poles)", fill=(255, 255, 255, 255))
        for index, (legend, points, spacing) in enumerate(feet or []):
            colour = FEET[index % len(FEET)] + (255,)
            shift = (index - (len(feet) - 1) / 2) * spacing / (len(feet) + 1)  # side by side, not over each other
            radius = max(1.0, spacing / (2 * len(feet) + 2))
            for x, y in points:
                draw.ellipse([x + shift - radius, y - radius, x + shift + radius, y + radius], fill=colour)
            row = height - (len(feet) - index) * 2.2 * draw.font.size - 6
            draw.rectangle(draw.textbbox((6, row), legend), fill=(0, 0, 0, 160))
            draw.text((6, row), legend, fill=colour)
    return Image.alpha_composite(base, layer).convert("RGB")


def feet_of_concepts(template: dict[str, Any], photo_size: tuple[int, int], masks: dict[str, Image.Image],
                     recipe: Any, cutouts: list[dict[str, Any]]) -> list[tuple[str, list, float]]:
    """(legend, foot points in photo pixels, their spacing) per concept of the recipe with a
    real size: where its feet may go on the canvas, and what failed elsewhere, with counts."""
    from stages import backends
    from compiler.scene_reach import SQUARE
    from stages.backends.plan.reach import MAP_STEP, feet_map

    scene = on_canvas(template, photo_size, CANVAS, masks)
    left, top, _, crop_h = centre_crop(photo_size, CANVAS, template.get("view"))
    scale = CANVAS[1] / crop_h
    score = dict(recipe.backends.score)
    passes = vars(backends.module("score", score.pop("name")).Params(**score))
    plan = dict(recipe.backends.plan)
    min_size = plan.get("min_size", 0.12) if plan.get("name") == "solver" else 0.0
    out = []
    for cid, concept in sorted(recipe.concepts.items()):
        if not concept.size_cm:
            continue
        views = [{"id": c["id"], "aspect": c["size"][0] / c["size"][1], "fill": c["fill"],
                  **({"foot": c["foot"]} if c.get("foot") else {})} for c in cutouts if c["concept"] == cid]
        elevations = {f"{cid}/{stem}": view.elevation_deg for stem, view in concept.views.items()}
        views = [{**v, "elevation_deg": elevations.get(v["id"], 0.0)} for v in views] or [SQUARE]
        if concept.mirror:
            views += [{**v, "mirrored": True} for v in views]
        good, failed = feet_map(scene, {"id": cid, "size_cm": concept.size_cm, "placement": concept.placement},
                                views, {k: passes.get(k, 0.0) for k in ("min_area", "min_visible")}, min_size)
        total = len(good) + sum(failed.values())
        legend = (f"{cid} ({concept.size_cm:g} cm, {concept.placement}): feet may go on {len(good)} of {total} places"
                  + (f"; elsewhere {', '.join(f'{n} {why}' for why, n in failed.most_common(3))}" if failed else ""))
        out.append((legend, [(left + x / scale, top + y / scale) for x, y in good], MAP_STEP / scale))
    return out


def draw_occluders(layer: Image.Image, scene: Any, template: dict[str, Any], line: int) -> Image.Image:
    """Each occluder tinted blue over its matte (an outline where a mask PNG was not given), with
    a dashed line at the row where it meets the ground and its name."""
    draw = ImageDraw.Draw(layer)
    draw.font = ImageFont.load_default(size=max(10, round(max(layer.size) / 70)))
    for occluder, entry in zip(scene.occluders, template.get("occluders", [])):
        if occluder.matte is not None:
            tint = Image.new("RGBA", layer.size, OCCLUDER[:3] + (0,))
            tint.putalpha(Image.fromarray((occluder.matte.astype(np.uint16) * OCCLUDER[3] // 255).astype(np.uint8)))
            layer = Image.alpha_composite(layer, tint)
            draw = ImageDraw.Draw(layer)
            draw.font = ImageFont.load_default(size=max(10, round(max(layer.size) / 70)))
            columns = np.flatnonzero(occluder.matte.max(axis=0) > 127)
        elif occluder.polygon is not None:
            draw.polygon([tuple(p) for p in occluder.polygon], outline=OCCLUDER[:3] + (255,), width=line)
            columns = occluder.polygon[:, 0]
        else:
            continue
        if columns.size == 0:
            continue
        left, right = float(columns.min()), float(columns.max())
        step = max(4, 6 * line)
        for x in np.arange(left, right, 2 * step):
            draw.line([(x, occluder.front), (min(x + step, right), occluder.front)], fill=OCCLUDER[:3] + (255,),
                      width=line)
        draw.text((left + 3, occluder.front + 2), entry.get("name") or "occluder", fill=OCCLUDER[:3] + (255,))
    return layer


def occluder_masks(template: dict[str, Any] | None, root: Path) -> dict[str, Image.Image]:
    """The template's occluder mask PNGs, by their reference, read from the project `root`."""
    from base import sources
    from stages.runtime.images import load_image

    references = {o["mask"] for o in (template or {}).get("occluders", []) if o.get("mask")}
    return {ref: load_image(sources.resolve(ref, root), ref) for ref in sorted(references)}


def lattice(polygon: np.ndarray, horizon: float, rows: int = 4, columns: int = 5) -> list[tuple[float, float]]:
    """Foot points spread over the polygon below the horizon, each row shifted by a fraction
    of a column so that no pole stands in front of another."""
    low, high = polygon.min(axis=0), polygon.max(axis=0)
    points = np.array([(low[0] + (c + (r + 0.5) / rows) / columns * (high[0] - low[0]),
                        low[1] + (r + 0.5) / rows * (high[1] - low[1]))
                       for r in range(rows) for c in range(columns)])
    inside = contains(polygon, points) & (points[:, 1] > horizon)
    return [tuple(p) for p in points[inside]]


def run(args: argparse.Namespace) -> int:
    from stages.runtime.images import load_image

    from base.files import atomic_write_bytes, check_output

    out = Path(args.output or PREVIEWS / f"{Path(args.photo).stem}.scene.png")
    check_output(out)  # before the work, not after
    photo = load_image(Path(args.photo), args.photo)
    template = load_template(args.template, Path.cwd(), args.recipe) if args.template else None
    masks = occluder_masks(template, Path.cwd())
    recipe = preview_recipe(args.recipe) if template else None
    feet = feet_of_concepts(template, photo.size, masks, recipe, built_cutouts()) if recipe else None
    png = io.BytesIO()
    render(photo, template, args.pole_cm, masks, feet).save(png, format="PNG")
    atomic_write_bytes(out, png.getvalue())  # a link at `out` is replaced, never written through
    print(f"wrote {out}" + ("" if template else " (grid only: give --template BACKGROUND or FILE.yaml)"))
    return 0


def preview_recipe(name: str | None) -> Any:
    """The recipe whose concepts the preview stands in the scene: `--recipe`, else the
    project's (params.yaml); None outside a project."""
    from compiler.compile import read_params
    from compiler.recipe import compose_recipe

    root = Path.cwd()
    if name is None and not (root / "params.yaml").is_file():
        return None
    name, overrides = (name, []) if name else read_params(root / "params.yaml")
    return compose_recipe(root / "recipes", name, overrides)


def built_cutouts(index: Path = Path("build/cutouts.json")) -> list[dict[str, Any]]:
    """The cut-out records of the last build (their shape and foot profile), or none."""
    from base.files import read_json

    return read_json(index)["cutouts"] if index.is_file() else []


def add_parser(commands: Any) -> None:
    scene = commands.add_parser("scene", help="draw a scene template (or a grid to write one) over a photo")
    scene.add_argument("photo", help="a background photo")
    scene.add_argument("--template", help="a background id of the recipe, or a YAML file with a scene mapping")
    scene.add_argument("--recipe", help="the recipe to take --template from (default: params.yaml's)")
    scene.add_argument("--pole-cm", type=float, default=50.0, help="height of the reference poles (default 50)")
    scene.add_argument("-o", "--output", help=f"the PNG to write (default: {PREVIEWS}/PHOTO.scene.png, git-ignored)")
    scene.set_defaults(run=run)
