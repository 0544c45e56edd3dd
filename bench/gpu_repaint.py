"""GPU throughput of the `sdxl-inpaint` compose backend against the bare UNet, in one run.

Builds SDXL-architecture inpainting components with random weights on the GPU (timings do not
depend on weight values): the 9-channel SDXL-inpainting UNet (2.57 B parameters), the SDXL
VAE and both text encoders; hands them to the real stage backend and runs
`Backend.compose_batch` (paste, mask, repaint, paste-back, at 1024x1024) on batches of
composed items, refiner off, 30 steps x strength 0.9, guidance 6. For batch sizes 1, 4 and 8
it prints images per hour and the ratio of the bare UNet time (the same denoising steps with
classifier-free guidance, measured in the same run) to the stage time.

Reference (platform-notes.md, H100, fp16): stock diffusers pipeline 1,184 / 2,577 / 2,647
images/h at batch 1 / 4 / 8, 0.75-0.77 of its time in the UNet. Targets: >= 0.85 of UNet
time at batch 8 (>= 3,000 images/h), batch 8 >= 2.2x batch 1, > 3,400 images/h compiled.

The GPU machine has torch and transformers but no diffusers and no network: prepare a folder
on this machine and carry it (the device tool's `carry`):
    pip install --target bench/.gpu-deps --no-deps diffusers jinja2 markupsafe   # + pillow, if it lacks one
    python -c "from tests.tiny_models import clip_tokenizer_files as f; from pathlib import Path; \\
               f(Path('bench/.gpu-deps/clip-tokenizer'))"
then on the GPU:   PYTHONPATH=bench/.gpu-deps:. python bench/gpu_repaint.py [--compile]
and on a CPU, to check the script itself:   python bench/gpu_repaint.py --tiny
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.backends.compose.sdxl_inpaint import Backend, Params  # noqa: E402

SDXL_UNET = dict(  # stabilityai/stable-diffusion-xl-1.0 UNet, 9 input channels for inpainting
    sample_size=128, in_channels=9, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
SDXL_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2, sample_size=1024, scaling_factor=0.13025, force_upcast=False)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, projection_dim=768)
CLIP_BIG_G = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                  projection_dim=1280, hidden_act="gelu")
TINY_UNET = dict(sample_size=8, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 1),
                 attention_head_dim=(2, 4), cross_attention_dim=64, use_linear_projection=True, norm_num_groups=8,
                 addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=80)
TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), norm_num_groups=8,
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=64)
TINY_CLIP = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, projection_dim=32)


def build_pipeline(tiny: bool, tokenizer_dir: Path, device: str, dtype: torch.dtype):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    def text_config(sizes):
        return CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                              pad_token_id=49407, **sizes)

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**(TINY_UNET if tiny else SDXL_UNET))
        vae = AutoencoderKL(**(TINY_VAE if tiny else SDXL_VAE))
        text_encoder = CLIPTextModel(text_config(TINY_CLIP if tiny else CLIP_L))
        text_encoder_2 = CLIPTextModelWithProjection(text_config(TINY_CLIP if tiny else CLIP_BIG_G))
    tokenizer = CLIPTokenizer(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"), model_max_length=77)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipeline = StableDiffusionXLInpaintPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                                tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    return pipeline.to(device=device, dtype=dtype)


def jobs(count: int, canvas: int) -> list[dict]:
    rng = np.random.default_rng(0)
    cutout = Image.fromarray(rng.integers(0, 255, (canvas // 3, canvas // 4, 4), dtype=np.uint8))
    side = canvas // 4
    return [{"boxes": [[canvas // 8, canvas // 2, side, side + side // 3], [canvas // 2, canvas // 2, side, side]],
             "cutouts": [cutout, cutout], "phrase": "in the garden", "seed": i, "canvas": [canvas, canvas],
             "background": Image.fromarray(rng.integers(0, 255, (canvas, canvas, 3), dtype=np.uint8))}
            for i in range(count)]


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def unet_seconds(pipeline, batch: int, steps: int, canvas: int, device: str, dtype: torch.dtype) -> float:
    """The bare UNet for `steps` denoising steps at this batch size, with CFG (2x batch)."""
    unet, latent = pipeline.unet, canvas // 8
    sample = torch.randn(2 * batch, unet.config.in_channels, latent, latent, device=device, dtype=dtype)
    hidden = torch.randn(2 * batch, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    text_embeds = torch.randn(2 * batch, pipeline.text_encoder_2.config.projection_dim, device=device, dtype=dtype)
    time_ids = torch.tensor([[canvas, canvas, 0, 0, canvas, canvas]] * (2 * batch), device=device, dtype=dtype)
    conditioning = {"text_embeds": text_embeds, "time_ids": time_ids}
    with torch.inference_mode():
        unet(sample, 500, hidden, added_cond_kwargs=conditioning)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for step in range(steps):
            unet(sample, 999 - step, hidden, added_cond_kwargs=conditioning)
        synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny components, 64x64, on the CPU (checks the script)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--strength", type=float, default=0.9)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (the runtime setting)")
    parser.add_argument("--tokenizer", type=Path, default=REPO / "bench/.gpu-deps/clip-tokenizer")
    args = parser.parse_args()

    device = "cpu" if args.tiny else "cuda"
    dtype = torch.float32 if args.tiny else torch.float16
    canvas = 64 if args.tiny else 1024
    tokenizer_dir = args.tokenizer
    if args.tiny and not tokenizer_dir.is_dir():
        from tests.tiny_models import clip_tokenizer_files

        tokenizer_dir = clip_tokenizer_files(Path(tempfile.mkdtemp()) / "clip-tokenizer")
    pipeline = build_pipeline(args.tiny, tokenizer_dir, device, dtype)
    params = Params(steps=args.steps, strength=args.strength, guidance_scale=6.0, refiner="")
    backend = Backend(params, templates_dir=str(REPO / "templates"), device=device,
                      precision="fp32" if args.tiny else "fp16", torch_compile=args.compile)
    backend._pipelines["inpaint"] = backend._place(pipeline)  # the real placement: device, compile, no progress bar
    denoising = int(args.steps * args.strength)
    print(f"{'tiny CPU check' if args.tiny else torch.cuda.get_device_name()}  {canvas}x{canvas}  "
          f"{args.steps} steps x strength {args.strength} ({denoising} denoising)  refiner off  "
          f"{'torch.compile' if args.compile else 'eager'}  {dtype}")
    rates = {}
    for batch in args.batches:
        work = jobs(batch, canvas)
        backend.compose_batch(work)  # warm-up (and compilation)
        synchronize(device)
        repeats = 3 if batch == 1 else 2
        start = time.perf_counter()
        for _ in range(repeats):
            backend.compose_batch(work)
        synchronize(device)
        stage = (time.perf_counter() - start) / repeats
        unet = unet_seconds(backend.pipeline("inpaint"), batch, denoising, canvas, device, dtype)
        rates[batch] = 3600 * batch / stage
        print(f"batch {batch:2d}: {rates[batch]:8.0f} images/h   stage {stage:7.3f} s   UNet only {unet:7.3f} s   "
              f"UNet / stage = {unet / stage:.2f}")
    if 1 in rates and len(rates) > 1:
        best = max(rates)
        print(f"batch {best} / batch 1 = {rates[best] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
