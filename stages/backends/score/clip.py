"""Model-based filter: are all concepts detected, do they still look like themselves, does
the image match its background text? Plus the geometric checks.

Per concept: detected by OWL-ViT (queried with its class noun), identity = mean CLIP
similarity of its assigned crop to the concept's reference photos (and to the cut-out pasted
in this image); per image: CP-CLIP, CP-CLIP-assigned, identity mixing and TI-CLIP.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.backends.score import geometric
from stages.metrics.clip_weights import ACTIVATIONS
from stages.metrics.evaluate import ConceptReference, ImageToScore, describe_models, evaluate
from stages.metrics.models import OpenClipEmbedder, OwlVitDetector
from stages.metrics.models import metric_weights as weights  # noqa: F401  (fingerprinted into the keys)
from stages.runtime.images import load_image
from stages.runtime.torch_device import torch_device

VERSION = "1"


@dataclass
class Params(geometric.Params):
    detector: str = "google/owlvit-base-patch32"  # hub id or local directory
    embedder: str = "ViT-B-32"  # open_clip model name
    embedder_weights: str = "openai"  # open_clip pretrained tag, hub id or local checkpoint file
    embedder_config: str = ""  # JSON config of a custom open_clip architecture, if any
    embedder_activation: str = "auto"  # auto (from the weights; refuses to guess), quickgelu (OpenAI) or gelu
    detection_threshold: float = 0.1
    min_identity: float = 0.5  # assigned crop vs the concept's reference photos (cosine)
    min_text: float = 0.0  # TI-CLIP floor; 0 keeps it an indicator only

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.detection_threshold <= 1:
            raise ValueError(f"detection_threshold {self.detection_threshold}: valid 0-1")
        if not -1 <= self.min_identity <= 1 or not -1 <= self.min_text <= 1:
            raise ValueError("min_identity and min_text are cosines in [-1, 1]")
        if self.embedder_activation not in ACTIVATIONS:
            raise ValueError(f"embedder_activation '{self.embedder_activation}': valid {', '.join(ACTIVATIONS)}")


class Backend:
    def __init__(self, params: Params, device: str = "cpu"):
        self.params = params
        device = torch_device(device)
        geometric_fields = {f.name for f in dataclasses.fields(geometric.Params)}
        self.geometric = geometric.Backend(geometric.Params(
            **{k: v for k, v in dataclasses.asdict(params).items() if k in geometric_fields}))
        self.detector = OwlVitDetector(params.detector, device, params.detection_threshold)
        self.embedder = OpenClipEmbedder(params.embedder, params.embedder_weights, device,
                                         params.embedder_config or None, params.embedder_activation)
        self.models = describe_models(self.detector, self.embedder)
        self._embeddings: dict[tuple[str, ...], np.ndarray] = {}

    def _embed_files(self, paths: list[str]) -> np.ndarray:
        """Embeddings of reference photos or cut-outs, computed once per worker (transparency is
        flattened by the embedder, the same way for both)."""
        key = tuple(paths)
        if key not in self._embeddings:
            self._embeddings[key] = self.embedder.embed_images([load_image(Path(p), p) for p in paths])
        return self._embeddings[key]

    def score_batch(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        batch = [
            ImageToScore(
                image=load_image(Path(sample["image"]), sample["image"]),
                concepts=[ConceptReference(c["concept"], c["class_noun"], self._embed_files(c["references"]),
                                           self._embed_files([c["cutout"]])[0])
                          for c in sample["concepts"]],
                text=sample["background"],
            )
            for sample in samples
        ]
        return [self._decide(sample, metrics) for sample, metrics in zip(samples, evaluate(batch, self.detector, self.embedder))]

    def _decide(self, sample: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
        result = self.geometric.score(sample)
        p = self.params
        for cid, found in metrics.pop("concepts").items():
            result["concepts"][cid].update(found)
            if not found["detected"]:
                result["reasons"].append({"check": "detected", "concept": cid, "message": (
                    f"{cid}: not detected as '{_noun(sample, cid)}' (detection_threshold {p.detection_threshold})")})
            elif found["identity"] < p.min_identity:
                result["reasons"].append({"check": "identity", "concept": cid, "message": (
                    f"{cid}: identity {found['identity']:.2f} below min_identity {p.min_identity:.2f}")})
        if metrics["ti_clip"] < p.min_text:
            result["reasons"].append({"check": "text", "concept": None, "message": (
                f"TI-CLIP {metrics['ti_clip']:.2f} below min_text {p.min_text:.2f}")})
        result["keep"] = not result["reasons"]
        result["metrics"] = metrics
        result["models"] = self.models
        return result


def _noun(sample: dict[str, Any], concept_id: str) -> str:
    return next(c["class_noun"] for c in sample["concepts"] if c["concept"] == concept_id)
