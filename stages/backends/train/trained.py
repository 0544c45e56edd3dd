"""A trained model's folder (`trained/<composition>/`) and how to load it.

    model.json                   what was trained: base model, backend, tokens, steps, checkpoints,
                                 resolution, the training item's key
    pytorch_custom_diffusion_weights.bin | pytorch_lora_weights.safetensors
    token-N.safetensors          one new token's embedding each ({token: vector})
    checkpoints/NNNNNNN/         the same weight files at earlier steps (keep_checkpoints)
    captions.jsonl               every training caption, as trained on
    loss.csv, config.json        the loss per step; the resolved training options

Everything loads with diffusers' stock loaders (`load_attn_procs` or `load_lora_weights`, and
`load_textual_inversion`); `load_pipeline` does exactly that.
"""

from __future__ import annotations

import importlib
import io
import json
from pathlib import Path
from typing import Any

from base.files import atomic_write_bytes
from stages.backends.pretrained import load_pipeline as load_pretrained
from stages.backends.train.text import load_tokens

MODEL_FILE = "model.json"
LOADERS = {"custom-diffusion": "stages.backends.train.custom_diffusion", "lora": "stages.backends.train.lora"}


def read_model(model_dir: Path) -> dict[str, Any]:
    """The model's description; a clear error when `model_dir` holds no trained model."""
    path = Path(model_dir) / MODEL_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{model_dir}: no {MODEL_FILE}, so no trained model here; train one with "
                                f"backends.train.name: custom-diffusion (or lora) and `dvc repro`") from None


def load_base(source: str, option: str, dtype: Any = None) -> Any:
    """The base text-to-image pipeline (hub id or diffusers folder: Stable Diffusion 1.x/2.x or
    SDXL, by its model_index.json), safety checker off."""
    from diffusers import AutoPipelineForText2Image
    from diffusers.utils import logging

    logging.disable_progress_bar()
    pipeline = load_pretrained(AutoPipelineForText2Image, source, option, dtype)
    if getattr(pipeline, "safety_checker", None) is not None:
        pipeline.safety_checker = None  # the images are the user's own concepts
    return pipeline


def load_pipeline(model_dir: Path, device: str = "cpu", dtype: Any = None, checkpoint: int | None = None,
                  base: str | None = None) -> Any:
    """Base model + trained weights + new tokens, on `device`. `checkpoint`: a step listed in
    model.json's checkpoints (default: the final weights); `base`: another copy of the base
    model (a local folder) than the one trained from."""
    model_dir = Path(model_dir)
    model = read_model(model_dir)
    folder = model_dir
    if checkpoint is not None and checkpoint != model["steps"]:
        if checkpoint not in model["checkpoints"]:
            raise ValueError(f"{model_dir}: no checkpoint at step {checkpoint}; saved: {model['checkpoints']}")
        folder = model_dir / "checkpoints" / f"{checkpoint:07d}"
    pipeline = base_pipeline(base or model["base"], device, dtype)
    importlib.import_module(LOADERS[model["backend"]]).load(pipeline, folder)
    load_tokens(pipeline, folder, model["token_files"])
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


_BASE: dict[str, Any] = {}  # the last base model loaded in this process, to reuse


def base_pipeline(source: str, device: str, dtype: Any, option: str = "backends.train.model") -> Any:
    """The base pipeline on `device`, loaded once per process and stripped of the previous
    model's weights and tokens (a 1 GB+ load per composition and checkpoint avoided). The
    pipeline a previous call returned is the same object: it now holds the new model."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    memo = repr((source, device, str(dtype)))
    pipeline = _BASE.get(memo)
    if pipeline is None:
        _BASE.clear()
        pipeline = _BASE[memo] = load_base(source, option, dtype).to(device)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline
    if getattr(pipeline.unet, "peft_config", None):
        pipeline.unload_lora_weights()
    pipeline.unet.set_attn_processor(AttnProcessor2_0())
    pipeline.unload_textual_inversion()
    if getattr(pipeline, "text_encoder_2", None) is not None:
        pipeline.unload_textual_inversion(tokenizer=pipeline.tokenizer_2, text_encoder=pipeline.text_encoder_2)
    return pipeline


def sample(model_dir: Path, prompt: str, count: int, out_dir: Path, seed: int = 0, steps: int = 50,
           guidance_scale: float = 6.0, checkpoint: int | None = None, device: str = "cpu", dtype: Any = None
           ) -> list[Path]:
    """`count` images of `prompt` at the training resolution, image i from its own generator
    seeded `seed + i` (the same image whatever `count` is), written as out_dir/NNN.png."""
    import torch

    pipeline = load_pipeline(model_dir, device, dtype, checkpoint)
    side = read_model(model_dir)["resolution"]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        image = pipeline(prompt, num_inference_steps=steps, guidance_scale=guidance_scale, height=side, width=side,
                         generator=torch.Generator().manual_seed(seed + index)).images[0]
        paths.append(out_dir / f"{index:03d}.png")
        encoded = io.BytesIO()
        image.save(encoded, format="PNG")
        atomic_write_bytes(paths[-1], encoded.getvalue())  # a link there is replaced, never written through
    return paths
