"""Layouts from any OpenAI-compatible chat-completions endpoint: OpenAI itself, vLLM,
llama.cpp's server, Ollama, LM Studio, ...

The official `openai` client retries 429 / 5xx / timeouts / dropped connections with
exponential backoff (`max_retries`); requests run `concurrency` at a time. JSON mode is used
when the server accepts it (`json_mode: auto` falls back after the first refusal).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from stages.backends import BackendUnavailable
from stages.backends.plan.llm import LlmParams, LlmPlanner, RequestFailed

VERSION = "1"
JSON_MODES = ("auto", "on", "off")


@dataclass
class Params(LlmParams):
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key (never the key)
    timeout: float = 60.0  # seconds per request
    max_retries: int = 4  # on 429, 5xx, timeouts and connection errors, with backoff
    concurrency: int = 4  # requests in flight per worker
    json_mode: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.json_mode not in JSON_MODES:
            raise ValueError(f"json_mode '{self.json_mode}': valid {', '.join(JSON_MODES)}")
        if self.timeout <= 0 or self.max_retries < 0 or self.concurrency < 1:
            raise ValueError("timeout > 0, max_retries >= 0, concurrency >= 1")


class Backend(LlmPlanner):
    def __init__(self, params: Params, templates_dir: str, cache_dir: str, root: str = "."):
        super().__init__(params, templates_dir, cache_dir, root)
        self.identity = {"model": params.model, "temperature": params.temperature,
                         "max_tokens": params.max_tokens, "json_mode": params.json_mode != "off"}
        self._client = None
        self._json_mode = params.json_mode != "off"

    def _connect(self) -> Any:
        """The client, made on the first request that is not cached (a full cache needs no key)."""
        if self._client is None:
            from openai import OpenAI

            key = os.environ.get(self.params.api_key_env)
            if not key:
                raise BackendUnavailable(
                    f"the environment variable {self.params.api_key_env} (backends.plan.api_key_env) is not set: "
                    f"export your API key there (a local server accepts any value, e.g. `export "
                    f"{self.params.api_key_env}=local`)")
            self._client = OpenAI(base_url=self.params.base_url, api_key=key, timeout=self.params.timeout,
                                  max_retries=self.params.max_retries)
        return self._client

    def complete(self, prompts: list[tuple[str, int]]) -> list[str | RequestFailed]:
        client = self._connect()
        with ThreadPoolExecutor(max_workers=self.params.concurrency) as pool:
            return list(pool.map(lambda prompt: self._one(client, *prompt), prompts))

    def _one(self, client: Any, text: str, seed: int) -> str | RequestFailed:
        import openai

        request = {"model": self.params.model, "messages": [{"role": "user", "content": text}],
                   "temperature": self.params.temperature, "max_tokens": self.params.max_tokens, "seed": seed}
        try:
            if self._json_mode:
                try:
                    response = client.chat.completions.create(**request, response_format={"type": "json_object"})
                except openai.BadRequestError:
                    if self.params.json_mode != "auto":
                        raise
                    self._json_mode = False  # this server has no JSON mode: ask in plain text from now on
                    response = client.chat.completions.create(**request)
            else:
                response = client.chat.completions.create(**request)
        except openai.APIError as error:
            return RequestFailed(f"{type(error).__name__} from {self.params.base_url}: {error}")
        return response.choices[0].message.content or ""
