"""Seeded images from a trained model (one of its checkpoints) or from its untrained base.

Every image gets its own CPU `torch.Generator` seeded from its item seed, for the initial
latents and for the sampler's own noise (DDIM with eta > 0, DDPM), so an image is the same
whatever batch it falls in and on any device; batched float kernels may still round a few
pixels differently. Batch size, device and precision are runtime settings, never options.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from stages.runtime.torch_device import torch_device, torch_dtype

# Reached through diffusers when loading and running a pipeline: text encoder, weights, LoRA.
LIBRARIES = ("diffusers", "transformers", "safetensors", "peft", "torch")
SCHEDULERS = {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler", "pndm": "PNDMScheduler",
              "euler": "EulerDiscreteScheduler", "dpmsolver": "DPMSolverMultistepScheduler"}


def source_label(source: dict[str, Any]) -> str:
    """What a source is, for messages: a model folder and checkpoint, or a base model."""
    if "model_dir" in source:
        checkpoint = source.get("checkpoint")
        return f"{source['model_dir']}" + (f" (checkpoint {checkpoint})" if checkpoint is not None else "")
    return f"base model {source['base']}"


class Sampler:
    """Generates with the evaluation's sampler options; keeps one pipeline loaded at a time
    (items arrive grouped by model and checkpoint, and a GPU holds one SD pipeline easily)."""

    def __init__(self, options: dict[str, Any], device: str = "auto", precision: str = "auto"):
        self.options = options
        self.device = torch_device(device)
        self.dtype = torch_dtype(precision, self.device)
        self._loaded: tuple[str, Any] | None = None

    def pipeline(self, source: dict[str, Any]) -> Any:
        """The pipeline of a trained model's checkpoint (`model_dir`, `checkpoint`: None for
        the final weights) or of a base model (`base`), with the chosen scheduler."""
        import diffusers

        from stages.backends.train import trained

        label = repr(sorted(source.items()))
        if self._loaded is None or self._loaded[0] != label:
            self._loaded = None  # free the previous pipeline before loading the next
            if "model_dir" in source:
                pipeline = trained.load_pipeline(source["model_dir"], self.device, self.dtype, source.get("checkpoint"))
            else:
                pipeline = trained.base_pipeline(source["base"], self.device, self.dtype, source["option"])
            scheduler_class = getattr(diffusers, SCHEDULERS[self.options["sampler"]])
            pipeline.scheduler = scheduler_class.from_config(pipeline.scheduler.config)
            pipeline.set_progress_bar_config(disable=True)
            self._loaded = (label, pipeline.to(self.device))
        return self._loaded[1]

    def generate(self, source: dict[str, Any], prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        """One RGB image per (prompt, seed)."""
        import torch

        o = self.options
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        result = self.pipeline(source)(
            prompt=prompts, negative_prompt=[o["negative_prompt"]] * len(prompts) if o["negative_prompt"] else None,
            num_inference_steps=o["steps"], guidance_scale=o["guidance_scale"], eta=o["eta"],
            height=o["resolution"], width=o["resolution"], generator=generators)
        return [image.convert("RGB") for image in result.images]


_SAMPLERS: dict[str, Sampler] = {}


def sampler_for(options: dict[str, Any], device: str, precision: str) -> Sampler:
    """One Sampler per worker process and settings (its pipeline stays loaded between batches)."""
    memo = repr((sorted(options.items()), device, precision))
    if memo not in _SAMPLERS:
        _SAMPLERS.clear()
        _SAMPLERS[memo] = Sampler(options, device, precision)
    return _SAMPLERS[memo]
