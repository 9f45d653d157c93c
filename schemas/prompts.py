"""Prompt registry events: immutable prompt versions and the labels that point at them (topic ``llm.prompts``).

A ``PromptVersion`` (event ``prompt.version``) is one immutable version of a named prompt: chat message
templates with typed variables, and the model parameters to use with it. Versions are numbered 1, 2, ...
per name. A ``PromptLabel`` (event ``prompt.label``) moves a label (``production``, ``staging`` or a custom
one) of a name to a version. Both live on the compacted, single-partition ``llm.prompts`` topic: its order
decides which push got a version number first (see :mod:`services.prompts.registry`).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.envelope import UtcDatetime
from schemas.requests import Role

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

VariableType = Literal["string", "integer", "number", "boolean"]


def validate_prompt_name(name: str, what: str = "prompt name") -> str:
    """The name itself, or ValueError: letters, digits, '.', '_' or '-', at most 100 characters."""
    if not _NAME.match(name):
        raise ValueError(f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-' (at most 100 characters)")
    return name


class PromptVariable(BaseModel):
    """A typed template variable. Values arrive as strings and must parse as the type."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    type: VariableType = "string"
    description: str = Field(default="", max_length=2_000)
    default: str | None = Field(default=None, max_length=100_000, description="Used when a request omits it.")
    max_length: int = Field(default=20_000, ge=1, le=1_000_000, description="Longest value accepted.")

    @field_validator("name")
    @classmethod
    def _identifier(cls, name: str) -> str:
        if not _VARIABLE.match(name):
            raise ValueError(f"invalid variable name {name!r}: use a Python-style identifier")
        return name


class TemplateMessage(BaseModel):
    """One chat message whose content is a template (``{{ variable }}``)."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str = Field(max_length=200_000)


class PromptParams(BaseModel):
    """Model parameters stored with a prompt; a field left unset leaves the request's (or deployment's) value."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(default=None, ge=1, le=32_768)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: list[str] | None = Field(default=None, max_length=16)


class PromptVersion(BaseModel):
    """One immutable version of a prompt."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    version: int = Field(ge=1)
    messages: list[TemplateMessage] = Field(min_length=1, max_length=100)
    variables: list[PromptVariable] = Field(default_factory=list, max_length=200)
    params: PromptParams = Field(default_factory=PromptParams)
    model_alias: str | None = Field(default=None, max_length=200, description="The alias this prompt is written for.")
    description: str = Field(default="", max_length=10_000)
    content_hash: str = Field(min_length=1, max_length=128, description="Hash of messages, variables and params.")
    push_id: str = Field(min_length=1, max_length=100, description="Unique per push: the first push of a number wins.")
    created_by: str = Field(default="", max_length=200)
    created_at: UtcDatetime

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return validate_prompt_name(name)

    @model_validator(mode="after")
    def _unique_variables(self) -> PromptVersion:
        names = [v.name for v in self.variables]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variables declared twice: {', '.join(dupes)}")
        return self


class PromptLabel(BaseModel):
    """A label of a prompt now points at ``version`` (labels move; versions do not change)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    label: str = Field(min_length=1, max_length=100)
    version: int = Field(ge=1)
    moved_by: str = Field(default="", max_length=200)
    moved_at: UtcDatetime

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return validate_prompt_name(name)

    @field_validator("label")
    @classmethod
    def _label(cls, label: str) -> str:
        validate_prompt_name(label, "label")
        if label.isdigit() or label == "latest":
            raise ValueError(f"label {label!r} would read as a version: use a name that is not a number or 'latest'")
        return label
