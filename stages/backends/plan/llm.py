"""What every LLM planner shares: prompts rendered from templates, a reply cache, retries of
rejected replies, and the paper's post-processing. Subclasses only say how to ask a model.

Each request is keyed by (rendered prompt, backend, endpoint, model, sampling parameters,
seed); its raw reply is stored in the reply cache (`stages.runtime.replies`) and in the layout
record, so a rerun, an unrelated edit or a colleague with the same cache never pays for the
same call twice, and a recipe asking another endpoint never reuses this one's replies.

Replies are untrusted: one longer than `MAX_REPLY_CHARS` is rejected before it is cached,
parsing is linear-time and rejects what it cannot use (retried like any bad reply, also when
it comes from the cache), and control characters are escaped before a reply or a server's
error message reaches a report or a terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from base.errors import BackendUnavailable, ItemError
from base.sources import confined
from base.untrusted import escape_controls
from stages.backends.plan import choose_photo, choose_views, placed, scene_of, views_for_scene
from stages.backends.plan.examples import load_examples, sample_examples
from stages.backends.plan.reply import ReplyRejected, parse_background, parse_layout, parse_sizes, postprocess
from stages.backends.plan.scene_fit import OFF_SCENE, fit_to_scene
from stages.runtime.replies import MAX_ATTEMPTS, MAX_TOKENS, ReplyCache, RequestFailed
from stages.scene import CanvasScene, Occluder
from stages.templating import Templates

SIZE_SOURCES = ("none", "recipe", "llm")
KEPT = "\n\t"  # the control characters a stored reply keeps (JSON escapes them in files)


@dataclass
class LlmParams:
    examples: str = ""  # JSON Lines of caption -> boxes examples (see `g4g import-coco`)
    num_examples: int = 8  # sampled per request, seeded
    prompt_canvas: int = 512  # the square canvas the prompt asks boxes on
    sizes: str = "none"  # real-world size ratios: none, recipe (concept sizes) or llm
    max_attempts: int = 3  # a rejected reply is retried (new seed) up to this many times
    temperature: float = 0.7
    max_tokens: int = 400
    layout_template: str = "prompts/layout.j2"
    background_template: str = "prompts/background.j2"
    sizes_template: str = "prompts/sizes.j2"
    off_scene: str = "repair"  # on a scene template: repair (snap feet, rescale) or reject what breaks it
    FILES: ClassVar[dict[str, str]] = {  # options naming files, and the folder they are relative to
        "examples": ".", "layout_template": "templates", "background_template": "templates",
        "sizes_template": "templates"}

    def __post_init__(self) -> None:
        if self.sizes not in SIZE_SOURCES:
            raise ValueError(f"sizes '{self.sizes}': valid {', '.join(SIZE_SOURCES)}")
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            raise ValueError(f"max_attempts {self.max_attempts}: valid 1-{MAX_ATTEMPTS}")
        if not 1 <= self.max_tokens <= MAX_TOKENS:
            raise ValueError(f"max_tokens {self.max_tokens}: valid 1-{MAX_TOKENS}")
        if self.num_examples < 0 or self.prompt_canvas < 64:
            raise ValueError("num_examples >= 0, prompt_canvas >= 64")
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature {self.temperature}: valid 0-2")
        if self.off_scene not in OFF_SCENE:
            raise ValueError(f"off_scene '{self.off_scene}': valid {', '.join(OFF_SCENE)}")


def object_names(class_nouns: list[str]) -> list[str]:
    """Names the model sees: class nouns, numbered when a noun repeats ("cat", "cat 2")."""
    seen: dict[str, int] = {}
    names = []
    for noun in class_nouns:
        seen[noun] = seen.get(noun, 0) + 1
        names.append(noun if seen[noun] == 1 else f"{noun} {seen[noun]}")
    return names


@dataclass
class _Job:
    request: dict[str, Any]
    names: list[str]
    outputs: dict[str, Any] = field(default_factory=dict)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None


class LlmPlanner:
    """Subclasses set `self.identity` (backend, endpoint, model and sampling parameters: part
    of every request key) and implement `complete(prompts)`: one reply text, RequestFailed or
    ReplyRejected (a response too large to read) per (text, seed)."""

    identity: dict[str, Any]

    def __init__(self, params: LlmParams, templates_dir: str, cache_dir: str, root: str = ".",
                 template_digests: dict[str, str] | None = None):
        self.params = params
        self.templates = Templates(templates_dir, template_digests)
        examples = confined(Path(root), params.examples) if params.examples else None
        if params.examples and examples is None:
            raise BackendUnavailable(f"examples file '{params.examples}' is outside the project {root}")
        try:
            self.examples = load_examples(examples) if examples else []
        except (OSError, ValueError) as error:  # not UTF-8 is a ValueError too
            raise BackendUnavailable(f"examples file {params.examples}: {error}") from None
        self.replies = ReplyCache(cache_dir)

    def complete(self, prompts: list[tuple[str, int]]) -> list[str | RequestFailed | ReplyRejected]:
        raise NotImplementedError

    def _ask(self, prompts: list[tuple[str, int]]) -> list[tuple[str, str | RequestFailed | ReplyRejected]]:
        """Replies for (text, seed) prompts, from the reply cache where possible."""
        return self.replies.ask(self.identity, prompts, self.complete)

    def plan_batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any] | ItemError]:
        jobs = [_Job(r, object_names([c["class_noun"] for c in r["concepts"]])) for r in requests]
        p = self.params
        self._step(jobs, "background", lambda job: len(job.request["backgrounds"]) > 1, self._background_prompt,
                   lambda job, reply: parse_background(reply, [b["phrase"] for b in job.request["backgrounds"]]))
        if p.sizes == "llm":
            self._step(jobs, "sizes", lambda job: True,
                       lambda job, attempt: self.templates.render(p.sizes_template, objects=job.names),
                       lambda job, reply: parse_sizes(reply, job.names))
        self._step(jobs, "layout", lambda job: True, self._layout_prompt,
                   lambda job, reply: parse_layout(reply, job.names, p.prompt_canvas))
        return [ItemError(job.failure) if job.failure else self._layout(job) for job in jobs]

    def _step(self, jobs: list[_Job], step: str, needed: Callable[[_Job], bool],
              render: Callable[[_Job, int], str], parse: Callable[[_Job, str], Any]) -> None:
        """Ask every job that needs this step; retry rejected replies with a new seed."""
        pending = [job for job in jobs if job.failure is None and needed(job)]
        for attempt in range(self.params.max_attempts):
            if not pending:
                return
            answers = self._ask([(render(job, attempt), job.request["seed"] + attempt) for job in pending])
            retry = []
            for job, (key, reply) in zip(pending, answers):
                if isinstance(reply, RequestFailed):
                    job.attempts.append({"step": step, "request": key, "rejected": "request_failed"})
                    job.failure = f"[request_failed] {step}: {escape_controls(str(reply), limit=500)}"
                    continue
                try:
                    if isinstance(reply, ReplyRejected):
                        raise reply
                    job.outputs[step] = parse(job, reply)
                    job.attempts.append({"step": step, "request": key, "reply": escape_controls(reply, KEPT),
                                         "rejected": None})
                except ReplyRejected as rejection:
                    stored = {} if isinstance(reply, ReplyRejected) else {"reply": escape_controls(reply, KEPT)}
                    job.attempts.append({"step": step, "request": key, **stored, "rejected": rejection.kind,
                                         "reason": escape_controls(str(rejection), limit=500)})
                    retry.append(job)
            pending = retry
        for job in pending:
            reasons = [a["reason"] for a in job.attempts if a["step"] == step and a["rejected"]]
            job.failure = f"{reasons[-1]} ({step}: {len(reasons)} replies rejected: {'; '.join(reasons[:-1]) or '-'})"

    def _background_prompt(self, job: _Job, attempt: int) -> str:
        phrases = [b["phrase"] for b in job.request["backgrounds"]]
        return self.templates.render(self.params.background_template, objects=job.names, backgrounds=phrases)

    def _layout_prompt(self, job: _Job, attempt: int) -> str:
        examples = sample_examples(self.examples, self.params.num_examples, job.request["seed"] + attempt)
        _, background, photo = self._choice(job)
        scene = scene_of(background, photo, [self.params.prompt_canvas] * 2)
        return self.templates.render(self.params.layout_template, objects=job.names, canvas=self.params.prompt_canvas,
                                     examples=examples, scene=describe(scene[0], job) if scene else None)

    def _choice(self, job: _Job) -> tuple[list[dict[str, Any]], dict[str, Any], int | None]:
        """The item's views, its background (the model's pick, or the only one) and photo."""
        rng = np.random.default_rng(job.request["seed"])
        views = choose_views(job.request, rng)
        backgrounds = job.request["backgrounds"]
        phrase = job.outputs.get("background", backgrounds[0]["phrase"])
        background = next(b for b in backgrounds if b["phrase"] == phrase)
        return views, background, choose_photo(background, rng)

    def _layout(self, job: _Job) -> dict[str, Any] | ItemError:
        request = job.request
        views, background, photo = self._choice(job)
        ratios = None
        if self.params.sizes == "llm":
            ratios = [job.outputs["sizes"][name] for name in job.names]
        elif self.params.sizes == "recipe":
            largest = max(c["size"] for c in request["concepts"])
            ratios = [c["size"] / largest for c in request["concepts"]]
        try:
            scene = scene_of(background, photo, request["canvas"])
            if scene:  # a view seen from above is drawn again where this scene's camera is low
                views = views_for_scene(request["concepts"], views, scene[0], np.random.default_rng(request["seed"]))
                if isinstance(views, str):
                    raise ReplyRejected("camera", views)
            boxes, order = postprocess([job.outputs["layout"][name] for name in job.names],
                                       [v["aspect"] for v in views], self.params.prompt_canvas, request["canvas"], ratios)
            supports, rules = [None] * len(boxes), [[]] * len(boxes)
            if scene:
                boxes, supports, rules, order = fit_to_scene(scene[0], boxes, request["concepts"], views,
                                                             self.params.off_scene)
        except ReplyRejected as rejection:
            return ItemError(f"{rejection} (layout: {', '.join(job.names)})")
        objects = []
        for i in order:
            entry = placed(request["concepts"][i]["id"], views[i], boxes[i])
            if supports[i]:
                entry.update(support=supports[i], **({"repaired": rules[i]} if rules[i] else {}))
            objects.append(entry)
        return {"background": {"id": background["id"], "photo": photo, **({"crop": scene[1]} if scene else {})},
                "objects": objects, "llm": {"attempts": job.attempts}}


def describe(scene: CanvasScene, job: _Job) -> dict[str, Any]:
    """What the layout prompt tells the model of a scene template, on the prompt canvas: the
    horizon, where things stand (and the holes in the ground), what they may not cover, what
    stands in the scene and hides what is behind it (its box and the row where it meets the
    ground), and each object's expected height standing far (halfway between horizon and
    bottom) and near (at the bottom)."""
    ground = scene.supports[0]
    far, near = round((scene.horizon + scene.height) / 2), scene.height - 1
    objects = []
    for name, concept in zip(job.names, job.request["concepts"]):
        objects.append({"name": name, "size_cm": concept["size_cm"], "placement": concept["placement"],
                        "far": {"y": far, "height": round(scene.size_at(far, ground, concept["size_cm"]))},
                        "near": {"y": near, "height": round(scene.size_at(near, ground, concept["size_cm"]))}})
    def shown(polygon: np.ndarray) -> list[list[int]]:  # whole pixels, clamped to the canvas the model sees
        return np.clip(polygon.round(), 0, [scene.width, scene.height]).astype(int).tolist()

    return {"horizon": round(scene.horizon), "ground": shown(ground.polygon),
            "surfaces": [{"name": s.name, "polygon": shown(s.polygon), "holds_cm": s.max_size_cm}
                         for s in scene.supports[1:]],
            "holes": [shown(h) for h in ground.holes],
            "forbidden": [shown(b.polygon) for b in scene.forbidden], "objects": objects,
            "occluders": [{"name": o.name or "something", "box": occluder_box(o), "front": round(o.front)}
                          for o in scene.occluders if occluder_box(o)]}


def occluder_box(occluder: Occluder) -> list[int] | None:
    """[x, y, width, height] of an occluder on the canvas: its matte's extent, else its polygon's;
    None when it is not on the canvas."""
    if occluder.matte is not None and occluder.extent is None:
        return None
    if occluder.extent is not None:
        left, top, right, bottom = occluder.extent
    elif occluder.polygon is not None:
        (left, top), (right, bottom) = occluder.polygon.min(axis=0), occluder.polygon.max(axis=0)
    else:
        return None
    return [round(left), round(top), round(right - left), round(bottom - top)]
