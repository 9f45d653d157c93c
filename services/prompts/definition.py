"""The file a prompt is pushed from (YAML), and how it becomes an immutable :class:`PromptVersion`.

```yaml
name: summarize
description: Summaries for the support inbox
model_alias: chat            # optional: the alias it is written for
messages:
  - role: system
    content: You write short, factual summaries.
  - role: user
    content: "Summarize in at most {{ words }} words:\\n{{ text }}"
variables:
  - {name: text}
  - {name: words, type: integer, default: "40"}
params: {temperature: 0, max_tokens: 96}   # model parameters stored with the prompt
```
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.envelope import utc_now
from schemas.prompts import PromptParams, PromptVariable, PromptVersion, TemplateMessage, validate_prompt_name
from services.prompts.render import check_template


class PromptDefinition(BaseModel):
    """What a prompt file holds: everything of a version except its number and push identity."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    description: str = Field(default="", max_length=10_000)
    model_alias: str | None = Field(default=None, max_length=200)
    messages: list[TemplateMessage] = Field(min_length=1, max_length=100)
    variables: list[PromptVariable] = Field(default_factory=list, max_length=200)
    params: PromptParams = Field(default_factory=PromptParams)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return validate_prompt_name(name)

    @classmethod
    def load(cls, path: str | Path) -> PromptDefinition:
        """Read and check a prompt file (ValueError/TemplateProblem with the reason)."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping with name, messages, variables, params")
        definition = cls.model_validate(data)
        definition.check()
        return definition

    def check(self) -> None:
        check_template(self.messages, self.variables)

    def content_hash(self) -> str:
        """A hash of what renders (messages, variables, params, alias, description): equal content, equal hash."""
        content = self.model_dump(mode="json", exclude={"name"})
        return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def to_version(self, version: int, push_id: str, created_by: str = "") -> PromptVersion:
        return PromptVersion(
            name=self.name, version=version, messages=self.messages, variables=self.variables, params=self.params,
            model_alias=self.model_alias, description=self.description, content_hash=self.content_hash(),
            push_id=push_id, created_by=created_by, created_at=utc_now(),
        )


def definition_of(version: PromptVersion) -> PromptDefinition:
    """The content of a stored version, as a definition (for diffs and re-pushes)."""
    return PromptDefinition(
        name=version.name, description=version.description, model_alias=version.model_alias,
        messages=version.messages, variables=version.variables, params=version.params,
    )
