"""Custom Diffusion (Kumari et al. 2023), the paper's trainer: only the key and value
projections of the UNet's cross-attention layers and the new tokens' embeddings train.

The trainable K/V live in diffusers' Custom Diffusion attention processors, initialised from
the layers' own weights, so the base UNet stays bit-identical and the result is saved and
loaded with diffusers' `save_attn_procs` / `load_attn_procs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from dataclasses import dataclass

from stages.backends.train import common
from stages.backends.train.common import weights  # noqa: F401  (the base model's fingerprint joins the keys)

VERSION = "3"  # 3: images resized with the script's BILINEAR (was BICUBIC)
LIBRARIES = ("transformers", "safetensors")  # reached through diffusers: text encoder, weights


@dataclass
class Params(common.Params):
    augment: bool = True  # the script's resize augmentation (off: its --noaug)
    hflip: bool = True  # its README's commands all pass --hflip


class Method:
    SUM_CHANNELS = True  # its loss: ((mse * mask).sum([1, 2, 3]) / mask.sum([1, 2, 3])).mean()
    RESAMPLE = "bilinear"  # its instances (Image.BILINEAR) and class images (transforms' BILINEAR)
    # Pickled like diffusers' Custom Diffusion docs load it: safetensors cannot hold the empty
    # entries of the self-attention layers, without which `load_attn_procs` cannot set them.
    WEIGHTS = "pytorch_custom_diffusion_weights.bin"

    def prepare(self, unet: Any) -> list[Any]:
        processors = install(unet, lambda layer: {"to_k_custom_diffusion.weight": layer.to_k.weight,
                                                  "to_v_custom_diffusion.weight": layer.to_v.weight})
        return [p for processor in processors for p in processor.parameters()]

    def save(self, unet: Any, folder: Path) -> None:
        unet.save_attn_procs(folder, weight_name=self.WEIGHTS, safe_serialization=False)


def install(unet: Any, kv_weights: Callable[[Any], dict[str, Any]]) -> list[Any]:
    """Give every cross-attention layer a Custom Diffusion processor holding its own K/V
    (`kv_weights(layer)`), every self-attention layer a plain one; returns the former."""
    import torch
    from diffusers.models.attention_processor import CustomDiffusionAttnProcessor2_0

    processors, trainable = {}, []
    for name in unet.attn_processors:
        layer = unet.get_submodule(name.rsplit(".processor", 1)[0])
        if layer.is_cross_attention:
            hidden, cross = layer.to_k.weight.shape
            processor = CustomDiffusionAttnProcessor2_0(train_kv=True, train_q_out=False, hidden_size=hidden,
                                                        cross_attention_dim=cross)
            processor.load_state_dict(kv_weights(layer))
            processors[name] = processor.to(unet.device, torch.float32)
            trainable.append(processors[name])
        else:
            processors[name] = CustomDiffusionAttnProcessor2_0(train_kv=False, train_q_out=False)
    unet.set_attn_processor(processors)
    return trainable


def load(pipeline: Any, folder: Path) -> None:
    """Load trained K/V weights into a pipeline. diffusers' `unet.load_attn_procs` reads this
    file too, but since diffusers 0.3x it installs the processors only when called from a
    pipeline loader (huggingface/diffusers#9320), so they are installed here."""
    import torch

    state = torch.load(folder / Method.WEIGHTS, map_location="cpu", weights_only=True)

    def trained(layer: Any) -> dict[str, Any]:
        name = next(n for n, m in pipeline.unet.named_modules() if m is layer)
        return {key: state[f"{name}.processor.{key}"]
                for key in ("to_k_custom_diffusion.weight", "to_v_custom_diffusion.weight")}

    install(pipeline.unet, trained)
    pipeline.unet.to(pipeline.unet.dtype)


def method(params: Params, seed: int) -> Method:
    return Method()
