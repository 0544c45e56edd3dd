"""Requests to an OpenAI-compatible chat-completions endpoint, under the builder's trust
settings: what the LLM planner and the VLM captioner share.

The recipe names the endpoint; the builder's runtime settings must approve it
(`llm_endpoints`) and name the variable holding the key (`llm_api_key_env`), so a recipe can
neither pick a secret nor send one elsewhere. The official `openai` client retries 429 / 5xx /
timeouts / dropped connections with exponential backoff (`max_retries`); requests run
`concurrency` at a time. Responses are read at most `MAX_RESPONSE_BYTES`, redirects are not
followed, and the key is masked in anything a server sends back.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

from stages.backends import BackendUnavailable
from stages.runtime.replies import MAX_REPLY_CHARS, ReplyRejected, RequestFailed
from stages.runtime.settings import load_settings
from stages.runtime.untrusted import endpoint_allowed, redact_url, url_problem

MAX_RESPONSE_BYTES = 8 * MAX_REPLY_CHARS + 64 * 1024  # the reply JSON-escaped, plus the envelope
MASKED_KEY_LENGTH = 8  # keys this long or longer are masked in server text ("local" is no secret)
T = TypeVar("T")


@dataclass
class EndpointParams:
    """The recipe options of a backend that asks an endpoint."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    timeout: float = 60.0  # seconds per request
    max_retries: int = 4  # on 429, 5xx, timeouts and connection errors, with backoff
    concurrency: int = 4  # requests in flight per worker
    URLS: ClassVar[tuple[str, ...]] = ("base_url",)  # options the runtime settings must approve

    def check_endpoint(self) -> None:
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


class ChatEndpoint:
    """One approved endpoint; the client is made on the first request (a full reply cache
    needs no key)."""

    def __init__(self, params: EndpointParams, root: str | Path = "."):
        self.params = params
        self.base_url = params.base_url
        self.endpoint = redact_url(params.base_url)  # what messages and the reply cache's keys name
        self.root = Path(root)
        self._client = None
        self._key = ""

    def _connect(self) -> Any:
        if self._client is None:
            import openai

            settings = load_settings(self.root / "params.yaml")
            problem = url_problem(self.base_url)
            if problem or not endpoint_allowed(self.base_url, settings.llm_endpoints):
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
            self._client = openai.OpenAI(base_url=self.base_url, api_key=self._key, timeout=self.params.timeout,
                                         max_retries=self.params.max_retries, http_client=http_client)
        return self._client

    def masked(self, text: str) -> str:
        """Server text with the API key masked, should the server echo it."""
        return text.replace(self._key, "<api key>") if len(self._key) >= MASKED_KEY_LENGTH else text

    def each(self, ask: Callable[[T], Any], requests: list[T]) -> list[Any]:
        """`ask` for every request, `concurrency` in flight; connects first, so a missing key or
        an unapproved endpoint stops the stage before anything is sent."""
        self._connect()
        with ThreadPoolExecutor(max_workers=self.params.concurrency) as pool:
            return list(pool.map(ask, requests))

    def send(self, request: dict[str, Any]) -> str | RequestFailed | ReplyRejected:
        """The reply text of one `chat.completions.create(**request)` (a malformed envelope
        reads as an empty reply), or why there is none."""
        import openai

        try:
            response = self._connect().chat.completions.create(**request)
        except openai.APIError as error:
            return RequestFailed(f"{type(error).__name__} from {self.endpoint}: {self.masked(str(error))}",
                                 bad_request=isinstance(error, openai.BadRequestError))
        except ResponseTooLarge as error:
            return ReplyRejected("reply_too_large", f"{self.endpoint}: {error}")
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, KeyError, TypeError):
            content = None
        return self.masked(content) if isinstance(content, str) else ""
