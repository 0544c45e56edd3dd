"""Tiny randomly initialised models built in code (no download), saved the way real ones are
published, so the real loading and inference code paths run on them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def clip_tokenizer_files(directory: Path) -> Path:
    """vocab.json + merges.txt of the real CLIP BPE (49,408 tokens) from open_clip's copy."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return directory


def save_tiny_owlvit(directory: Path) -> Path:
    """A 2-layer OWL-ViT with its processor, saved with save_pretrained."""
    from transformers import (CLIPTokenizer, OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor,
                              OwlViTProcessor)

    torch.manual_seed(0)
    config = OwlViTConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        projection_dim=32,
    )
    OwlViTForObjectDetection(config).eval().save_pretrained(directory)
    tokenizer_dir = clip_tokenizer_files(directory / "tokenizer-src")
    tokenizer = CLIPTokenizer(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"),
                              model_max_length=16, pad_token="!")
    processor = OwlViTProcessor(image_processor=OwlViTImageProcessor(size={"height": 32, "width": 32},
                                                                     crop_size={"height": 32, "width": 32}),
                                tokenizer=tokenizer)
    processor.save_pretrained(directory)
    return directory


def save_tiny_open_clip(directory: Path) -> tuple[Path, Path]:
    """(config JSON, checkpoint) of a 1-layer open_clip model named `tiny-clip`."""
    import open_clip

    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip")
    checkpoint = directory / "tiny-clip.pt"
    torch.save(model.state_dict(), checkpoint)
    return config, checkpoint


def save_tiny_causal_lm(directory: Path) -> Path:
    """A 2-layer GPT-2 with a byte-level BPE tokenizer trained here on a few sentences."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(["A realistic photo of a cat and a mug in the garden.",
                                 '{"objects": [{"name": "cat", "box": [10, 20, 30, 40]}]}'],
                                vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=trainer, eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=4096, n_embd=32, n_layer=2, n_head=2,
                                       eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id))
    model.eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _tiny_text_encoders(tokenizer_dir: Path):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    config = CLIPTextConfig(bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_size=32,
                            intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=49408,
                            projection_dim=32, max_position_embeddings=77)
    tokenizer = CLIPTokenizer(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"), model_max_length=77)
    return config, tokenizer, CLIPTextModel(config).eval(), CLIPTextModelWithProjection(config).eval()


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                         norm_num_groups=8, sample_size=64)


def _tiny_unet(in_channels: int, cross_attention_dim: int, time_ids: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1), norm_num_groups=8,
        projection_class_embeddings_input_dim=time_ids * 8 + 32, cross_attention_dim=cross_attention_dim)


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                  beta_schedule="scaled_linear", timestep_spacing="leading")


def save_tiny_sdxl(directory: Path) -> dict[str, Path]:
    """SDXL-architecture inpainting (9-channel UNet, `text_time` conditioning, two text
    encoders), refiner and text-to-image pipelines, tiny and random, saved as diffusers
    folders."""
    from diffusers import StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline

    tokenizer_dir = clip_tokenizer_files(directory / "clip-tokenizer")
    torch.manual_seed(0)
    _, tokenizer, text_encoder, text_encoder_2 = _tiny_text_encoders(tokenizer_dir)
    vae = _tiny_vae()
    paths = {name: directory / name for name in ("inpaint", "refiner", "base")}
    StableDiffusionXLInpaintPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=_tiny_unet(9, 64, 6), scheduler=_scheduler(),
    ).save_pretrained(paths["inpaint"])
    StableDiffusionXLInpaintPipeline(
        vae=vae, text_encoder=None, text_encoder_2=text_encoder_2, tokenizer=None, tokenizer_2=tokenizer,
        unet=_tiny_unet(4, 32, 5), scheduler=_scheduler(), requires_aesthetics_score=True,
    ).save_pretrained(paths["refiner"])
    StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=_tiny_unet(4, 64, 6), scheduler=_scheduler(),
    ).save_pretrained(paths["base"])
    return paths


def save_tiny_sd15(directory: Path) -> Path:
    """A Stable Diffusion 1.5-architecture text-to-image pipeline (cross-attention UNet, CLIP
    text encoder and the real CLIP tokenizer, VAE, DDPM-trained noise schedule), tiny and
    random, saved as a diffusers folder: 64x64 images from 8x8 latents."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    tokenizer_dir = clip_tokenizer_files(directory.parent / f"{directory.name}-tokenizer")
    torch.manual_seed(0)
    _, tokenizer, text_encoder, _ = _tiny_text_encoders(tokenizer_dir)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=4, norm_num_groups=8, cross_attention_dim=32)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                              clip_sample=False, num_train_timesteps=1000)
    StableDiffusionPipeline(vae=_tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                            scheduler=scheduler, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(directory)
    return directory
