"""Requests to an OpenAI-compatible chat-completions endpoint, under the builder's trust
settings: what the LLM planner and the VLM captioner share.

The recipe names the endpoint; the builder's runtime settings must approve it
(`llm_endpoints`) and name the variable holding the key (`llm_api_key_env`), so a recipe can
neither pick a secret nor send one elsewhere. The official `openai` client retries 429 / 5xx /
timeouts / dropped connections with exponential backoff (`max_retries`, at most
`MAX_RETRIES`); requests run `concurrency` at a time. Each request ends within `timeout`
seconds in all, however slowly the server sends; responses are read at most
`MAX_RESPONSE_BYTES` after decoding (gzip, deflate), redirects are not followed, a body that
is not a JSON completion is a failed request. A server's `Retry-After` is obeyed up to
`timeout` seconds (no longer than the request itself may take). The key is masked in
everything a server sends back, as it arrives: header values and the reason phrase in the
transport, the body in `send` (any letter case, Unicode format characters dropped first).
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, TypeVar

from base.errors import BackendUnavailable
from base.settings import load_settings, user_config
from base.untrusted import endpoint_allowed, escape_controls, mask_secret, redact_url, url_problem
from stages.runtime.replies import MAX_REPLY_CHARS, ReplyRejected, RequestFailed

MAX_RESPONSE_BYTES = 8 * MAX_REPLY_CHARS + 64 * 1024  # the reply JSON-escaped, plus the envelope
MAX_TIMEOUT = 600.0  # seconds per request
MAX_RETRIES = 10
MAX_CONCURRENCY = 64
ENCODINGS = ("gzip", "x-gzip", "deflate", "identity")  # Content-Encodings read (identity: none)
RETRY_AFTER = ("retry-after-ms", "retry-after")  # what the openai client waits by before a retry
MASKED_KEY_LENGTH = 8  # keys this long or longer are masked in server text ("local" is no secret)
T = TypeVar("T")


@dataclass
class EndpointParams:
    """The recipe options of a backend that asks an endpoint."""

    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    timeout: float = 60.0  # seconds per request, all of it: connect, send, wait, read
    max_retries: int = 4  # on 429, 5xx, timeouts and connection errors, with backoff
    concurrency: int = 4  # requests in flight per worker
    URLS: ClassVar[tuple[str, ...]] = ("base_url",)  # options the runtime settings must approve

    def check_endpoint(self) -> None:
        if not 0 < self.timeout <= MAX_TIMEOUT:  # NaN fails too
            raise ValueError(f"timeout {self.timeout}: valid 0 < timeout <= {MAX_TIMEOUT} seconds")
        if not 0 <= self.max_retries <= MAX_RETRIES:
            raise ValueError(f"max_retries {self.max_retries}: valid 0-{MAX_RETRIES}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ValueError(f"concurrency {self.concurrency}: valid 1-{MAX_CONCURRENCY}")


class ResponseTooLarge(Exception):
    """The server sent more than MAX_RESPONSE_BYTES (counted after decoding); reading stopped there."""


class ResponseUnreadable(Exception):
    """The response body cannot be decoded: an unsupported or corrupt Content-Encoding."""


_deadline = threading.local()  # `at`: when the current thread's request must be over (monotonic seconds)


def _remaining(timeout: float | None) -> float | None:
    """The socket timeout for the next network step: the step's own, cut to what is left of
    the request's total deadline."""
    at = getattr(_deadline, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        import httpcore2

        raise httpcore2.ReadTimeout("the request's total deadline passed")
    return left if timeout is None else min(timeout, left)


def _inflate(chunks: Iterator[bytes], coding: str, limit: int) -> Iterator[bytes]:
    """One Content-Encoding layer undone, at most `limit + 1` bytes at a time."""
    inflater = zlib.decompressobj(47 if coding in ("gzip", "x-gzip") else 15)  # 47: gzip or zlib header
    try:
        for chunk in chunks:
            while chunk:
                out = inflater.decompress(chunk, limit + 1)
                chunk = inflater.unconsumed_tail
                if out:
                    yield out
        yield inflater.flush()
    except zlib.error as error:
        raise ResponseUnreadable(f"the {coding}-encoded body is corrupt ({error})") from None


def retry_after(headers: Any) -> float | None:
    """The wait a response asks for before the next try, in seconds (as the openai client reads
    `retry-after-ms`, `retry-after` seconds or an HTTP date); None when it names none."""
    for name, divisor in zip(RETRY_AFTER, (1000, 1)):
        value = headers.get(name)
        if value is not None:
            try:
                delay = float(value) / divisor
            except ValueError:
                continue
            return delay if not math.isnan(delay) else None
    try:
        when = email.utils.parsedate_tz(headers.get("retry-after") or "")
        return None if when is None else float(email.utils.mktime_tz(when) - time.time())
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _bounded_transport(seconds: float, secret: str = "") -> Any:
    """An HTTP transport for one endpoint: each request ends within `seconds` in all (a server
    sending a byte now and then cannot hold it open), bodies are decoded here (gzip, deflate,
    stacked) and stop with ResponseTooLarge past MAX_RESPONSE_BYTES decoded, a `Retry-After`
    waits at most `seconds`, and `secret` is masked in every header value and the reason phrase."""
    import httpx2

    class Decoded(httpx2.SyncByteStream):
        def __init__(self, stream: Any, codings: list[str]):
            self.stream, self.codings = stream, codings

        def __iter__(self):
            chunks = iter(self.stream)
            for coding in reversed(self.codings):  # the last encoding applied is undone first
                chunks = _inflate(chunks, coding, MAX_RESPONSE_BYTES)
            received = 0
            for chunk in chunks:
                received += len(chunk)
                if received > MAX_RESPONSE_BYTES:
                    raise ResponseTooLarge(f"the response exceeds {MAX_RESPONSE_BYTES} bytes decoded")
                yield chunk

        def close(self) -> None:
            self.stream.close()

    class DeadlineStream:
        def __init__(self, stream: Any):
            self.stream = stream

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self.stream.read(max_bytes, _remaining(timeout))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self.stream.write(buffer, _remaining(timeout))

        def close(self) -> None:
            self.stream.close()

        def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None):
            return DeadlineStream(self.stream.start_tls(ssl_context, server_hostname, _remaining(timeout)))

        def get_extra_info(self, info: str) -> Any:
            return self.stream.get_extra_info(info)

    class DeadlineBackend:
        def __init__(self, backend: Any):
            self.backend = backend

        def connect_tcp(self, host: str, port: int, timeout: float | None = None, **options: Any) -> DeadlineStream:
            return DeadlineStream(self.backend.connect_tcp(host, port, _remaining(timeout), **options))

        def sleep(self, seconds: float) -> None:
            self.backend.sleep(seconds)

    class Transport(httpx2.HTTPTransport):
        def __init__(self):
            super().__init__()
            self._pool._network_backend = DeadlineBackend(self._pool._network_backend)  # httpcore2's pool

        def handle_request(self, request: Any) -> Any:
            request.headers["Accept-Encoding"] = ", ".join(ENCODINGS[:-1])  # only what Decoded undoes
            _deadline.at = time.monotonic() + seconds  # this thread reads the body too, before its next request
            response = super().handle_request(request)
            self.sanitize(response)
            codings = [c.strip().lower() for c in response.headers.get_list("content-encoding", split_commas=True)]
            unknown = [c for c in codings if c not in ENCODINGS]
            if unknown:
                response.close()
                raise ResponseUnreadable(f"Content-Encoding {escape_controls(', '.join(unknown), limit=80)!r}; "
                                         f"valid: {', '.join(ENCODINGS)}")
            response.headers.pop("content-encoding", None)
            response.stream = Decoded(response.stream, [c for c in codings if c != "identity"])
            return response

        @staticmethod
        def sanitize(response: Any) -> None:
            """Mask the key in the headers and reason phrase (before anything reads them) and
            cap the wait a Retry-After asks for at `seconds`."""
            delay = retry_after(response.headers)
            headers = [(name, mask_secret(value, secret)) for name, value in response.headers.items()
                       if name.lower() not in RETRY_AFTER]
            if delay is not None:
                headers.append(("retry-after-ms", f"{max(0.0, min(delay, seconds)) * 1000:.0f}"))
            response.headers = httpx2.Headers(headers)
            reason = response.extensions.get("reason_phrase")
            if isinstance(reason, bytes):  # masked as shown: httpx keeps its ASCII characters
                response.extensions["reason_phrase"] = mask_secret(reason.decode("ascii", "ignore"), secret).encode()

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
                    f"LLM endpoint {self.endpoint} is not approved ({problem or 'not in llm_endpoints'}); the "
                    f"builder approves endpoints in {user_config()} (llm_endpoints) or G4G_LLM_ENDPOINTS")
            variable = settings.llm_api_key_env
            self._key = os.environ.get(variable, "")
            if not self._key:
                raise BackendUnavailable(
                    f"the environment variable {variable} (llm_api_key_env) is not set: export your API key "
                    f"there (a local server accepts any value, e.g. `export {variable}=local`)")
            secret = self._key if len(self._key) >= MASKED_KEY_LENGTH else ""
            http_client = openai.DefaultHttpxClient(transport=_bounded_transport(self.params.timeout, secret),
                                                    follow_redirects=False)
            self._client = openai.OpenAI(base_url=self.base_url, api_key=self._key, timeout=self.params.timeout,
                                         max_retries=self.params.max_retries, http_client=http_client)
        return self._client

    def masked(self, text: str) -> str:
        """Server text with the API key masked, should the server echo it (mask before cutting)."""
        return mask_secret(text, self._key) if len(self._key) >= MASKED_KEY_LENGTH else text

    def each(self, ask: Callable[[T], Any], requests: list[T]) -> list[Any]:
        """`ask` for every request, `concurrency` in flight; connects first, so a missing key or
        an unapproved endpoint stops the stage before anything is sent."""
        self._connect()
        with ThreadPoolExecutor(max_workers=self.params.concurrency) as pool:
            return list(pool.map(ask, requests))

    def send(self, request: dict[str, Any]) -> str | RequestFailed | ReplyRejected:
        """The reply text of one `chat.completions.create(**request)` (a JSON envelope of
        another shape reads as an empty reply), or why there is none: every failure of the
        endpoint, its body included, is one of the two, never an exception."""
        import openai

        try:
            response = self._connect().chat.completions.with_raw_response.create(**request)
            body = response.http_response.content
        except openai.APITimeoutError:
            return RequestFailed(f"APITimeoutError from {self.endpoint}: no complete response within "
                                 f"{self.params.timeout:g} s (tried {self.params.max_retries + 1} times)")
        except openai.APIError as error:
            return RequestFailed(f"{type(error).__name__} from {self.endpoint}: {self.masked(str(error))}",
                                 bad_request=isinstance(error, openai.BadRequestError))
        except ResponseTooLarge as error:
            return ReplyRejected("reply_too_large", f"{self.endpoint}: {error}")
        except ResponseUnreadable as error:
            return RequestFailed(f"{self.endpoint}: {self.masked(str(error))}")
        try:
            envelope = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            kind = self.masked(response.headers.get("content-type", "-"))
            start = self.masked(body[:4096].decode("utf-8", "replace"))  # masked whole, then cut
            return RequestFailed(f"{self.endpoint}: the body is not a JSON chat completion ({type(error).__name__}; "
                                 f"Content-Type {escape_controls(kind, limit=60)}, starts "
                                 f"{escape_controls(start, limit=60)!r})")
        try:
            content = envelope["choices"][0]["message"]["content"]
        except (IndexError, KeyError, TypeError):
            content = None
        return self.masked(content) if isinstance(content, str) else ""
