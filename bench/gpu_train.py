"""GPU step time of the `train` stage's loop against a bare training step, in one run.

Builds Stable Diffusion 1.5-architecture components with random weights on the GPU (step
times do not depend on weight values): the 860 M-parameter UNet, the VAE, the CLIP ViT-L/14
text encoder and the real CLIP tokenizer. For each backend (custom-diffusion, lora) it runs
the real `Trainer` (batch 8 at 512x512, mixed precision, the backend's trainable weights and
two new tokens) and times its steps after a warm-up; then, in the same run, a bare step of
the same models and trainable weights: the text encoder and UNet forward, backward and AdamW
step on tensors already on the GPU, the floor a training loop cannot beat. It prints steps/s,
ms per step, peak memory and the ratio bare / ours (target >= 0.9).

Anchor (issue 9, H100, random weights): a bare Custom Diffusion step takes 73 ms at batch 2
and 95 ms at batch 8, so 3,000 steps take about 5 minutes per composition.

The GPU machine has torch and transformers but no diffusers, peft or network: prepare a
folder on this machine and carry it (the device tool's `carry`):
    pip install --target bench/.gpu-deps --no-deps diffusers peft jinja2 markupsafe
    python -c "from tests.tiny_models import clip_tokenizer_files as f; from pathlib import Path; \\
               f(Path('bench/.gpu-deps/clip-tokenizer'))"
then on the GPU:   PYTHONPATH=bench/.gpu-deps:. python bench/gpu_train.py [--batch 8] [--steps 30]
and on a CPU, to check the script itself:   python bench/gpu_train.py --tiny
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

from bench.sd15 import build_pipeline, latent_side, synchronize  # noqa: E402
from stages.backends.train import common, custom_diffusion, lora  # noqa: E402

def examples(count: int, resolution: int) -> list[common.Example]:
    rng = np.random.default_rng(0)
    return [common.Example(Image.fromarray(rng.integers(0, 256, (resolution, resolution, 3), np.uint8)),
                           f"<cat1> and <mug1> on the grass, photo {i}") for i in range(count)]


def time_trainer(trainer: common.Trainer, warmup: int, device: str) -> float:
    """Seconds per step of the stage's loop, after `warmup` steps."""
    stamps = {}

    def on_step(step: int) -> None:
        if step in (warmup, trainer.run.steps):
            synchronize(device)
            stamps[step] = time.perf_counter()

    trainer.run.on_step = on_step
    trainer.fit()
    return (stamps[trainer.run.steps] - stamps[warmup]) / (trainer.run.steps - warmup)


def time_bare(trainer: common.Trainer, steps: int, warmup: int, batch: int, resolution: int, device: str,
              dtype) -> float:
    """Seconds per bare step: the same forward, backward and AdamW step, inputs already on the GPU."""
    size = latent_side(trainer.vae, resolution)
    latents = torch.randn(batch, 4, size, size, device=device)
    timesteps = torch.randint(0, 1000, (batch,), device=device)
    ids = trainer.tokenizer(["<cat1> and <mug1> on the grass"] * batch, padding="max_length", max_length=77,
                            return_tensors="pt").input_ids.to(device)
    optimizer = torch.optim.AdamW([*trainer.trainable, trainer.embeddings], lr=1e-5)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    for step in range(steps):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            states = trainer.text_encoder(ids)[0]
            prediction = trainer.unet(latents, timesteps, states).sample.float()
        loss = ((prediction - latents) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    synchronize(device)
    return (time.perf_counter() - start) / (steps - warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny models on the CPU: checks the script only")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    device = "cpu" if args.tiny else "cuda"
    dtype = None if args.tiny else torch.float16
    resolution = 64 if args.tiny else 512
    tokenizer_dir = REPO / "bench/.gpu-deps/clip-tokenizer"
    if args.tiny and not tokenizer_dir.is_dir():
        from tests.tiny_models import clip_tokenizer_files

        tokenizer_dir = clip_tokenizer_files(Path(tempfile.mkdtemp()) / "clip-tokenizer")
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"train step on {name}: SD 1.5-architecture{' (tiny)' if args.tiny else ''}, batch {args.batch} at "
          f"{resolution}x{resolution}, {'fp16 mixed precision' if dtype else 'fp32'}, {args.steps} steps "
          f"({args.warmup} warm-up)")
    for backend, method in (("custom-diffusion", custom_diffusion.Method()), ("lora", lora.Method(4, 4, seed=0))):
        params = common.Params(resolution=resolution, batch_size=args.batch, checkpoint_every=10 ** 6,
                               prior=common.Prior(source="none"))
        with tempfile.TemporaryDirectory() as state:
            run = common.Run(instances=examples(2 * args.batch, resolution), priors=[],
                             tokens={"<cat1>": ["cat"], "<mug1>": ["mug"]}, seed=0, steps=args.steps,
                             state_dir=Path(state), device=device, dtype=dtype)
            trainer = common.Trainer(method, params, build_pipeline(args.tiny, tokenizer_dir), run)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            ours = time_trainer(trainer, args.warmup, device)
            peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else float("nan")
            bare = time_bare(trainer, args.steps, args.warmup, args.batch, resolution, device, dtype)
        trainable = sum(p.numel() for p in trainer.trainable)
        print(f"  {backend:16s} stage {ours * 1e3:7.1f} ms/step ({1 / ours:5.2f} steps/s), bare {bare * 1e3:7.1f} "
              f"ms/step: ratio {bare / ours:.2f} (target >= 0.9); {trainable / 1e6:.1f} M trainable UNet "
              f"weights; peak {peak:.1f} GiB; 3,000 steps ~ {3000 * ours / 60:.1f} min")


if __name__ == "__main__":
    main()
