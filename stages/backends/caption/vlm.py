"""Recaptioning by a local vision-language model through transformers' image-text-to-text
auto classes: LLaVA-1.5 (`llava-hf/llava-1.5-7b-hf`, the paper's), Qwen2-VL, and any model
whose processor has a chat template.

Greedy decoding (`temperature: 0`) runs a worker's batch at once, left-padded; with sampling
each image is generated on its own from its own seed, so a reply never depends on which batch
its item fell in. fp16 on CUDA, fp32 on CPU (`runtime.precision`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from stages.backends.caption.recaption import Recaptioner, VlmParams
from stages.metrics.models import ModelMissing, require_local_when_offline
from stages.runtime.replies import ReplyRejected, RequestFailed
from stages.runtime.torch_device import torch_device, torch_dtype

VERSION = "1"
READS_IMAGES = True  # the caption stage hands it the composed images
LIBRARIES = ("tokenizers", "safetensors", "pillow")  # reached through transformers
OPTION = "backends.caption.model"


@dataclass
class Params(VlmParams):
    model: str = "llava-hf/llava-1.5-7b-hf"  # hub id or local directory

    def __post_init__(self) -> None:
        self.check()


def weights(params: dict[str, Any]) -> list[str]:
    """The model this captioner loads (a local folder or a hub id): its fingerprint joins its keys."""
    return [params["model"]]


class Backend(Recaptioner):
    def __init__(self, params: Params, templates_dir: str, templates: dict[str, str], cache_dir: str = ".g4g/cache",
                 device: str = "cpu", precision: str = "auto", fingerprint: dict[str, Any] | None = None,
                 template_digests: dict[str, str] | None = None):
        super().__init__(params, templates_dir, templates, cache_dir, template_digests)
        # the weights' fingerprint (as in the item keys): replies of other weights at that path are never reused
        self.identity = {"backend": "vlm", "model": params.model, "weights": fingerprint or {},
                         "temperature": params.temperature, "max_tokens": params.max_tokens}
        self.device = torch_device(device)
        self.dtype = torch_dtype(precision, self.device)
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        """Processor and model, loaded on the first request that is not cached."""
        if self._loaded is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            source = self.params.model
            require_local_when_offline(source, OPTION)
            try:
                processor = AutoProcessor.from_pretrained(source)
                model = AutoModelForImageTextToText.from_pretrained(source, dtype=self.dtype).to(self.device).eval()
            except (OSError, ValueError) as error:
                raise ModelMissing(f"{OPTION}: cannot load '{source}' as an image-text-to-text model ({error}); give "
                                   f"a local directory or hub id of one (e.g. llava-hf/llava-1.5-7b-hf)") from None
            if not getattr(processor, "chat_template", None):
                raise ModelMissing(f"{OPTION}: the processor of '{source}' has no chat template, so the instruction "
                                   f"and image cannot be put in its prompt format; use a chat (instruction-tuned) model")
            processor.tokenizer.padding_side = "left"
            if processor.tokenizer.pad_token is None:
                processor.tokenizer.pad_token = processor.tokenizer.eos_token
            self._loaded = processor, model
        return self._loaded

    def complete(self, prompts: list[tuple[dict[str, str], int]]) -> list[str | RequestFailed | ReplyRejected]:
        import torch
        from PIL import Image

        processor, model = self._load()
        texts = [processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt["instruction"]}]}],
            add_generation_prompt=True) for prompt, _ in prompts]
        images = [Image.open(io.BytesIO(self.images[prompt["image"]])).convert("RGB") for prompt, _ in prompts]
        sampling = self.params.temperature > 0
        groups = [[i] for i in range(len(prompts))] if sampling else [list(range(len(prompts)))]
        options = {"do_sample": True, "temperature": self.params.temperature} if sampling else {"do_sample": False}
        replies: list[str | RequestFailed | ReplyRejected] = [""] * len(prompts)
        for group in groups:
            if sampling:
                torch.manual_seed(prompts[group[0]][1])
            inputs = processor(images=[images[i] for i in group], text=[texts[i] for i in group], padding=True,
                               return_tensors="pt").to(self.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            with torch.inference_mode():
                output = model.generate(**inputs, max_new_tokens=self.params.max_tokens,
                                        pad_token_id=processor.tokenizer.pad_token_id, **options)
            new_tokens = output[:, inputs["input_ids"].shape[1]:]
            for i, decoded in zip(group, processor.batch_decode(new_tokens, skip_special_tokens=True)):
                replies[i] = decoded
        return replies
