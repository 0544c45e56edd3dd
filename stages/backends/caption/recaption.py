"""What both VLM captioners share (`vlm`: a local transformers model, `vlm-openai`: an
OpenAI-compatible endpoint): Gen4Gen's second caption, written by a vision-language model
looking at the composed image, with the personal tokens substituted (`substitute`).

Each sample also gets the template captions (`short`, `detailed`); the VLM's goes beside them as
`vlm`. The instruction is a Jinja template (`instruction`, default the paper's words) that sees
the scene. A request is keyed by (instruction, image digest, seed, backend identity) in the
reply cache (`stages.runtime.replies`): a template edit or a rebuild never asks again. A reply
that is empty or not prose is rejected and asked again with the next seed, up to
`max_attempts`; a request that fails (server error after retries, timeout) fails the item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from base.errors import ItemError
from base.untrusted import escape_controls
from stages.backends.caption import template
from stages.backends.caption.substitute import clean, recaption
from stages.runtime.cache import verified_bytes
from stages.runtime.replies import MAX_ATTEMPTS, MAX_TOKENS, ReplyCache, ReplyRejected, RequestFailed

MIN_WORDS = 3  # a reply with fewer words (letters in them) is no description
SHOWN_REPLY_CHARS = 2000  # of a raw reply, kept in captions.json
MIME_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


@dataclass
class VlmParams:
    instruction: str = "prompts/recaption.j2"  # relative to templates/
    temperature: float = 0.0  # 0: greedy; above: sampled, seeded per item
    max_tokens: int = 96  # new tokens the model may write (the paper asks for 30 words)
    max_attempts: int = 2  # a rejected reply is asked again with the next seed
    FILES: ClassVar[dict[str, str]] = {"instruction": "templates"}

    def check(self) -> None:
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            raise ValueError(f"max_attempts {self.max_attempts}: valid 1-{MAX_ATTEMPTS}")
        if not 1 <= self.max_tokens <= MAX_TOKENS:
            raise ValueError(f"max_tokens {self.max_tokens}: valid 1-{MAX_TOKENS}")
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature {self.temperature}: valid 0-2")


def check_reply(reply: str) -> None:
    """ReplyRejected unless `reply` reads as a description."""
    text = clean(reply)
    if not text:
        raise ReplyRejected("empty_reply", "the reply is empty")
    if len(re.findall(r"[^\W\d_]{2,}", text)) < MIN_WORDS:
        raise ReplyRejected("not_a_caption", f"fewer than {MIN_WORDS} words: {escape_controls(text, limit=80)!r}")


@dataclass
class _Job:
    sample: dict[str, Any]
    instruction: str
    image: str  # the image's digest: what the request key names
    reply: str | None = None
    key: str = ""
    failure: str | None = None
    rejected: list[dict[str, Any]] = field(default_factory=list)


class Recaptioner:
    """Subclasses set `self.identity` (backend, endpoint or weights, model, sampling: part of
    every request key) and implement `complete(prompts)`: one reply text, RequestFailed or
    ReplyRejected per ({"instruction", "image": digest}, seed); `self.images[digest]` holds the
    image's bytes and `self.mime_types[digest]` its type."""

    identity: dict[str, Any]

    def __init__(self, params: VlmParams, templates_dir: str, templates: dict[str, str], cache_dir: str,
                 template_digests: dict[str, str] | None = None):
        self.params = params
        self.captions = template.Backend(template.Params(), templates_dir, templates, template_digests)
        self.templates = self.captions.templates
        self.templates.load(params.instruction)  # a syntax error stops the stage before any item
        self.replies = ReplyCache(cache_dir)
        self.images: dict[str, bytes] = {}
        self.mime_types: dict[str, str] = {}

    def complete(self, prompts: list[tuple[dict[str, str], int]]) -> list[str | RequestFailed | ReplyRejected]:
        raise NotImplementedError

    def caption_batch(self, samples: list[dict[str, Any]]) -> list[dict[str, Any] | ItemError]:
        """Template captions plus the VLM's, for samples with `scene`, `seed`, `aliases`
        {concept: [word, ...]}, `image` (path) and `files` (its producer's digests)."""
        jobs, outputs = [], []
        for sample in samples:
            path = Path(sample["image"])
            try:
                data = verified_bytes(path.parent, path.name, sample["files"])
            except (ItemError, OSError) as error:
                outputs.append(ItemError(str(error)))
                continue
            digest = sample["files"][path.name]["blake2b"]
            self.images[digest], self.mime_types[digest] = data, MIME_TYPES.get(path.suffix.lower(), "image/jpeg")
            jobs.append(_Job(sample, self.templates.render(self.params.instruction, **sample["scene"]), digest))
            outputs.append(jobs[-1])
        try:
            self._ask(jobs)
        finally:
            self.images.clear()
            self.mime_types.clear()
        return [output if isinstance(output, ItemError) else self._record(output) for output in outputs]

    def _ask(self, jobs: list[_Job]) -> None:
        """Replies for every job; rejected ones asked again with the next seed."""
        pending = jobs
        for attempt in range(self.params.max_attempts):
            if not pending:
                break
            prompts = [({"instruction": job.instruction, "image": job.image}, job.sample["seed"] + attempt)
                       for job in pending]
            retry = []
            for job, (key, reply) in zip(pending, self.replies.ask(self.identity, prompts, self.complete)):
                job.key = key
                if isinstance(reply, RequestFailed):
                    job.failure = f"[request_failed] {escape_controls(str(reply), limit=500)}"
                    continue
                try:
                    if isinstance(reply, ReplyRejected):
                        raise reply
                    check_reply(reply)
                    job.reply = reply
                except ReplyRejected as rejection:
                    shown = {} if isinstance(reply, ReplyRejected) else {
                        "reply": escape_controls(reply, limit=SHOWN_REPLY_CHARS)}
                    job.rejected.append({"request": key, **shown, "rejected": rejection.kind,
                                         "reason": escape_controls(str(rejection), limit=500)})
                    retry.append(job)
            pending = retry
        for job in pending:
            if job.failure is None:
                reasons = [r["reason"] for r in job.rejected]
                job.failure = f"{reasons[-1]} (vlm: {len(reasons)} replies rejected)"

    def _record(self, job: _Job) -> dict[str, Any] | ItemError:
        if job.failure is not None:
            return ItemError(job.failure)
        scene, aliases = job.sample["scene"], job.sample["aliases"]
        concepts = [{**c, "aliases": aliases.get(c["id"], [])} for c in scene["concepts"]]
        try:
            result = recaption(job.reply, concepts)
        except ValueError as error:
            return ItemError(f"[too_long] {error}")
        return {**self.captions.caption(scene), "vlm": result.caption, "recaption": {
            "request": job.key, "reply": escape_controls(job.reply, limit=SHOWN_REPLY_CHARS),
            "not_mentioned": result.not_mentioned, "added": result.added, "ambiguous": result.ambiguous,
            "cut": result.cut, "clip_tokens": result.clip_tokens, "rejected": job.rejected}}
