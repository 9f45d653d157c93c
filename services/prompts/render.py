"""Sandboxed rendering of prompt templates: typed variables in, chat messages out. Never ``eval``.

Templates are Jinja2 run in :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` (no attribute access to
Python internals, no mutation, undefined names are errors). A template may only use the variables its
version declares (:func:`template_variables` checks that when a version is pushed); a render call must
give every declared variable that has no default and nothing else. Values arrive as strings (the wire
type of ``PromptRef.variables``) and must parse as the declared type.
"""

from __future__ import annotations

from functools import lru_cache

from jinja2 import StrictUndefined, Template, TemplateError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import ValidationError

from schemas.prompts import PromptVariable, PromptVersion, TemplateMessage
from schemas.requests import Message

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class RenderError(ValueError):
    """The variables do not fit the prompt (missing, extra, wrong type) or the template failed; says which."""


class TemplateProblem(ValueError):
    """A template that cannot be pushed: bad syntax, or a name that is not a declared variable."""


def template_variables(messages: list[TemplateMessage]) -> set[str]:
    """Every name the templates read (TemplateProblem on a syntax error)."""
    names: set[str] = set()
    for i, message in enumerate(messages):
        try:
            names |= meta.find_undeclared_variables(_ENV.parse(message.content))
        except TemplateError as exc:
            raise TemplateProblem(f"message {i} ({message.role}): template error: {exc}") from None
    return names


def check_template(messages: list[TemplateMessage], variables: list[PromptVariable]) -> None:
    """TemplateProblem unless the templates parse and read only declared variables."""
    used = template_variables(messages)
    undeclared = sorted(used - {v.name for v in variables})
    if undeclared:
        raise TemplateProblem(f"the template uses undeclared variables: {', '.join(undeclared)} (declare them under 'variables')")


def _typed(variable: PromptVariable, raw: str) -> object:
    if len(raw) > variable.max_length:
        raise RenderError(f"variable {variable.name!r} is {len(raw)} characters long (at most {variable.max_length})")
    try:
        if variable.type == "integer":
            return int(raw.strip())
        if variable.type == "number":
            return float(raw.strip())
    except ValueError:
        raise RenderError(f"variable {variable.name!r} must be an {variable.type}, got {raw[:50]!r}") from None
    if variable.type == "boolean":
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise RenderError(f"variable {variable.name!r} must be a boolean (true/false), got {raw[:50]!r}")
    return raw


@lru_cache(maxsize=4096)
def _compiled(content: str) -> Template:
    return _ENV.from_string(content)


def render(version: PromptVersion, variables: dict[str, str]) -> list[Message]:
    """The version's messages with ``variables`` filled in, or RenderError saying exactly what is wrong."""
    declared = {v.name: v for v in version.variables}
    extra = sorted(set(variables) - set(declared))
    missing = sorted(n for n, v in declared.items() if n not in variables and v.default is None)
    problems = []
    if missing:
        problems.append(f"missing variable(s): {', '.join(missing)}")
    if extra:
        problems.append(f"unknown variable(s): {', '.join(extra)}")
    if problems:
        expected = ", ".join(f"{v.name}: {v.type}" for v in version.variables) or "none"
        raise RenderError(f"prompt {version.name}@{version.version}: {'; '.join(problems)} (expects {expected})")
    values = {
        name: _typed(var, variables.get(name, var.default or "")) for name, var in declared.items()
    }
    out = []
    for message in version.messages:
        try:
            out.append(Message(role=message.role, content=_compiled(message.content).render(values)))
        except (TemplateError, SecurityError, ValidationError) as exc:
            raise RenderError(f"prompt {version.name}@{version.version}: cannot render: {exc}") from None
    return out
