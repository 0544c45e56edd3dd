"""LoRA (peft) on the UNet's attention projections (q, k, v, out) plus the new tokens'
embeddings: what most users train today. Saved in diffusers' LoRA format
(`pytorch_lora_weights.safetensors`, read by `pipeline.load_lora_weights`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.backends.train import common
from stages.backends.train.common import weights  # noqa: F401  (the base model's fingerprint joins the keys)

VERSION = "3"  # 3: images resized with the scripts' LANCZOS (was BICUBIC)
LIBRARIES = ("transformers", "safetensors", "peft")
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@dataclass
class Params(common.Params):
    learning_rate: float = 5e-4  # diffusers' train_dreambooth_lora.py (SD 1.x/2.x) default; their SDXL script: 1e-4
    scale_lr: bool = False
    rank: int = 4
    alpha: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank < 1 or self.alpha < 1:
            raise ValueError("rank and alpha must be >= 1")


class Method:
    SUM_CHANNELS = False  # train_dreambooth_lora.py: F.mse_loss(..., reduction="mean")
    RESAMPLE = "lanczos"  # the DreamBooth LoRA scripts' --image_interpolation_mode default
    WEIGHTS = "pytorch_lora_weights.safetensors"

    def __init__(self, rank: int, alpha: int, seed: int):
        self.rank, self.alpha, self.seed = rank, alpha, seed

    def prepare(self, unet: Any) -> list[Any]:
        import torch
        from peft import LoraConfig

        torch.manual_seed(self.seed)  # LoRA's A matrices start random: seeded, so runs repeat
        unet.add_adapter(LoraConfig(r=self.rank, lora_alpha=self.alpha, init_lora_weights="gaussian",
                                    target_modules=TARGETS))
        return [p for p in unet.parameters() if p.requires_grad]

    def save(self, unet: Any, folder: Path) -> None:
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, weight_name=self.WEIGHTS,
                                                  safe_serialization=True)


def load(pipeline: Any, folder: Path) -> None:
    pipeline.load_lora_weights(folder, weight_name=Method.WEIGHTS)


def method(params: Params, seed: int) -> Method:
    return Method(params.rank, params.alpha, seed)
