"""Jinja for user templates (captions, LLM prompts): sandboxed, strict, errors naming the file.

Templates are user input: they render in Jinja's immutable sandbox, so they cannot reach
Python internals, and with StrictUndefined, so a misspelled variable is an error naming the
template and line instead of an empty string in thousands of outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from stages.backends import BackendUnavailable


class TemplateInvalid(BackendUnavailable):
    """A template cannot load or render; fixing the template is the only way on."""


class Templates:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.environment = ImmutableSandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(directory)), undefined=jinja2.StrictUndefined, autoescape=False)
        self._loaded: dict[str, jinja2.Template] = {}

    def load(self, name: str) -> jinja2.Template:
        if name not in self._loaded:
            try:
                self._loaded[name] = self.environment.get_template(name)
            except jinja2.TemplateSyntaxError as error:
                raise TemplateInvalid(f"{self.directory / name}, line {error.lineno}: {error.message}") from None
            except jinja2.TemplateNotFound:
                raise TemplateInvalid(f"template '{name}' not found in {self.directory}") from None
        return self._loaded[name]

    def render(self, name: str, **context: Any) -> str:
        template = self.load(name)
        try:
            return template.render(**context)
        except jinja2.TemplateError as error:  # undefined variables and sandbox refusals included
            line = _template_line(error, template.filename)
            raise TemplateInvalid(f"{template.filename}{line}: {type(error).__name__}: {error}") from None


def _template_line(error: Exception, filename: str | None) -> str:
    """The template line the traceback points at, if Jinja recorded one."""
    traceback, line = error.__traceback__, None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == filename:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return f", line {line}" if line else ""
