"""Recaptioning by a vision-language model behind any OpenAI-compatible chat-completions
endpoint (OpenAI, vLLM, llama.cpp's server, Ollama, ...) that takes images.

The image goes with the instruction as a base64 data URL. Requests go through
`stages.runtime.chat`, as the LLM planner's do: the builder's runtime settings approve the
endpoint (`llm_endpoints`) and name the key's variable (`llm_api_key_env`); the client retries
with backoff, `concurrency` requests are in flight, responses are bounded and the key is masked.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from stages.backends import ENDPOINT_THROUGHPUT
from stages.backends.caption.recaption import Recaptioner, VlmParams
from stages.runtime.chat import ChatEndpoint, EndpointParams
from stages.runtime.replies import ReplyRejected, RequestFailed

VERSION = "1"
THROUGHPUT = ENDPOINT_THROUGHPUT  # in no key: changing them asks nothing again
READS_IMAGES = True  # the caption stage hands it the composed images


@dataclass
class Params(VlmParams, EndpointParams):
    def __post_init__(self) -> None:
        self.check()
        self.check_endpoint()


class Backend(Recaptioner):
    def __init__(self, params: Params, templates_dir: str, templates: dict[str, str], cache_dir: str = ".g4g/cache",
                 root: str = ".", template_digests: dict[str, str] | None = None):
        super().__init__(params, templates_dir, templates, cache_dir, template_digests)
        self.chat = ChatEndpoint(params, root)
        self.identity = {"backend": "vlm-openai", "endpoint": self.chat.endpoint, "model": params.model,
                         "temperature": params.temperature, "max_tokens": params.max_tokens}

    def complete(self, prompts: list[tuple[dict[str, str], int]]) -> list[str | RequestFailed | ReplyRejected]:
        return self.chat.each(lambda prompt: self._one(*prompt), prompts)

    def _one(self, prompt: dict[str, str], seed: int) -> str | RequestFailed | ReplyRejected:
        image = base64.b64encode(self.images[prompt["image"]]).decode("ascii")
        content = [{"type": "text", "text": prompt["instruction"]},
                   {"type": "image_url", "image_url": {"url": f"data:{self.mime_types[prompt['image']]};base64,{image}"}}]
        return self.chat.send({"model": self.params.model, "messages": [{"role": "user", "content": content}],
                               "temperature": self.params.temperature, "max_tokens": self.params.max_tokens,
                               "seed": seed})
