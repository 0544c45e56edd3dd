"""GPU throughput of the `evaluate` stage: generation against the bare UNet, metrics against
bare forwards of the metric models, each measured in the same run.

Generation: Stable Diffusion 1.5-architecture components with random weights (UNet 860 M
parameters, VAE, CLIP ViT-L/14 text encoder; timings do not depend on weight values) behind the
stage's own `Sampler.generate` (scheduler swap, one seeded CPU generator per image, guidance
6, DDIM eta 1) at 512x512, batches of 1 and 8 images. It prints images per hour and the bare
UNet time (the same denoising steps with classifier-free guidance) over the stage time: target
>= 0.85 at batch 8. Steps default to 50 (the ratio does not depend on them; the protocol's 200
take 4x as long).

Metrics: OWL-ViT base-patch32 and open_clip ViT-B-32 architectures with random weights behind
the `clip` backend's `measure_batch` (detector at threshold 0, so every concept gets boxes and
crops, 3 concepts per image) against the bare detector forward and image-encoder forward on the
same, already preprocessed inputs: images/s of both.

The GPU machine has torch and transformers but no diffusers or open_clip and no network:
prepare a folder on this machine and carry it (the device tool's `carry`):
    pip install --target bench/.gpu-deps --no-deps diffusers open_clip_torch ftfy wcwidth jinja2 markupsafe
    python -c "from tests.tiny_models import clip_tokenizer_files as f; from pathlib import Path; \\
               f(Path('bench/.gpu-deps/clip-tokenizer'))"
then on the GPU:   PYTHONPATH=bench/.gpu-deps:. python bench/gpu_evaluate.py
and on a CPU, to check the script itself:   python bench/gpu_evaluate.py --tiny
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stages.backends.evaluate import clip, sampling  # noqa: E402
from stages.backends.train import trained  # noqa: E402
from bench.sd15 import build_pipeline, latent_side, synchronize  # noqa: E402

TINY_OWLVIT = dict(
    text_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "max_position_embeddings": 16},
    vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "image_size": 32, "patch_size": 8}, projection_dim=32)
TINY_OPEN_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                                                  "head_width": 16},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
NOUNS = ("cat", "mug", "houseplant")


def unet_seconds(unet, batch: int, steps: int, latent: int, device: str, dtype: torch.dtype) -> float:
    """The bare UNet for `steps` denoising steps at this batch size, with CFG (2x batch)."""
    sample = torch.randn(2 * batch, 4, latent, latent, device=device, dtype=dtype)
    hidden = torch.randn(2 * batch, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    with torch.inference_mode():
        unet(sample, 500, hidden)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        for step in range(steps):
            unet(sample, 999 - step, hidden)
        synchronize(device)
    return time.perf_counter() - start


def bench_generation(args, device: str, dtype: torch.dtype, tokenizer_dir: Path) -> list[Image.Image]:
    pipeline = build_pipeline(args.tiny, tokenizer_dir, device, dtype)
    trained.load_base = lambda source, option, dtype=None: pipeline  # the in-memory model stands in for a download
    resolution = 64 if args.tiny else 512
    options = {"sampler": "ddim", "steps": args.steps, "guidance_scale": 6.0, "eta": 1.0, "resolution": resolution,
               "negative_prompt": ""}
    sampler = sampling.Sampler(options, device, "fp32" if args.tiny else "fp16")
    source = {"base": "random SD 1.5 architecture", "option": "bench"}
    prompt = "a photo of <cat1> and <mug1> and <plant1> side by side on a wooden table in a sunlit kitchen"
    images = []
    for batch in args.batches:
        seeds = list(range(batch))
        images = sampler.generate(source, [prompt] * batch, seeds)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        sampler.generate(source, [prompt] * batch, seeds)
        synchronize(device)
        stage = time.perf_counter() - start
        unet = unet_seconds(pipeline.unet, batch, args.steps, latent_side(pipeline.vae, resolution), device,
                            dtype)
        print(f"generate batch {batch:2d}: {3600 * batch / stage:8.0f} images/h   stage {stage:7.3f} s   "
              f"UNet only {unet:7.3f} s   UNet / stage = {unet / stage:.2f}")
    return images


def metric_models(tiny: bool, tokenizer_dir: Path, root: Path) -> dict:
    """A saved OWL-ViT (random weights) and the open_clip options of the backend."""
    import open_clip
    from transformers import (CLIPTokenizer, OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor,
                              OwlViTProcessor)

    torch.manual_seed(0)
    OwlViTForObjectDetection(OwlViTConfig(**TINY_OWLVIT) if tiny else OwlViTConfig()).save_pretrained(root / "owlvit")
    size = 32 if tiny else 768
    tokenizer = CLIPTokenizer(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"),
                              model_max_length=16, pad_token="!")
    OwlViTProcessor(image_processor=OwlViTImageProcessor(size={"height": size, "width": size},
                                                         crop_size={"height": size, "width": size}),
                    tokenizer=tokenizer).save_pretrained(root / "owlvit")
    options = {"detector": str(root / "owlvit"), "embedder": "ViT-B-32", "embedder_weights": "", "embedder_config": ""}
    if tiny:
        (root / "tiny-clip.json").write_text(json.dumps(TINY_OPEN_CLIP))
        open_clip.add_model_config(root / "tiny-clip.json")
        options.update(embedder="tiny-clip", embedder_config=str(root / "tiny-clip.json"))
    return options


def bench_metrics(args, device: str, tokenizer_dir: Path, images: list[Image.Image]) -> None:
    root = Path(tempfile.mkdtemp())
    backend = clip.Backend(clip.Params(detection_threshold=0.0, **metric_models(args.tiny, tokenizer_dir, root)), device)
    rng = np.random.default_rng(0)
    references = []
    for index in range(len(NOUNS)):
        path = root / f"reference-{index}.png"
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(path)
        references.append(str(path))
    concepts = [{"id": noun, "class_noun": noun, "references": [path]} for noun, path in zip(NOUNS, references)]
    count = args.metric_images
    pool = images or [Image.new("RGB", (64, 64))]
    samples = []
    for index in range(count):
        path = root / f"image-{index}.png"
        pool[index % len(pool)].save(path)
        samples.append({"image": str(path), "concepts": concepts, "text": "on a wooden table in a sunlit kitchen"})
    backend.measure_batch(samples[:2])  # warm-up (and the references' embeddings)
    synchronize(device)
    start = time.perf_counter()
    found = backend.measure_batch(samples)
    synchronize(device)
    stage = time.perf_counter() - start
    crops = sum(2 * sum(c["detected"] for c in result["concepts"].values()) for result in found) + count

    detector, embedder = backend.detector, backend.embedder
    pil = [Image.open(s["image"]).convert("RGB") for s in samples]
    inputs = {k: v.to(device) for k, v in detector.processor(text=[list(NOUNS)] * count, images=pil,
                                                             return_tensors="pt").items()}
    pixels = torch.stack([embedder.preprocess(im) for im in pil] * (crops // count + 1))[:crops].to(device)
    with torch.inference_mode():
        detector.model(**inputs)
        synchronize(device)
        start = time.perf_counter()
        detector.model(**inputs)
        embedder.model.encode_image(pixels, normalize=True)
        synchronize(device)
    bare = time.perf_counter() - start
    print(f"metrics: {count} images, {crops} CLIP crops+images: stage {count / stage:8.1f} images/s   "
          f"bare OWL-ViT + CLIP forward {count / bare:8.1f} images/s   bare / stage = {bare / stage:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny components, 64x64, on the CPU (checks the script)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--metric-images", type=int, default=64)
    parser.add_argument("--tokenizer", type=Path, default=REPO / "bench/.gpu-deps/clip-tokenizer")
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.batches, args.metric_images = min(args.steps, 2), [1, 2], min(args.metric_images, 4)

    device = "cpu" if args.tiny else "cuda"
    dtype = torch.float32 if args.tiny else torch.float16
    tokenizer_dir = args.tokenizer
    if args.tiny and not tokenizer_dir.is_dir():
        from tests.tiny_models import clip_tokenizer_files

        tokenizer_dir = clip_tokenizer_files(Path(tempfile.mkdtemp()) / "clip-tokenizer")
    print(f"{'tiny CPU check' if args.tiny else torch.cuda.get_device_name()}  {dtype}  DDIM {args.steps} steps, "
          f"guidance 6, eta 1")
    images = bench_generation(args, device, dtype, tokenizer_dir)
    bench_metrics(args, device, tokenizer_dir, images)


if __name__ == "__main__":
    main()
