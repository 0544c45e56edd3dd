"""The detector (OWL-ViT, transformers) and embedder (open_clip) behind the metrics.

Both load from a hub id or a local directory / checkpoint and respect HF_HUB_OFFLINE; when
weights cannot be found the error says what to download and where to point the recipe. Every
image reaches them RGB, transparency flattened on grey (`pixels.flatten_alpha`). `describe()`
says exactly which network ran, for the score record and a later evaluate stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from base.errors import BackendUnavailable
from stages.metrics import clip_weights
from stages.metrics.formulas import Detection
from stages.metrics.pixels import flatten_alpha


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


def require_local_when_offline(source: str, option: str) -> None:
    """With HF_HUB_OFFLINE set, weights that are not a local folder cannot load: ModelMissing,
    naming the recipe key, the download command and the value to set."""
    if hub_offline() and not Path(source).is_dir():
        raise ModelMissing(f"{option}: {_hub_hint(source, option)}")


def metric_weights(params: dict[str, Any]) -> list[str]:
    """The detector's and embedder's weights (files, folders or hub ids) a backend's options
    name: their fingerprints join the keys of what they measure."""
    return [params["detector"], params["embedder_weights"], *([params["embedder_config"]] if params["embedder_config"] else [])]


class ModelMismatch(BackendUnavailable):
    """A checkpoint is of another model type than the class that would load it."""


def detector_model_type(source: str) -> str | None:
    """`model_type` in the detector's config.json (None when it has none)."""
    from transformers import PretrainedConfig

    config, _ = PretrainedConfig.get_config_dict(source)
    return config.get("model_type")


class OwlVitDetector:
    """Open-vocabulary boxes for class nouns; every box above `threshold` is returned."""

    MODEL_TYPE = "owlvit"

    def __init__(self, source: str, device: str = "cpu", threshold: float = 0.1,
                 option: str = "backends.score.detector"):
        from transformers import OwlViTForObjectDetection, OwlViTProcessor

        require_local_when_offline(source, option)
        try:
            model_type = detector_model_type(source)
            if model_type != self.MODEL_TYPE:
                raise ModelMismatch(
                    f"{option}: {source} holds a '{model_type}' checkpoint; the detector loads OWL-ViT, "
                    f"model_type '{self.MODEL_TYPE}' (e.g. google/owlvit-base-patch32)")
            self.processor = OwlViTProcessor.from_pretrained(source)
            self.model = OwlViTForObjectDetection.from_pretrained(source).to(device).eval()
        except OSError:
            raise ModelMissing(f"OWL-ViT detector: {_hub_hint(source, option)}") from None
        self.device, self.threshold, self.source = device, threshold, source

    def describe(self) -> dict[str, Any]:
        return {"model_type": self.MODEL_TYPE, "weights": self.source, "threshold": self.threshold}

    def detect(self, images: Sequence[Image.Image], queries: Sequence[str]) -> list[list[Detection]]:
        """All boxes above the threshold for the same `queries` in each image, in pixels of
        each original image (the processor resizes without padding, so boxes scale by w, h)."""
        import torch

        inputs = self.processor(text=[list(queries)] * len(images), images=[flatten_alpha(im) for im in images],
                                return_tensors="pt")
        with torch.inference_mode():
            outputs = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
        sizes = torch.tensor([(im.height, im.width) for im in images])
        results = self.processor.image_processor.post_process_object_detection(
            outputs, threshold=self.threshold, target_sizes=sizes)
        return [
            [Detection(queries[int(label)], tuple(float(v) for v in box), float(score))
             for box, score, label in zip(result["boxes"].cpu(), result["scores"].cpu(), result["labels"].cpu())]
            for result in results
        ]


def activation_of(model: Any) -> str:
    """The activation the built network actually runs, read from its modules."""
    from open_clip.transformer import QuickGELU
    from torch import nn

    kinds = sorted({"quickgelu" if isinstance(m, QuickGELU) else "gelu"
                    for m in model.modules() if isinstance(m, (QuickGELU, nn.GELU))})
    return "+".join(kinds) or "other"


class OpenClipEmbedder:
    """L2-normalised image and text embeddings from an open_clip model, built with the
    activation its weights were trained with (see `clip_weights`)."""

    def __init__(self, model: str, weights: str | None, device: str = "cpu", config: str | None = None,
                 activation: str = "auto", option: str = "backends.score.embedder_weights"):
        import open_clip

        if config:
            if not Path(config).is_file():
                raise ModelMissing(f"open_clip model config {config} not found")
            open_clip.add_model_config(config)
        if model not in open_clip.list_models():
            raise ModelMissing(f"open_clip has no model '{model}' (see open_clip.list_models(), or give a "
                               f"JSON config in backends.score.embedder_config)")
        weights = weights or None
        is_file = bool(weights) and Path(weights).is_file()
        tag = None if is_file or not weights else clip_weights.tag_for(model, weights)
        checkpoint = weights if is_file else clip_weights.cached_checkpoint(model, tag) if tag else None
        if weights and hub_offline() and not checkpoint:
            raise ModelMissing(f"open_clip {model} weights '{weights}': {_weights_hint(model, weights, option)}")
        sha256 = clip_weights.file_sha256(checkpoint) if checkpoint else None
        quick, identified_by = clip_weights.choose_quick_gelu(model, weights, sha256, activation)
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                model, pretrained=tag or weights, device=device, force_quick_gelu=quick,
                **({} if quick else {"quick_gelu": False}))
            if tag and not sha256:
                sha256 = clip_weights.file_sha256(open_clip.download_pretrained(
                    open_clip.get_pretrained_cfg(model, tag)))
        except (RuntimeError, OSError) as error:
            raise ModelMissing(f"open_clip {model} weights '{weights}': "
                               f"{_weights_hint(model, str(weights), option)} ({error})") from None
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.device = device
        self.description = {"architecture": model, "activation": activation_of(self.model),
                            "weights": weights, "weights_sha256": sha256,
                            "weights_identified_by": identified_by}

    def describe(self) -> dict[str, Any]:
        """Architecture, activation (read from the built modules), weights and their sha256."""
        return dict(self.description)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        if not images:
            return np.zeros((0, self.model.visual.output_dim), dtype=np.float32)
        batch = torch.stack([self.preprocess(flatten_alpha(im)) for im in images]).to(self.device)
        with torch.inference_mode():
            features = self.model.encode_image(batch, normalize=True)
        return features.float().cpu().numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = self.model.encode_text(self.tokenizer(list(texts)).to(self.device), normalize=True)
        return features.float().cpu().numpy()


def _weights_hint(model: str, weights: str, option: str) -> str:
    """What to download for an open_clip tag or hub id, and the recipe lines that load it offline."""
    import open_clip

    tag = clip_weights.tag_for(model, weights)
    pretrained = open_clip.get_pretrained_cfg(model, tag) if tag else {}
    hub_id = pretrained.get("hf_hub", "").strip("/") or weights
    local = f"models/{hub_id.split('/')[-1]}"
    activation = f" and embedder_activation: {'quickgelu' if pretrained.get('quick_gelu') else 'gelu'}" if tag else ""
    offline = " (HF_HUB_OFFLINE is set)" if hub_offline() else ""
    return (f"not a local file nor reachable on the Hugging Face hub{offline}. On a machine with internet run "
            f"`huggingface-cli download {hub_id} open_clip_pytorch_model.bin --local-dir {local}`, copy {local} "
            f"here and set {option}: {local}/open_clip_pytorch_model.bin{activation}")
