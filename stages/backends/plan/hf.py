"""Layouts from a local transformers causal LM (hub id or directory), batched.

With `temperature: 0` prompts are decoded greedily in batches of the runtime batch size.
With sampling, each prompt is generated on its own with its own seed, so a reply never
depends on which batch its item fell in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stages.backends.plan.llm import LlmParams, LlmPlanner
from stages.metrics.models import ModelMissing, require_local_when_offline
from stages.runtime.replies import RequestFailed
from stages.runtime.torch_device import torch_device

VERSION = "1"
IGNORES = ("filter", "fill")  # request fields it does not read: an LLM places by its own judgement
LIBRARIES = ("tokenizers", "safetensors")  # reached through transformers


@dataclass
class Params(LlmParams):
    model: str = "Qwen/Qwen2.5-1.5B-Instruct"  # hub id or local directory


def weights(params: dict[str, Any]) -> list[str]:
    """The language model this planner loads (a local folder or a hub id): its fingerprint joins its keys."""
    return [params["model"]]


class Backend(LlmPlanner):
    def __init__(self, params: Params, templates_dir: str, cache_dir: str, root: str = ".", device: str = "cpu"):
        super().__init__(params, templates_dir, cache_dir, root)
        self.identity = {"backend": "hf", "model": params.model, "temperature": params.temperature,
                         "max_tokens": params.max_tokens}
        self.device = torch_device(device)
        self._loaded: tuple[Any, Any] | None = None

    def _load(self) -> tuple[Any, Any]:
        """Tokenizer and model, loaded on the first request that is not cached."""
        if self._loaded is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            source = self.params.model
            require_local_when_offline(source, "backends.plan.model")
            try:
                tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left")
                model = AutoModelForCausalLM.from_pretrained(source).to(self.device).eval()
            except OSError as error:
                raise ModelMissing(f"language model '{source}' could not be loaded ({error}); give a local "
                                   f"directory in backends.plan.model") from None
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._loaded = tokenizer, model
        return self._loaded

    def _text(self, tokenizer: Any, prompt: str) -> str:
        if tokenizer.chat_template:
            return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
        return prompt

    def complete(self, prompts: list[tuple[str, int]]) -> list[str | RequestFailed]:
        import torch

        tokenizer, model = self._load()
        texts = [self._text(tokenizer, text) for text, _ in prompts]
        sampling = self.params.temperature > 0
        groups = [[i] for i in range(len(texts))] if sampling else [list(range(len(texts)))]
        replies: list[str | RequestFailed] = [""] * len(texts)
        for group in groups:
            if sampling:
                torch.manual_seed(prompts[group[0]][1])
            inputs = tokenizer([texts[i] for i in group], return_tensors="pt", padding=True).to(self.device)
            options = {"do_sample": True, "temperature": self.params.temperature} if sampling else {"do_sample": False}
            with torch.inference_mode():
                output = model.generate(**inputs, max_new_tokens=self.params.max_tokens,
                                        pad_token_id=tokenizer.pad_token_id, **options)
            new_tokens = output[:, inputs["input_ids"].shape[1]:]
            for i, decoded in zip(group, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                replies[i] = decoded
        return replies
