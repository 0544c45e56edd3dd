"""Captions from Jinja templates: the paper's short caption and a detailed one.

Templates render in the sandbox of `stages.templating` (no Python internals, undefined
variables are errors naming the template and line).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stages.templating import Templates

VERSION = "1"
IGNORES = ("aliases", "seed")  # key parts it does not read: templates see no aliases and draw nothing


@dataclass
class Params:
    pass


class Backend:
    def __init__(self, params: Params, templates_dir: str, templates: dict[str, str],
                 template_digests: dict[str, str] | None = None):
        self.params = params
        self.templates = Templates(templates_dir, template_digests)
        self.roles = dict(sorted(templates.items()))
        for name in self.roles.values():
            self.templates.load(name)  # a syntax error stops the stage before any item

    def caption_batch(self, samples: list[dict[str, Any]]) -> list[dict[str, str]]:
        return [self.caption(sample["scene"]) for sample in samples]

    def caption(self, scene: dict[str, Any]) -> dict[str, str]:
        """One caption per template role, whitespace collapsed to single spaces."""
        return {role: " ".join(self.templates.render(name, **scene).split()) for role, name in self.roles.items()}
