"""The detector (OWL-ViT, transformers) and embedder (open_clip) behind the metrics.

Both load from a hub id or a local directory / checkpoint and respect HF_HUB_OFFLINE; when
weights cannot be found the error says what to download and where to point the recipe.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from stages.backends import BackendUnavailable
from stages.metrics.formulas import Detection


class ModelMissing(BackendUnavailable):
    """Weights for a metric model are not available on this machine."""


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (the hub libraries read it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false", "no")


def _hub_hint(source: str, option: str) -> str:
    local = f"models/{source.rstrip('/').split('/')[-1]}"
    return (f"'{source}' is neither a local path nor reachable on the Hugging Face hub"
            f"{' (HF_HUB_OFFLINE is set)' if hub_offline() else ''}. On a machine with internet run "
            f"`huggingface-cli download {source} --local-dir {local}`, copy {local} here and set "
            f"{option}: {local}")


class OwlVitDetector:
    """Open-vocabulary boxes for class nouns; every box above `threshold` is returned."""

    def __init__(self, source: str, device: str = "cpu", threshold: float = 0.1,
                 option: str = "backends.score.detector"):
        from transformers import OwlViTForObjectDetection, OwlViTProcessor

        if hub_offline() and not Path(source).is_dir():
            raise ModelMissing(f"OWL-ViT detector: {_hub_hint(source, option)}")
        try:
            self.processor = OwlViTProcessor.from_pretrained(source)
            self.model = OwlViTForObjectDetection.from_pretrained(source).to(device).eval()
        except OSError:
            raise ModelMissing(f"OWL-ViT detector: {_hub_hint(source, option)}") from None
        self.device, self.threshold = device, threshold

    def detect(self, images: Sequence[Image.Image], queries: Sequence[str]) -> list[list[Detection]]:
        """All boxes above the threshold for the same `queries` in each image, in pixels."""
        import torch

        labels = [list(queries)] * len(images)
        inputs = self.processor(text=labels, images=[im.convert("RGB") for im in images], return_tensors="pt")
        with torch.inference_mode():
            outputs = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
        sizes = torch.tensor([(im.height, im.width) for im in images])
        results = self.processor.post_process_grounded_object_detection(
            outputs, threshold=self.threshold, target_sizes=sizes, text_labels=labels)
        return [
            [Detection(queries[int(label)], tuple(float(v) for v in box), float(score))
             for box, score, label in zip(result["boxes"].cpu(), result["scores"].cpu(), result["labels"].cpu())]
            for result in results
        ]


class OpenClipEmbedder:
    """L2-normalised image and text embeddings from an open_clip model."""

    def __init__(self, model: str, weights: str | None, device: str = "cpu", config: str | None = None,
                 option: str = "backends.score.embedder_weights"):
        import open_clip

        if config:
            if not Path(config).is_file():
                raise ModelMissing(f"open_clip model config {config} not found")
            open_clip.add_model_config(config)
        if model not in open_clip.list_models():
            raise ModelMissing(f"open_clip has no model '{model}' (see open_clip.list_models(), or give a "
                               f"JSON config in backends.score.embedder_config)")
        if weights and hub_offline() and not Path(weights).is_file():
            raise ModelMissing(f"open_clip {model} weights '{weights}': {_hub_hint(weights, option)}; "
                               f"a local checkpoint file works too")
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                model, pretrained=weights or None, device=device)
        except (RuntimeError, OSError) as error:
            raise ModelMissing(f"open_clip {model} weights '{weights}': {_hub_hint(str(weights), option)}; "
                               f"a local checkpoint file works too ({error})") from None
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.device = device

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        if not images:
            return np.zeros((0, self.model.visual.output_dim), dtype=np.float32)
        batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(self.device)
        with torch.inference_mode():
            features = self.model.encode_image(batch, normalize=True)
        return features.float().cpu().numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = self.model.encode_text(self.tokenizer(list(texts)).to(self.device), normalize=True)
        return features.float().cpu().numpy()
