"""Custom Diffusion (Kumari et al. 2023), the paper's trainer: only the key and value
projections of the UNet's cross-attention layers and the new tokens' embeddings train.

The trainable K/V live in diffusers' Custom Diffusion attention processors, initialised from
the layers' own weights, so the base UNet stays bit-identical and the result is saved and
loaded with diffusers' `save_attn_procs` / `load_attn_procs`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.backends.train.common import Params, weights  # noqa: F401  (the backend's options and weights)

VERSION = "1"
LIBRARIES = ("transformers", "safetensors")  # reached through diffusers: text encoder, weights


class Method:
    WEIGHTS = "pytorch_custom_diffusion_weights.safetensors"

    def prepare(self, unet: Any) -> list[Any]:
        import torch
        from diffusers.models.attention_processor import CustomDiffusionAttnProcessor2_0

        processors = {}
        for name in unet.attn_processors:
            layer = unet.get_submodule(name.rsplit(".processor", 1)[0])
            if layer.is_cross_attention:
                hidden, cross = layer.to_k.weight.shape
                processor = CustomDiffusionAttnProcessor2_0(train_kv=True, train_q_out=False, hidden_size=hidden,
                                                            cross_attention_dim=cross)
                processor.load_state_dict({"to_k_custom_diffusion.weight": layer.to_k.weight,
                                           "to_v_custom_diffusion.weight": layer.to_v.weight})
                processors[name] = processor.to(unet.device, torch.float32)
            else:
                processors[name] = CustomDiffusionAttnProcessor2_0(train_kv=False, train_q_out=False)
        unet.set_attn_processor(processors)
        return [p for processor in processors.values() for p in processor.parameters()]

    def save(self, unet: Any, folder: Path) -> None:
        from diffusers.utils import logging

        level = logging.get_verbosity()
        logging.set_verbosity_error()  # self-attention processors have no weights: diffusers warns of each
        try:
            unet.save_attn_procs(folder, weight_name=self.WEIGHTS, safe_serialization=True)
        finally:
            logging.set_verbosity(level)


def load(pipeline: Any, folder: Path) -> None:
    """Load trained K/V weights into a pipeline with diffusers' own loader."""
    pipeline.unet.load_attn_procs(folder, weight_name=Method.WEIGHTS)


def method(params: Params, seed: int) -> Method:
    return Method()
