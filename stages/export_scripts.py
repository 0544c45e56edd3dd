"""The commands that run diffusers' example trainers on a `g4g export`, one shell script per
composition, with every token the captions use and the options `train` uses.

  export/diffusers/<composition>/train_custom_diffusion.sh
      examples/custom_diffusion/train_custom_diffusion.py --concepts_list concept_list.json
  export/imagefolder/<composition>/train_dreambooth_lora_sd15_advanced.sh
      examples/advanced_diffusion_training/train_dreambooth_lora_sd15_advanced.py --dataset_name <the folder>

Each script says, in its comments, where the diffusers script cannot do what `train` does and
what it does instead. The scripts are plain text of the recipe's values: the same build gives
the same bytes.
"""

from __future__ import annotations

import shlex
from typing import Any

CUSTOM_DIFFUSION = "custom_diffusion/train_custom_diffusion.py"
LORA = "advanced_diffusion_training/train_dreambooth_lora_sd15_advanced.py"
SCRIPT_NAMES = {CUSTOM_DIFFUSION: "train_custom_diffusion.sh", LORA: "train_dreambooth_lora_sd15_advanced.sh"}


def tokenizer_of(model: str) -> Any:
    """The base model's tokenizer, the one the scripts load (`subfolder="tokenizer"`)."""
    from transformers import AutoTokenizer

    from stages.metrics.models import ModelMissing, require_local_when_offline

    require_local_when_offline(model, "backends.train.model")
    try:
        return AutoTokenizer.from_pretrained(model, subfolder="tokenizer")
    except (OSError, ValueError) as error:
        raise ModelMissing(f"backends.train.model: cannot load the tokenizer of '{model}' ({error}); give a "
                           f"diffusers folder or hub id") from None


def initializer(tokenizer: Any, words: list[str]) -> str:
    """The one word train_custom_diffusion.py can start a token from (its --initializer_token must
    be a single token): the first of `words` that is one token, else the last word piece of the
    first (its head: "houseplant" -> "plant")."""
    for word in words:
        if len(tokenizer(word, add_special_tokens=False).input_ids) == 1:
            return word
    piece = tokenizer.decode(tokenizer(words[0], add_special_tokens=False).input_ids[-1]).strip()
    if len(tokenizer(piece, add_special_tokens=False).input_ids) != 1:
        raise ValueError(f"class noun '{words[0]}': no word of it is a single token of the base model's tokenizer, "
                         f"which train_custom_diffusion.py's --initializer_token needs")
    return piece


def check_token(token: str, separator: str, option: str) -> None:
    if separator in token or not token.strip() or token != "".join(token.split()):
        raise ValueError(f"token '{token}': the script's {option} is split at '{separator}' and spaces, so a token "
                         f"holding them cannot be passed; rename it in the recipe's concepts")


def _command(script: str, arguments: list[tuple[str, Any]], header: list[str], document: dict[str, Any],
             output: str) -> bytes:
    """A POSIX shell script: the header as comments, then the launch with one option a line.
    train_custom_diffusion.py runs in the composition's folder (concept_list.json's paths are
    relative to it); the LoRA script where it is called, its output a plain folder name (it
    writes `<output_dir>/<output_dir>_emb.safetensors`)."""
    model = shlex.quote(document["backend"]["params"]["model"])
    lines = ["#!/bin/sh", *(f"# {line}".rstrip() for line in header), "set -e",
             f'output="${{OUTPUT_DIR:-{output}}}"', f'model="${{MODEL:-{model}}}"',
             'if [ -d "$model" ]; then model="$(cd "$model" && pwd)"; fi']
    if script == CUSTOM_DIFFUSION:
        lines += ['case "$output" in /*) ;; *) output="$PWD/$output" ;; esac', 'cd "$(dirname "$0")"']
    else:
        lines += ['case "$output" in */*) echo "OUTPUT_DIR=$output: a folder name without \'/\' (the script writes '
                  'OUTPUT_DIR/OUTPUT_DIR_emb.safetensors)" >&2; exit 2 ;; esac']
    lines += [f'exec ${{LAUNCH:-accelerate launch}} "${{DIFFUSERS_EXAMPLES:?set DIFFUSERS_EXAMPLES to the examples '
              f'folder of a diffusers clone}}/{script}" \\', '  --pretrained_model_name_or_path "$model" \\']
    for name, value in arguments:
        if name == "dataset_name":  # this folder, wherever it is run from
            lines.append('  --dataset_name "$(dirname "$0")" \\')
        elif value is True:
            lines.append(f"  --{name} \\")
        else:
            lines.append(f"  --{name} {shlex.quote(str(value))} \\")
    lines.append('  --output_dir "$output" "$@"')
    return ("\n".join(lines) + "\n").encode()


def _usage(folder: str, script: str) -> list[str]:
    return ["Run from the project's root (a local base model path is the recipe's, relative to it):",
            f"  DIFFUSERS_EXAMPLES=/path/to/diffusers/examples sh {folder}/{SCRIPT_NAMES[script]} [--OPTION VALUE ...]",
            "Options given to it replace the ones below (the script's argparse keeps the last one). MODEL",
            "replaces the recipe's base model, OUTPUT_DIR (default below, in the folder you run it from) is",
            "where the script writes, LAUNCH replaces `accelerate launch` (e.g. LAUNCH=python)."]


def _token_lines(tokens: dict[str, list[str]], starts: dict[str, str]) -> list[str]:
    lines = ["New tokens (every one the captions use) and the word each starts from:"]
    for token, words in tokens.items():
        note = ""
        if len(words) > 1 or starts[token] != words[0]:
            note = (f"   (train: the mean embedding of the word pieces of \"{' '.join(words)}\"; the script copies "
                    f"one token's embedding, so it starts from \"{starts[token]}\")")
        lines.append(f"  {token}  {starts[token]}{note}")
    return lines


def custom_diffusion(item: dict[str, Any], document: dict[str, Any], tokens: dict[str, list[str]], tokenizer: Any,
                     prior_count: int, folder: str) -> bytes:
    """train_custom_diffusion.sh for the diffusers export of one composition."""
    params = document["backend"]["params"]
    for token in tokens:
        check_token(token, "+", "--modifier_token")
    starts = {token: initializer(tokenizer, words) for token, words in tokens.items()}
    header = [f"Custom Diffusion on composition '{item['id']}' with diffusers' examples/{CUSTOM_DIFFUSION},",
              "on the images and captions `g4g train` trains on (concept_list.json). Written by `g4g export diffusers`.",
              *_usage(folder, CUSTOM_DIFFUSION), "", *_token_lines(tokens, starts), "",
              "Where the script differs from `train` (docs/training.md, Fidelity to the reference scripts):",
              "  non-square images are squashed to a square (train centre-crops); its data order, noise and",
              "  augmentation draws come from the global RNG (train: per-step seeded generators), so the",
              "  losses and weights are not byte-equal to train's."]
    if prior_count:
        header.append(f"Prior preservation: the {prior_count} class images of class/ (each noun's, with its prompt),")
        header.append("listed once per concept_list entry: drawn uniformly, the same distribution.")
    arguments = [("concepts_list", "concept_list.json"), ("modifier_token", "+".join(tokens)),
                 ("initializer_token", "+".join(starts[token] for token in tokens)),
                 ("resolution", params["resolution"]), ("center_crop", True),
                 ("train_batch_size", params["batch_size"]), ("learning_rate", params["learning_rate"])]
    arguments += [("scale_lr", True)] if params["scale_lr"] else []
    arguments += [("max_train_steps", item["steps"]), ("checkpointing_steps", params["checkpoint_every"]),
                  ("max_grad_norm", params["max_grad_norm"]), ("adam_weight_decay", params["adam_weight_decay"]),
                  ("seed", item["seed"])]
    arguments += [("hflip", True)] if params["hflip"] else []
    arguments += [] if params["augment"] else [("noaug", True)]
    if prior_count:
        arguments += [("with_prior_preservation", True), ("real_prior", True), ("num_class_images", prior_count),
                      ("prior_loss_weight", params["prior"]["loss_weight"])]
    return _command(CUSTOM_DIFFUSION, arguments, header, document, f"custom-diffusion-{item['id']}")


def lora(item: dict[str, Any], document: dict[str, Any], tokens: dict[str, list[str]], first_caption: str,
         folder: str) -> bytes:
    """train_dreambooth_lora_sd15_advanced.sh for the imagefolder export of one composition."""
    params, backend = document["backend"]["params"], document["backend"]["name"]
    for token in tokens:
        check_token(token, ",", "--token_abstraction")
    header = [f"LoRA on composition '{item['id']}' with diffusers' examples/{LORA} (SD 1.x/2.x;",
              "for SDXL, advanced_diffusion_training/train_dreambooth_lora_sdxl_advanced.py takes the same options),",
              "reading this folder with datasets.load_dataset (--dataset_name, --image_column image,",
              "--caption_column text): the images and captions `g4g train` trains on. Written by `g4g export imagefolder`.",
              *_usage(folder, LORA), "",
              f"New tokens (--token_abstraction, each replaced by one new token <sN> in the captions): {', '.join(tokens)}",
              "Where the script differs from `train` (docs/training.md, Fidelity to the reference scripts):",
              "  it starts each new token from random values (x the embedding table's std), train from the mean",
              "  embedding of its class noun; it trains the tokens only for the first half of the epochs",
              "  (--train_text_encoder_ti_frac 0.5); it takes one class prompt, so it runs without prior",
              "  preservation (train: each noun's class images); its LoRA alpha is its rank."]
    if backend != "lora":
        header.append(f"  this recipe trains {backend}, not LoRA: the command trains LoRA on the same data.")
    if params.get("alpha", params.get("rank", 4)) != params.get("rank", 4):
        header.append(f"  train's alpha is {params['alpha']}, rank {params['rank']}.")
    arguments = [("dataset_name", True), ("image_column", "image"), ("caption_column", "text"),
                 ("instance_prompt", first_caption), ("train_text_encoder_ti", True),
                 ("token_abstraction", ",".join(tokens)), ("num_new_tokens_per_abstraction", 1),
                 ("resolution", params["resolution"]), ("center_crop", True), ("rank", params.get("rank", 4)),
                 ("train_batch_size", params["batch_size"]), ("learning_rate", params["learning_rate"])]
    arguments += [("scale_lr", True)] if params["scale_lr"] else []
    arguments += [("max_train_steps", item["steps"]), ("checkpointing_steps", params["checkpoint_every"]),
                  ("max_grad_norm", params["max_grad_norm"]), ("adam_weight_decay", params["adam_weight_decay"]),
                  ("seed", item["seed"])]
    return _command(LORA, arguments, header, document, f"lora-{item['id']}")
