"""Jinja for user templates (captions, LLM prompts): sandboxed, strict, errors naming the file.

Templates are user input: they render in Jinja's immutable sandbox, so they cannot reach
Python internals, and with StrictUndefined, so a misspelled variable is an error naming the
template and line instead of an empty string in thousands of outputs. They are read only from
their folder, by real path, so a symlink (or an include) cannot pull in a file from elsewhere,
and any failure to load or render is an error naming the template, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from base.errors import BackendUnavailable
from base.files import read_keyed
from base.sources import confined


class TemplateInvalid(BackendUnavailable):
    """A template cannot load or render; fixing the template is the only way on."""


class ConfinedLoader(jinja2.FileSystemLoader):
    """Templates from one folder only: a name whose real path leaves it is not found. A template
    whose sha256 the items' keys hold (`digests`) is read once and used only if it still has it."""

    def __init__(self, directory: str, digests: dict[str, str] | None = None):
        super().__init__(directory)
        self.digests = digests or {}

    def get_source(self, environment: jinja2.Environment, template: str):
        path = confined(Path(self.searchpath[0]), template)
        if path is None:
            raise jinja2.TemplateNotFound(template, f"'{template}' is outside {self.searchpath[0]}, where templates "
                                                    f"are read from (symlinks out of it are refused)")
        if template not in self.digests:
            return super().get_source(environment, template)
        if not path.is_file():
            raise jinja2.TemplateNotFound(template)
        data = read_keyed(path, f"template {path}", "sha256", self.digests[template])
        return data.decode("utf-8"), str(path), lambda: True  # loaded once per process


def keyed_templates(items: list[dict[str, Any]]) -> dict[str, str]:
    """The sha256 of every template the items' keys hold (compile's `parts.templates`)."""
    digests: dict[str, str] = {}
    for item in items:
        digests.update(item["parts"].get("templates", {}))
    return digests


class Templates:
    def __init__(self, directory: str | Path, digests: dict[str, str] | None = None):
        self.directory = Path(directory)
        self.environment = ImmutableSandboxedEnvironment(
            loader=ConfinedLoader(str(directory), digests), undefined=jinja2.StrictUndefined, autoescape=False)
        self._loaded: dict[str, jinja2.Template] = {}

    def load(self, name: str) -> jinja2.Template:
        if name not in self._loaded:
            try:
                self._loaded[name] = self.environment.get_template(name)
            except jinja2.TemplateSyntaxError as error:
                raise TemplateInvalid(f"{self.directory / name}, line {error.lineno}: {error.message}") from None
            except jinja2.TemplateNotFound as error:
                problem = f"not found in {self.directory}" if error.message == error.name else error.message
                raise TemplateInvalid(f"template '{error.name}' {problem}") from None
            except Exception as error:  # unreadable, not UTF-8, a folder, nested too deep: all the template's fault
                problem = f"{type(error).__name__}: {error}"
                raise TemplateInvalid(f"{self.directory / name}: cannot load: {problem}") from None
        return self._loaded[name]

    def render(self, name: str, **context: Any) -> str:
        template = self.load(name)
        try:
            return template.render(**context)
        except Exception as error:  # undefined variables, sandbox refusals, 1/0, ...: all the template's fault
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
