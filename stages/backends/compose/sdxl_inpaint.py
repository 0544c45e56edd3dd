"""Background repainting with SDXL inpainting, as in Gen4Gen (step 3).

The cut-outs are pasted on the (lightly blurred) background photo, the union mask is box
blurred (5x5), stretched and inverted so that only the background is repainted, SDXL
inpainting repaints it (strength 0.9, guidance 6, 60 steps) and the SDXL refiner finishes
from denoising 0.75. Then, unlike the paper's code, the original cut-out pixels are pasted
back through the soft mask so a concept cannot drift (the paper shows a cup turning into a
lamp). A background with a phrase but no photo is first generated with SDXL text-to-image.

Every item gets its own CPU `torch.Generator` seeded from its seed, so its noise is the same
whatever batch it falls in and on any device (batched float kernels may still round a few
pixels differently, by one level); batch size, device, precision, `torch.compile` and CPU
offload are runtime settings, not recipe values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageFilter

from compiler.keys import item_seed
from stages.backends.compose import paste
from stages.metrics.models import ModelMissing, hub_offline
from stages.runtime.settings import torch_device, torch_dtype
from stages.templating import Templates

VERSION = "1"
PAPER_NEGATIVE_PROMPT = (  # fits CLIP's 77 tokens
    "ugly, deformed, disfigured, mutated, duplicate, poorly drawn, bad proportions, blurry, out of focus, "
    "lowres, low quality, worst quality, jpeg artifacts, cropped, out of frame, watermark, text, logo, "
    "cartoon, painting, illustration, 3d render, oversaturated")


@dataclass
class Params(paste.Params):
    harmonize: float = 0.0  # the repainted background adapts to the concepts instead
    model: str = "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"  # hub id or local directory
    refiner: str = "stabilityai/stable-diffusion-xl-refiner-1.0"  # "" for none
    background_model: str = "stabilityai/stable-diffusion-xl-base-1.0"  # for backgrounds without photos
    prompt_template: str = "prompts/repaint.j2"
    negative_prompt: str = PAPER_NEGATIVE_PROMPT
    strength: float = 0.9
    guidance_scale: float = 6.0
    steps: int = 60
    refiner_start: float = 0.75  # the base model stops and the refiner takes over at this denoising point
    background_blur: float = 1.0  # Gaussian radius on the background photo before pasting
    mask_blur: int = 5  # box-blur kernel on the repaint mask
    paste_back: bool = True  # restore the cut-out pixels through the soft mask after repainting
    keep_unpasted: bool = False  # also keep the repainted image before paste-back
    FILES: ClassVar[dict[str, str]] = {"prompt_template": "templates"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.strength <= 1 or not 0 < self.refiner_start < 1:
            raise ValueError("strength in (0, 1] and refiner_start in (0, 1)")
        if self.steps < 1 or self.mask_blur < 1 or self.mask_blur % 2 == 0 or self.background_blur < 0:
            raise ValueError("steps >= 1, mask_blur an odd kernel size >= 1, background_blur >= 0")


def repaint_mask(union: Image.Image, kernel: int) -> Image.Image:
    """The paper's inpainting mask: box-blurred union mask, stretched to 0-255, inverted
    (white = repaint), so only the background is repainted."""
    blurred = np.asarray(union.filter(ImageFilter.BoxBlur(kernel // 2)) if kernel > 1 else union, dtype=np.float32)
    low, high = float(blurred.min()), float(blurred.max())
    stretched = (blurred - low) * (255.0 / (high - low)) if high > low else blurred
    return Image.fromarray((255 - np.round(stretched)).astype(np.uint8))


def _load(pipeline_class: Any, source: str, option: str, dtype: Any, **components: Any) -> Any:
    if hub_offline() and not Path(source).is_dir():
        raise ModelMissing(
            f"{option}: '{source}' is not a local directory and HF_HUB_OFFLINE is set. On a machine with "
            f"internet run `huggingface-cli download {source} --local-dir models/{source.split('/')[-1]}`, copy it "
            f"here and set {option}: models/{source.split('/')[-1]}")
    try:
        return pipeline_class.from_pretrained(source, torch_dtype=dtype, **components)
    except (OSError, ValueError) as error:
        raise ModelMissing(f"{option}: cannot load '{source}' ({error}); give a diffusers folder or hub id") from None


class Backend:
    def __init__(self, params: Params, templates_dir: str = "templates", device: str = "auto",
                 precision: str = "auto", torch_compile: bool = False, cpu_offload: bool = False):
        self.params = params
        self.paste = paste.Backend(paste.Params(feather=params.feather, harmonize=params.harmonize))
        self.templates = Templates(templates_dir)
        self.templates.load(params.prompt_template)
        self.device = torch_device(device)
        self.dtype = torch_dtype(precision, self.device)
        self.torch_compile, self.cpu_offload = torch_compile, cpu_offload
        self._pipelines: dict[str, Any] = {}

    def _place(self, pipeline: Any) -> Any:
        if self.cpu_offload:
            pipeline.enable_model_cpu_offload()
        else:
            pipeline.to(self.device)
        if self.torch_compile:
            import torch

            pipeline.unet = torch.compile(pipeline.unet, fullgraph=True)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def pipeline(self, role: str) -> Any:
        """`inpaint`, `refiner` or `background`, loaded once per worker, sharing components."""
        if role not in self._pipelines:
            from diffusers import StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline

            p = self.params
            if role == "inpaint":
                pipeline = _load(StableDiffusionXLInpaintPipeline, p.model, "backends.compose.model", self.dtype)
            elif role == "refiner":
                base = self.pipeline("inpaint")
                pipeline = _load(StableDiffusionXLInpaintPipeline, p.refiner, "backends.compose.refiner", self.dtype,
                                 text_encoder_2=base.text_encoder_2, vae=base.vae)
            else:
                pipeline = _load(StableDiffusionXLPipeline, p.background_model, "backends.compose.background_model",
                                 self.dtype)
            self._pipelines[role] = self._place(pipeline)
        return self._pipelines[role]

    def _generators(self, seeds: list[int], purpose: str) -> list[Any]:
        """One CPU generator per item (same noise on any device and in any batch)."""
        import torch

        return [torch.Generator("cpu").manual_seed(item_seed(seed, purpose)) for seed in seeds]

    def compose_batch(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each job: `boxes`, `cutouts` (RGBA, paste order), `background` (canvas-sized RGB, or
        None to generate one), `phrase`, `seed`, `canvas`. Returns per job what the paste
        composer returns, plus `unpasted` when kept."""
        p = self.params
        width, height = jobs[0]["canvas"]
        prompts = [" ".join(self.templates.render(p.prompt_template, background=job["phrase"]).split())
                   for job in jobs]
        seeds = [job["seed"] for job in jobs]
        backgrounds = self._backgrounds(jobs, prompts, width, height)
        blur = ImageFilter.GaussianBlur(p.background_blur) if p.background_blur > 0 else None
        pasted = [self.paste.compose(job["boxes"], job["cutouts"], background.filter(blur) if blur else background)
                  for job, background in zip(jobs, backgrounds)]
        masks = [repaint_mask(result["mask"], p.mask_blur) for result in pasted]
        common = {"prompt": prompts, "negative_prompt": [p.negative_prompt] * len(jobs), "mask_image": masks,
                  "num_inference_steps": p.steps, "guidance_scale": p.guidance_scale, "height": height, "width": width}
        refine = bool(p.refiner)
        images = self.pipeline("inpaint")(
            **common, image=[r["image"] for r in pasted], strength=p.strength, generator=self._generators(seeds, "inpaint"),
            denoising_end=p.refiner_start if refine else None, output_type="latent" if refine else "pil").images
        if refine:
            images = self.pipeline("refiner")(**common, image=images, denoising_start=p.refiner_start,
                                              generator=self._generators(seeds, "refiner")).images
        outputs = []
        for result, repainted in zip(pasted, images):
            repainted = repainted.convert("RGB")
            final = Image.composite(result["image"], repainted, result["mask"]) if p.paste_back else repainted
            outputs.append({**result, "image": final, **({"unpasted": repainted} if p.keep_unpasted else {})})
        return outputs

    def _backgrounds(self, jobs: list[dict[str, Any]], prompts: list[str], width: int, height: int) -> list[Image.Image]:
        """The jobs' background photos; those without one are generated from their phrase."""
        missing = [i for i, job in enumerate(jobs) if job["background"] is None]
        backgrounds = [job["background"] for job in jobs]
        if missing:
            generated = self.pipeline("background")(
                prompt=[prompts[i] for i in missing], negative_prompt=[self.params.negative_prompt] * len(missing),
                num_inference_steps=self.params.steps, guidance_scale=self.params.guidance_scale, height=height,
                width=width, generator=self._generators([jobs[i]["seed"] for i in missing], "background")).images
            for i, image in zip(missing, generated):
                backgrounds[i] = image.convert("RGB")
        return backgrounds
