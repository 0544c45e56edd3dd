"""The reply cache every backend that asks a model shares (LLM planners, VLM captioners).

Each request is keyed by (request, backend identity: backend, endpoint, model, sampling
parameters; seed); its raw reply is stored in the item cache's `llm/` folder, so a rerun, an
unrelated edit or a colleague with the same cache never pays for the same call twice, and
another endpoint's or model's replies are never reused. A reply longer than
`MAX_REPLY_CHARS` is rejected before it is cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from base.files import read_json, write_json
from base.keys import content_key

MAX_REPLY_CHARS = 64 * 1024  # a layout or caption reply is a few hundred characters; this long is rejected
MAX_ATTEMPTS = 10  # asks per item of an LLM or VLM backend (each with the endpoint's own retries)
MAX_TOKENS = 8192  # new tokens a request may ask for
FOLDER = "llm"  # under the item cache


class ReplyRejected(Exception):
    """A reply the backend cannot use; `kind` is what reports count."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"[{kind}] {message}")
        self.kind = kind


class RequestFailed(Exception):
    """The model could not be asked: server errors after retries, a timeout, no connection.
    `bad_request` marks a 400 (the server refused an option, e.g. JSON mode)."""

    def __init__(self, message: str, bad_request: bool = False):
        super().__init__(message)
        self.bad_request = bad_request


def bounded(reply: str | RequestFailed | ReplyRejected | None) -> str | RequestFailed | ReplyRejected | None:
    """A reply as text that can be stored (lone surrogates escaped), or a rejection when too long."""
    if not isinstance(reply, str):
        return reply
    if len(reply) > MAX_REPLY_CHARS:
        return ReplyRejected("reply_too_large", f"a reply of {len(reply)} characters; at most {MAX_REPLY_CHARS}")
    return reply.encode("utf-8", "backslashreplace").decode("utf-8")


class ReplyCache:
    def __init__(self, cache_dir: str | Path):
        self.root = Path(cache_dir) / FOLDER

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The cached reply; None when there is none or the entry is unreadable (asked again)."""
        try:
            reply = read_json(self._path(key)).get("reply")
        except (OSError, ValueError, AttributeError):
            return None
        return reply if isinstance(reply, str) else None

    def put(self, key: str, request: dict[str, Any], reply: str) -> None:
        write_json(self._path(key), {"request": request, "reply": reply})

    def ask(self, identity: dict[str, Any], prompts: list[tuple[Any, int]],
            complete: Callable[[list[tuple[Any, int]]], list[Any]]) -> list[tuple[str, Any]]:
        """(key, reply) for each (request, seed): from the cache where possible, the rest from
        `complete` (one reply text, RequestFailed or ReplyRejected each). Only good replies are
        stored; a reply over `MAX_REPLY_CHARS` comes back as a rejection, also from the cache."""
        keys = [content_key("llm", identity, request, seed) for request, seed in prompts]
        answers = [bounded(self.get(key)) for key in keys]
        missing = [i for i, answer in enumerate(answers) if answer is None]
        if missing:
            for i, reply in zip(missing, complete([prompts[i] for i in missing])):
                answers[i] = bounded(reply)
                if isinstance(answers[i], str):
                    request, seed = prompts[i]
                    self.put(keys[i], {"prompt": request, "seed": seed, **identity}, answers[i])
        return list(zip(keys, answers))
