"""`g4g export FORMAT`: the training data of each composition as other trainers read it.

The images and captions are exactly what the train stage trains on (build/compiled/train.json:
data mode, caption kind, prompting strategies), written per composition:

  diffusers    export/diffusers/<composition>/
                 concept_list.json    one entry per distinct training caption: its images' folder
                                      (instance_data_dir), the caption (instance_prompt), and the
                                      prior images in the --real_prior layout (class_data_dir)
                 instances/NNNN/      the images of entry NNNN (only images: the scripts open
                                      every file there)
                 class/images/, class/images.txt, class/caption.txt   the prior images, one
                                      line each (path from the composition's folder, prompt); absent with prior.source: none
               Read by diffusers' examples/custom_diffusion/train_custom_diffusion.py (run it in
               the composition's folder: --concepts_list concept_list.json [--with_prior_preservation
               --real_prior --num_class_images N]).
  imagefolder  export/imagefolder/<composition>/train/  images, metadata.jsonl (file_name, text),
               and <image>.txt beside each image: `datasets.load_dataset("imagefolder", data_dir=...)`,
               the DreamBooth LoRA scripts' --dataset_name, and trainers that read caption files.

Every file is rewritten whole; the same build gives the same bytes.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

FORMATS = ("diffusers", "imagefolder")


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _name(number: int, origin: str) -> str:
    """A file name that says where the image comes from (sample key or photo), unique by number."""
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in origin.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    return f"{number:04d}-{stem}.png"


def diffusers_files(examples: list[Any], priors: list[tuple[bytes, str]]) -> dict[str, bytes]:
    """concept_list.json, instances/NNNN/*.png and class/ (see the module's docstring)."""
    groups: dict[str, list[Any]] = {}
    for example in examples:
        groups.setdefault(example.caption, []).append(example)
    files, concepts = {}, []
    for group, (caption, members) in enumerate(groups.items()):
        folder = f"instances/{group:04d}"
        for number, example in enumerate(members):
            files[f"{folder}/{_name(number, example.origin)}"] = _png(example.image)
        concepts.append({"instance_prompt": caption, "instance_data_dir": folder,
                         "class_prompt": "class/caption.txt" if priors else "", "class_data_dir": "class" if priors else ""})
    names = [f"class/images/{number:04d}.png" for number in range(len(priors))]
    for name, (data, _) in zip(names, priors):
        files[name] = data
    if priors:
        files["class/images.txt"] = "".join(name + "\n" for name in names).encode()  # from the working directory
        files["class/caption.txt"] = "".join(prompt + "\n" for _, prompt in priors).encode()
    files["concept_list.json"] = (json.dumps(concepts, indent=2, ensure_ascii=False) + "\n").encode()
    return files


def imagefolder_files(examples: list[Any]) -> dict[str, bytes]:
    """train/<image>.png, train/<image>.txt and train/metadata.jsonl."""
    files, rows = {}, []
    for number, example in enumerate(examples):
        name = _name(number, example.origin)
        files[f"train/{name}"] = _png(example.image)
        files[f"train/{name[:-4]}.txt"] = example.caption.encode()
        rows.append(json.dumps({"file_name": name, "text": example.caption}, ensure_ascii=False) + "\n")
    files["train/metadata.jsonl"] = "".join(rows).encode()
    return files


def run(fmt: str, out_dir: Path, items_file: Path, dataset_dir: Path, templates_dir: Path) -> int:
    from base.files import read_json, write_folder
    from base.settings import load_settings
    from stages import train

    if fmt not in FORMATS:
        raise ValueError(f"export format '{fmt}'; valid: {', '.join(FORMATS)}")
    document = read_json(items_file)
    if document["backend"]["name"] == "none":
        raise ValueError(f"{items_file}: backends.train.name is none, so there are no training captions to export; "
                         f"set it to custom-diffusion or lora (the captions follow its `caption` and the recipe's "
                         f"strategies) and run `dvc repro compile`")
    missing = train.attach_data(document, dataset_dir)
    if missing:
        raise ValueError("; ".join(f"{comp}: {reason}" for comp, reason in sorted(missing.items())))
    prior_files = train.prior_images(document, load_settings(), train.Processes()) if fmt == "diffusers" else {}
    context = {"templates_dir": str(templates_dir), "dataset_dir": str(dataset_dir), "prior_files": prior_files}
    for item in document["items"]:
        examples = train.instances(item, document, context)
        if fmt == "diffusers":
            priors = [(_png(e.image), e.caption) for e in train.priors(item, context)]
            files = diffusers_files(examples, priors)
        else:
            files = imagefolder_files(examples)
        write_folder(out_dir / item["id"], files)
        print(f"export: {out_dir / item['id']}: {len(examples)} images")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `export` to the `g4g` subcommands."""
    export = commands.add_parser("export", help="the training images and captions for diffusers' scripts or "
                                                "Hugging Face imagefolder", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("format", choices=FORMATS)
    export.add_argument("-o", "--output", type=Path, help="default: export/FORMAT")
    export.add_argument("--items", type=Path, default=Path("build/compiled/train.json"))
    export.add_argument("--dataset", type=Path, default=Path("dataset"))
    export.add_argument("--templates", type=Path, default=Path("templates"))
    export.set_defaults(run=lambda args: run(args.format, args.output or Path("export") / args.format, args.items,
                                             args.dataset, args.templates))
    return export
