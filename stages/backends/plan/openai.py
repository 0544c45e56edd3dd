"""Layouts from any OpenAI-compatible chat-completions endpoint: OpenAI itself, vLLM,
llama.cpp's server, Ollama, LM Studio, ...

Requests go through `stages.runtime.chat` (the builder approves the endpoint and names the
key's variable; retries with backoff, bounded concurrency, bounded responses, the key masked
in server text). JSON mode is used when the server accepts it (`json_mode: auto` falls back
after the first refusal).
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.backends import ENDPOINT_THROUGHPUT
from stages.backends.plan.llm import LlmParams, LlmPlanner
from stages.runtime.chat import ChatEndpoint, EndpointParams
from stages.runtime.replies import ReplyRejected, RequestFailed

VERSION = "1"
IGNORES = ("filter", "fill")  # request fields it does not read: an LLM places by its own judgement
THROUGHPUT = ENDPOINT_THROUGHPUT  # in no key: changing them asks nothing again
JSON_MODES = ("auto", "on", "off")


@dataclass
class Params(LlmParams, EndpointParams):
    json_mode: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_endpoint()
        if self.json_mode not in JSON_MODES:
            raise ValueError(f"json_mode '{self.json_mode}': valid {', '.join(JSON_MODES)}")


class Backend(LlmPlanner):
    def __init__(self, params: Params, templates_dir: str, cache_dir: str, root: str = "."):
        super().__init__(params, templates_dir, cache_dir, root)
        self.chat = ChatEndpoint(params, root)
        self.identity = {"backend": "openai", "endpoint": self.chat.endpoint, "model": params.model,
                         "temperature": params.temperature, "max_tokens": params.max_tokens,
                         "json_mode": params.json_mode != "off"}
        self._json_mode = params.json_mode != "off"

    def complete(self, prompts: list[tuple[str, int]]) -> list[str | RequestFailed | ReplyRejected]:
        return self.chat.each(lambda prompt: self._one(*prompt), prompts)

    def _one(self, text: str, seed: int) -> str | RequestFailed | ReplyRejected:
        request = {"model": self.params.model, "messages": [{"role": "user", "content": text}],
                   "temperature": self.params.temperature, "max_tokens": self.params.max_tokens, "seed": seed}
        if self._json_mode:
            reply = self.chat.send({**request, "response_format": {"type": "json_object"}})
            if not (isinstance(reply, RequestFailed) and reply.bad_request and self.params.json_mode == "auto"):
                return reply
            self._json_mode = False  # this server has no JSON mode: ask in plain text from now on
        return self.chat.send(request)
