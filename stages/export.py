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
                 train_custom_diffusion.sh   the command: diffusers' examples/custom_diffusion/
                                      train_custom_diffusion.py with every token the captions use
                                      (--modifier_token, --initializer_token), the class images and
                                      the recipe's options; its comments say where the script differs
  imagefolder  export/imagefolder/<composition>/
                 train/               the images and metadata.jsonl (file_name, text): the captions
                                      live only there, so `datasets.load_dataset(PATH)` gives an
                                      image + text dataset
                 train_dreambooth_lora_sd15_advanced.sh   the command: diffusers' examples/
                                      advanced_diffusion_training/train_dreambooth_lora_sd15_advanced.py
                                      --dataset_name <this folder> --image_column image --caption_column text,
                                      every token as a --token_abstraction

The export folder (-o, default export/FORMAT) is built whole beside its place and swapped in, so
nothing partial is ever left; a folder g4g export did not write (no .g4g-export marker) is not
replaced without --force. The same build gives the same bytes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import stat
import time
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
    """train/<image>.png and train/metadata.jsonl (no caption files: a .txt beside the images
    makes `load_dataset(PATH)` choose its text builder)."""
    files, rows = {}, []
    for number, example in enumerate(examples):
        name = _name(number, example.origin)
        files[f"train/{name}"] = _png(example.image)
        rows.append(json.dumps({"file_name": name, "text": example.caption}, ensure_ascii=False) + "\n")
    files["train/metadata.jsonl"] = "".join(rows).encode()
    return files


MARKER = ".g4g-export"  # in every folder g4g export writes: only those are replaced without --force


def load_items(items_file: Path) -> dict[str, Any]:
    """build/compiled/train.json, checked for what export reads; one-line errors otherwise."""
    from base.files import read_json

    try:
        document = read_json(items_file)
    except FileNotFoundError:
        raise ValueError(f"{items_file}: not found; build first (`dvc repro compile` writes it) or pass --items") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"{items_file}: cannot read it as the compiled training items ({error})") from None
    backend = document.get("backend") if isinstance(document, dict) else None
    if not (isinstance(backend, dict) and isinstance(backend.get("name"), str) and isinstance(backend.get("params"), dict)
            and isinstance(document.get("items"), list) and isinstance(document.get("strategy"), dict)
            and all(isinstance(i, dict) and isinstance(i.get("id"), str) for i in document["items"])):
        raise ValueError(f"{items_file}: not the compiled training items (a JSON object with backend.name, "
                         f"backend.params, strategy and items[].id); rebuild it with `dvc repro compile`")
    return document


def check_destination(out_dir: Path, force: bool) -> None:
    """-o must be a folder g4g export wrote (its marker), an empty folder, a new path, or --force."""
    try:
        mode = os.lstat(out_dir).st_mode
    except FileNotFoundError:
        return
    except OSError as error:  # a parent that is a file, a path too long
        raise ValueError(f"-o {out_dir}: {error.strerror}; name a folder to write") from None
    if Path.cwd().resolve().is_relative_to(out_dir.resolve()):
        raise ValueError(f"-o {out_dir}: holds the working directory; export writes a folder of its own")
    if not stat.S_ISDIR(mode):
        kind = "a link" if stat.S_ISLNK(mode) else "a file" if stat.S_ISREG(mode) else "a device, pipe or socket"
        raise ValueError(f"-o {out_dir}: is {kind}, not a folder; export writes a folder of its own")
    if not force and not (out_dir / MARKER).is_file() and any(out_dir.iterdir()):
        raise ValueError(f"-o {out_dir}: holds files g4g export did not write (no {MARKER}); it would replace "
                         f"them all: pass --force, or choose another folder")


def write_export(out_dir: Path, folders: dict[str, dict[str, bytes]], fmt: str) -> None:
    """Build the whole export in a fresh folder beside `out_dir` and swap it in; on any failure
    the fresh folder is removed, and `out_dir` is as it was."""
    from base.files import atomic_write_bytes, replace_dir

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.{os.getpid()}-{time.monotonic_ns()}.partial")  # this run's own
    staging.mkdir()
    try:
        atomic_write_bytes(staging / MARKER, f"written by `g4g export {fmt}`; replaced whole by the next one\n".encode())
        for composition, files in folders.items():
            for name, data in files.items():
                atomic_write_bytes(staging / composition / name, data)
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def run(fmt: str, out_dir: Path, items_file: Path, dataset_dir: Path, templates_dir: Path, force: bool = False) -> int:
    from base.settings import load_settings
    from stages import export_scripts, train

    if fmt not in FORMATS:
        raise ValueError(f"export format '{fmt}'; valid: {', '.join(FORMATS)}")
    check_destination(out_dir, force)
    document = load_items(items_file)
    if document["backend"]["name"] == "none":
        raise ValueError(f"{items_file}: backends.train.name is none, so there are no training captions to export; "
                         f"set it to custom-diffusion or lora (the captions follow its `caption` and the recipe's "
                         f"strategies) and run `dvc repro compile`")
    missing = train.attach_data(document, dataset_dir)
    if missing:
        raise ValueError("; ".join(f"{comp}: {reason}" for comp, reason in sorted(missing.items())))
    prior_files = train.prior_images(document, load_settings(), train.Processes()) if fmt == "diffusers" else {}
    context = {"templates_dir": str(templates_dir), "dataset_dir": str(dataset_dir), "prior_files": prior_files}
    tokenizer = export_scripts.tokenizer_of(document["backend"]["params"]["model"]) if fmt == "diffusers" else None
    folders, counts = {}, {}
    for item in document["items"]:
        examples = train.instances(item, document, context)
        if not examples:
            raise ValueError(f"{item['id']}: no training images to export (every sample of the composition was rejected?)")
        folder = (out_dir / item["id"]).as_posix()
        if fmt == "diffusers":
            priors = [(_png(e.image), e.caption) for e in train.priors(item, context)]
            files = diffusers_files(examples, priors)
            files["train_custom_diffusion.sh"] = export_scripts.custom_diffusion(
                item, document, train.tokens_of(item), tokenizer, len(priors), folder)
        else:
            files = imagefolder_files(examples)
            files["train_dreambooth_lora_sd15_advanced.sh"] = export_scripts.lora(
                item, document, train.tokens_of(item), examples[0].caption, folder)
        folders[item["id"]], counts[item["id"]] = files, len(examples)
    try:
        write_export(out_dir, folders, fmt)
    except OSError as error:
        raise ValueError(f"-o {out_dir}: cannot write the export ({error.strerror or error}); nothing was changed") from None
    for composition, count in counts.items():
        print(f"export: {out_dir / composition}: {count} images")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `export` to the `g4g` subcommands."""
    export = commands.add_parser("export", help="the training images and captions, with the commands that train on "
                                                "them, for diffusers' scripts or Hugging Face imagefolder",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("format", choices=FORMATS)
    export.add_argument("-o", "--output", type=Path, help="default: export/FORMAT")
    export.add_argument("--force", action="store_true", help="replace -o even if g4g export did not write it")
    export.add_argument("--items", type=Path, default=Path("build/compiled/train.json"))
    export.add_argument("--dataset", type=Path, default=Path("dataset"))
    export.add_argument("--templates", type=Path, default=Path("templates"))
    export.set_defaults(run=lambda args: run(args.format, args.output or Path("export") / args.format, args.items,
                                             args.dataset, args.templates, args.force))
    return export
