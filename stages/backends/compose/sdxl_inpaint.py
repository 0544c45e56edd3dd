"""Background repainting with SDXL inpainting, as in Gen4Gen (step 3).

The cut-outs are pasted on the (lightly blurred) background photo, the union mask is box
blurred (radius 5, as the paper's code), its upper half stretched to the full range and
inverted so that the background and a thin band inside each object's edge are repainted;
SDXL inpainting repaints it (strength 0.9, guidance 6, 60 steps) to the end, and the SDXL
refiner re-encodes that image and redoes the last quarter of the denoising, as the paper's
code calls it. Then, unlike the paper's code, the cut-outs are pasted again on the repainted
image, so a concept cannot drift (the paper shows a cup turning into a lamp). A background
with a phrase but no photo is first generated with SDXL text-to-image.

Every item gets its own CPU `torch.Generator` seeded from its seed, so its noise is the same
whatever batch it falls in and on any device (batched float kernels may still round a few
pixels differently, by one level); batch size, device, precision, `torch.compile` and CPU
offload are runtime settings, not recipe values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageFilter

from base.keys import item_seed
from stages.backends.compose import paste
from stages.backends.pretrained import load_pipeline
from stages.runtime.torch_device import torch_device, torch_dtype
from stages.templating import Templates

VERSION = "2"
LIBRARIES = ("transformers", "safetensors")  # reached through diffusers: text encoders, weights
PAPER_NEGATIVE_PROMPT = (  # the paper's list in its order, as far as CLIP's 77 tokens reach
    "semi-realistic, cgi, 3d, render, sketch, cartoon, drawing, anime, text, close up, cropped, out of frame, "
    "worst quality, low quality, jpeg artifacts, ugly, duplicate, morbid, mutilated, extra fingers, mutated hands, "
    "poorly drawn hands, poorly drawn face, mutation, deformed, blurry, dehydrated")


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
    refiner_start: float = 0.75  # the refiner redoes the denoising from this point on
    background_blur: float = 1.0  # Gaussian radius on the (canvas-sized) background photo before pasting
    mask_blur_radius: int = 5  # box-blur radius on the union mask: 5 = 11x11 (the paper's code), 2 = 5x5 (its text)
    paste_back: bool = True  # paste the cut-outs again on the repainted image
    keep_unpasted: bool = False  # also keep the repainted image before paste-back
    FILES: ClassVar[dict[str, str]] = {"prompt_template": "templates"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.strength <= 1 or not 0 < self.refiner_start < 1:
            raise ValueError("strength in (0, 1] and refiner_start in (0, 1)")
        if self.steps < 1 or self.mask_blur_radius < 0 or self.background_blur < 0:
            raise ValueError("steps >= 1, mask_blur_radius >= 0, background_blur >= 0")
        if self.refiner and self.strength <= 1 - self.refiner_start:
            raise ValueError(
                f"strength {self.strength:g} must exceed 1 - refiner_start ({1 - self.refiner_start:g}): the refiner "
                f"redoes the denoising from refiner_start {self.refiner_start:g}, which must lie after the point where "
                f"inpainting starts; raise strength or refiner_start, or set refiner: ''")


def weights(params: dict[str, Any]) -> list[str]:
    """What this composer loads (local diffusers folders or hub ids): their fingerprints join its keys."""
    return [params["model"], *([params["refiner"]] if params["refiner"] else []), params["background_model"]]


def repaint_mask(union: Image.Image, radius: int) -> Image.Image:
    """The paper's inpainting mask: the union mask box-blurred, its upper half [127.5, 255]
    stretched to [0, 255] (so a band inside each object's edge is repainted and no seam is
    left), inverted (white = repaint)."""
    blurred = np.asarray(union.filter(ImageFilter.BoxBlur(radius)) if radius else union, dtype=np.int16)
    return Image.fromarray((255 - np.clip(2 * blurred - 255, 0, 255)).astype(np.uint8))


class Backend:
    def __init__(self, params: Params, templates_dir: str = "templates", device: str = "auto",
                 precision: str = "auto", torch_compile: bool = False, cpu_offload: bool = False,
                 template_digests: dict[str, str] | None = None):
        self.params = params
        self.paste = paste.Backend(paste.Params(**{f.name: getattr(params, f.name)
                                                   for f in dataclasses.fields(paste.Params)}))
        self.templates = Templates(templates_dir, template_digests)
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
                pipeline = load_pipeline(StableDiffusionXLInpaintPipeline, p.model, "backends.compose.model", self.dtype)
            elif role == "refiner":
                base = self.pipeline("inpaint")
                pipeline = load_pipeline(StableDiffusionXLInpaintPipeline, p.refiner, "backends.compose.refiner", self.dtype,
                                 text_encoder_2=base.text_encoder_2, vae=base.vae)
            else:
                pipeline = load_pipeline(StableDiffusionXLPipeline, p.background_model, "backends.compose.background_model",
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
        pasted = [self.paste.compose(job["boxes"], job["cutouts"], background.filter(blur) if blur else background,
                                     occlusion=paste.occlusion_of(job))
                  for job, background in zip(jobs, backgrounds)]
        masks = [repaint_mask(result["mask"], p.mask_blur_radius) for result in pasted]
        common = {"prompt": prompts, "negative_prompt": [p.negative_prompt] * len(jobs), "mask_image": masks,
                  "num_inference_steps": p.steps, "guidance_scale": p.guidance_scale, "strength": p.strength,
                  "height": height, "width": width}
        images = self.pipeline("inpaint")(**common, image=[r["image"] for r in pasted],
                                          generator=self._generators(seeds, "inpaint")).images
        if p.refiner:
            images = self.pipeline("refiner")(**common, image=images, denoising_start=p.refiner_start,
                                              generator=self._generators(seeds, "refiner")).images
        outputs = []
        for job, result, repainted in zip(jobs, pasted, images):
            repainted = repainted.convert("RGB")
            final = (self.paste.compose(job["boxes"], job["cutouts"], repainted, job.get("supports"),
                                        paste.light_of(job), paste.occlusion_of(job))["image"]
                     if p.paste_back else repainted)
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
