"""Gen4Gen's evaluation protocol: seeded images from each trained model, measured with OWL-ViT
and CLIP (CP-CLIP, CP-CLIP-assigned, identity mixing, TI-CLIP; see `stages.metrics`).

Generation options (sampler, steps, guidance, eta, resolution, negative prompt) and
measurement options (detector, embedder, threshold) key different cached items, so changing a
metric option re-measures the images already generated instead of painting them again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.metrics.clip_weights import ACTIVATIONS
from stages.metrics.evaluate import ConceptReference, ImageToScore, describe_models, evaluate
from stages.metrics.models import OpenClipEmbedder, OwlVitDetector
from stages.metrics.models import metric_weights as weights  # noqa: F401  (fingerprinted into the keys)
from stages.runtime.images import load_image
from stages.runtime.torch_device import torch_device

VERSION = "1"
SAMPLERS = ("ddim", "ddpm", "pndm", "euler", "dpmsolver")
CHECKPOINTS = ("final", "all")
GENERATION = ("sampler", "steps", "guidance_scale", "eta", "resolution", "negative_prompt")
MEASUREMENT = ("detector", "embedder", "embedder_weights", "embedder_config", "embedder_activation",
               "detection_threshold")


@dataclass
class Params:
    samples_per_prompt: int = 6  # the paper: one prompt per composition x 6 samples
    checkpoints: str = "final"  # final, or all: every checkpoint the training saved, each reported
    baseline: bool = False  # also the untrained base model on the same prompts and seeds
    baseline_model: str = ""  # the base model for the baseline; "" = each trained model's own base
    # Custom Diffusion's published inference settings: DDIM, 200 steps, eta 1, guidance 6, 512x512
    # (adobe-research/custom-diffusion: sample.py defaults --ddim_steps 200 --ddim_eta 1.0 --scale 6
    # --n_samples 6 --H 512 --W 512; src/diffusers_sample.py calls the pipeline with
    # num_inference_steps=200, guidance_scale=6., eta=1.).
    sampler: str = "ddim"
    steps: int = 200
    guidance_scale: float = 6.0
    eta: float = 1.0  # DDIM's noise (1: as stochastic as DDPM); the other samplers ignore it
    resolution: int = 512
    negative_prompt: str = ""
    # The paper's metric models: OWL-ViT and CLIP, both ViT-B/32 (as `score: clip`).
    detector: str = "google/owlvit-base-patch32"  # hub id or local directory
    embedder: str = "ViT-B-32"  # open_clip model name
    embedder_weights: str = "openai"  # open_clip pretrained tag, hub id or local checkpoint file
    embedder_config: str = ""  # JSON config of a custom open_clip architecture, if any
    embedder_activation: str = "auto"  # auto (from the weights), quickgelu (OpenAI) or gelu
    detection_threshold: float = 0.1

    def __post_init__(self) -> None:
        if self.samples_per_prompt < 1 or self.steps < 1:
            raise ValueError("samples_per_prompt and steps must be >= 1")
        if self.checkpoints not in CHECKPOINTS:
            raise ValueError(f"checkpoints '{self.checkpoints}': valid {', '.join(CHECKPOINTS)}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler '{self.sampler}': valid {', '.join(SAMPLERS)}")
        if self.resolution < 64 or self.resolution % 8:
            raise ValueError(f"resolution {self.resolution}: a multiple of 8, at least 64")
        if not 0 <= self.eta <= 1 or not 0 <= self.detection_threshold <= 1:
            raise ValueError("eta and detection_threshold: valid 0-1")
        if self.embedder_activation not in ACTIVATIONS:
            raise ValueError(f"embedder_activation '{self.embedder_activation}': valid {', '.join(ACTIVATIONS)}")


class Backend:
    """The measuring half: detector and embedder, loaded once per worker."""

    def __init__(self, params: Params, device: str = "cpu"):
        device = torch_device(device)
        self.detector = OwlVitDetector(params.detector, device, params.detection_threshold,
                                       option="backends.evaluate.detector")
        self.embedder = OpenClipEmbedder(params.embedder, params.embedder_weights, device,
                                         params.embedder_config or None, params.embedder_activation,
                                         option="backends.evaluate.embedder_weights")
        self.models = describe_models(self.detector, self.embedder)
        self._references: dict[tuple[str, ...], np.ndarray] = {}

    def _embed_files(self, paths: list[str]) -> np.ndarray:
        """A concept's reference photos, embedded once per worker."""
        key = tuple(paths)
        if key not in self._references:
            self._references[key] = self.embedder.embed_images([load_image(Path(p), p) for p in paths])
        return self._references[key]

    def measure_batch(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each sample: `image` (path), `concepts` ({id, class_noun, references: paths}) and
        `text` (the prompt's background, for TI-CLIP). Per sample the metrics of
        `stages.metrics.evaluate` (with per-concept detections)."""
        batch = [ImageToScore(image=load_image(Path(s["image"]), s["image"]),
                              concepts=[ConceptReference(c["id"], c["class_noun"], self._embed_files(c["references"]))
                                        for c in s["concepts"]],
                              text=s["text"])
                 for s in samples]
        return evaluate(batch, self.detector, self.embedder)
