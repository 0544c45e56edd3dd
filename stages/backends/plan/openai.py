"""Layouts from any OpenAI-compatible chat-completions endpoint: OpenAI itself, vLLM,
llama.cpp's server, Ollama, LM Studio, ...

The official `openai` client retries 429 / 5xx / timeouts / dropped connections with
exponential backoff (`max_retries`); requests run `concurrency` at a time. JSON mode is used
when the server accepts it (`json_mode: auto` falls back after the first refusal).

The recipe names the endpoint; the builder's runtime settings must approve it
(`llm_endpoints`) and name the variable holding the key (`llm_api_key_env`), so a recipe can
neither pick a secret nor send one elsewhere. Responses are read at most `MAX_RESPONSE_BYTES`,
redirects are not followed, and the key is masked in anything a server sends back.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from stages.backends import BackendUnavailable
from stages.backends.plan.llm import MAX_REPLY_CHARS, LlmParams, LlmPlanner, RequestFailed
from stages.backends.plan.reply import ReplyRejected
from stages.runtime.settings import load_settings
from stages.runtime.untrusted import endpoint_allowed, redact_url, url_problem

VERSION = "1"
JSON_MODES = ("auto", "on", "off")
MAX_RESPONSE_BYTES = 8 * MAX_REPLY_CHARS + 64 * 1024  # the reply JSON-escaped, plus the envelope
MASKED_KEY_LENGTH = 8  # keys this long or longer are masked in server text ("local" is no secret)


@dataclass
class Params(LlmParams):
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    timeout: float = 60.0  # seconds per request
    max_retries: int = 4  # on 429, 5xx, timeouts and connection errors, with backoff
    concurrency: int = 4  # requests in flight per worker
    json_mode: str = "auto"
    URLS: ClassVar[tuple[str, ...]] = ("base_url",)  # options the runtime settings must approve

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.json_mode not in JSON_MODES:
            raise ValueError(f"json_mode '{self.json_mode}': valid {', '.join(JSON_MODES)}")
        if self.timeout <= 0 or self.max_retries < 0 or self.concurrency < 1:
            raise ValueError("timeout > 0, max_retries >= 0, concurrency >= 1")


class ResponseTooLarge(Exception):
    """The server sent more than MAX_RESPONSE_BYTES; reading stopped there."""


def _bounded_transport() -> Any:
    """An HTTP transport whose response bodies stop with ResponseTooLarge past MAX_RESPONSE_BYTES."""
    import httpx2

    class Capped(httpx2.SyncByteStream):
        def __init__(self, stream: Any):
            self.stream = stream

        def __iter__(self):
            received = 0
            for chunk in self.stream:
                received += len(chunk)
                if received > MAX_RESPONSE_BYTES:
                    raise ResponseTooLarge(f"the response exceeds {MAX_RESPONSE_BYTES} bytes")
                yield chunk

        def close(self) -> None:
            self.stream.close()

    class Transport(httpx2.HTTPTransport):
        def handle_request(self, request: Any) -> Any:
            response = super().handle_request(request)
            response.stream = Capped(response.stream)
            return response

    return Transport()


class Backend(LlmPlanner):
    def __init__(self, params: Params, templates_dir: str, cache_dir: str, root: str = "."):
        super().__init__(params, templates_dir, cache_dir, root)
        self.endpoint = redact_url(params.base_url)  # what messages and the reply cache's keys name
        self.identity = {"backend": "openai", "endpoint": self.endpoint, "model": params.model,
                         "temperature": params.temperature, "max_tokens": params.max_tokens,
                         "json_mode": params.json_mode != "off"}
        self.root = Path(root)
        self._client = None
        self._key = ""
        self._json_mode = params.json_mode != "off"

    def _connect(self) -> Any:
        """The client, made on the first request that is not cached (a full cache needs no key)."""
        if self._client is None:
            import openai

            settings = load_settings(self.root / "params.yaml")
            problem = url_problem(self.params.base_url)
            if problem or not endpoint_allowed(self.params.base_url, settings.llm_endpoints):
                raise BackendUnavailable(
                    f"LLM endpoint {self.endpoint} is not approved ({problem or 'not in runtime.llm_endpoints'}); "
                    f"the builder approves endpoints in params.yaml (runtime.llm_endpoints) or G4G_LLM_ENDPOINTS")
            variable = settings.llm_api_key_env
            self._key = os.environ.get(variable, "")
            if not self._key:
                raise BackendUnavailable(
                    f"the environment variable {variable} (runtime.llm_api_key_env) is not set: export your API key "
                    f"there (a local server accepts any value, e.g. `export {variable}=local`)")
            http_client = openai.DefaultHttpxClient(transport=_bounded_transport(), follow_redirects=False)
            self._client = openai.OpenAI(base_url=self.params.base_url, api_key=self._key, timeout=self.params.timeout,
                                         max_retries=self.params.max_retries, http_client=http_client)
        return self._client

    def _masked(self, text: str) -> str:
        """Server text with the API key masked, should the server echo it."""
        return text.replace(self._key, "<api key>") if len(self._key) >= MASKED_KEY_LENGTH else text

    def complete(self, prompts: list[tuple[str, int]]) -> list[str | RequestFailed | ReplyRejected]:
        client = self._connect()
        with ThreadPoolExecutor(max_workers=self.params.concurrency) as pool:
            return list(pool.map(lambda prompt: self._one(client, *prompt), prompts))

    def _one(self, client: Any, text: str, seed: int) -> str | RequestFailed | ReplyRejected:
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
            return RequestFailed(f"{type(error).__name__} from {self.endpoint}: {self._masked(str(error))}")
        except ResponseTooLarge as error:
            return ReplyRejected("reply_too_large", f"{self.endpoint}: {error}")
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, KeyError, TypeError):  # a malformed envelope reads as an empty reply
            content = None
        return self._masked(content) if isinstance(content, str) else ""
