"""Captions from Jinja templates in a sandbox: the paper's short caption and a detailed one.

Templates are user input: they render in Jinja's immutable sandbox with StrictUndefined, so a
template cannot reach Python internals and a misspelled variable is an error naming the
template and line instead of an empty string in thousands of captions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from stages.backends import BackendUnavailable

VERSION = "1"


@dataclass
class Params:
    pass


class TemplateInvalid(BackendUnavailable):
    """A caption template cannot render; fixing the template is the only way on."""


class Backend:
    def __init__(self, params: Params, templates_dir: str, templates: dict[str, str]):
        self.params = params
        self.environment = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(templates_dir),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
        )
        self.templates = {}
        for role, name in sorted(templates.items()):
            try:
                self.templates[role] = self.environment.get_template(name)
            except jinja2.TemplateSyntaxError as error:
                raise TemplateInvalid(f"{Path(templates_dir) / name}, line {error.lineno}: {error.message}") from None
            except jinja2.TemplateNotFound:
                raise TemplateInvalid(f"template '{name}' not found in {templates_dir}") from None

    def caption(self, scene: dict[str, Any]) -> dict[str, str]:
        """One caption per template role, whitespace collapsed to single spaces."""
        captions = {}
        for role, template in self.templates.items():
            try:
                text = template.render(**scene)
            except (jinja2.UndefinedError, SecurityError, jinja2.TemplateError) as error:
                line = _template_line(error, template.filename)
                raise TemplateInvalid(f"{template.filename}{line}: {type(error).__name__}: {error}") from None
            captions[role] = " ".join(text.split())
        return captions


def _template_line(error: Exception, filename: str | None) -> str:
    """The template line the traceback points at, if Jinja recorded one."""
    traceback = error.__traceback__
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == filename:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return f", line {line}" if line else ""
