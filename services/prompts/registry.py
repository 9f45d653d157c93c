"""The registry's state, rebuilt from ``llm.prompts`` events, and rendering a request's ``PromptRef`` with it.

Rules that make every reader agree:
* a version number belongs to the FIRST ``PromptVersion`` of that (name, number) in topic order (one
  partition, so the order is total); a later record for the same number lost a race and is ignored;
* a label points at the version of its LATEST ``PromptLabel`` event (labels move).

``PromptRef.version`` may be a number (``"3"``), a label (``"production"``) or ``"latest"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.prompts import PromptLabel, PromptVersion
from schemas.requests import GenerationParams, InferenceRequest, PromptRef
from services.prompts.render import render


class UnknownPrompt(LookupError):
    """No such prompt, version or label; the message lists what exists."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown prompt"


@dataclass
class PromptRegistry:
    versions: dict[str, dict[int, PromptVersion]] = field(default_factory=dict)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)

    def apply(self, event: PromptVersion | PromptLabel) -> bool:
        """Apply one event; False when it is a losing duplicate of a version number."""
        if isinstance(event, PromptVersion):
            by_number = self.versions.setdefault(event.name, {})
            if event.version in by_number:
                return by_number[event.version].push_id == event.push_id
            by_number[event.version] = event
            return True
        self.labels.setdefault(event.name, {})[event.label] = event.version
        return True

    def names(self) -> list[str]:
        return sorted(self.versions)

    def latest(self, name: str) -> PromptVersion | None:
        by_number = self.versions.get(name)
        return by_number[max(by_number)] if by_number else None

    def labels_of(self, name: str, version: int | None = None) -> list[str]:
        return sorted(label for label, v in self.labels.get(name, {}).items() if version is None or v == version)

    def get(self, name: str, ref: str | int = "latest") -> PromptVersion:
        """The version a reference names, or UnknownPrompt saying what exists."""
        by_number = self.versions.get(name)
        if not by_number:
            known = ", ".join(self.names()) or "none"
            raise UnknownPrompt(f"unknown prompt {name!r} (known: {known})")
        ref = str(ref)
        if ref == "latest":
            return by_number[max(by_number)]
        if ref.isdigit():
            number = int(ref)
            if number not in by_number:
                raise UnknownPrompt(f"prompt {name!r} has no version {number} (versions 1..{max(by_number)})")
            return by_number[number]
        label_map = self.labels.get(name, {})
        if ref not in label_map:
            labels = ", ".join(sorted(label_map)) or "none"
            raise UnknownPrompt(f"prompt {name!r} has no label {ref!r} (labels: {labels}; or a version number, or 'latest')")
        return by_number[label_map[ref]]

    def render_request(self, request: InferenceRequest, version: str | None = None) -> InferenceRequest:
        """The request with its PromptRef resolved and rendered into ``messages``.

        ``version`` overrides the reference's version (a prompt-version rollout picked it). The returned request
        keeps ``prompt`` with the concrete version number (so completions carry prompt_id and prompt_version);
        the prompt's stored parameters apply to every generation parameter the request left at its default.
        Requests without a PromptRef, or already rendered, are returned as they are.
        Raises UnknownPrompt or RenderError (both say what is wrong).
        """
        ref = request.prompt
        if ref is None or request.messages is not None:
            return request
        stored = self.get(ref.prompt_id, version or ref.version)
        messages = render(stored, ref.variables)
        return InferenceRequest.model_validate({
            **dict(request),
            "messages": messages,
            "prompt": PromptRef(prompt_id=ref.prompt_id, version=str(stored.version), variables=ref.variables),
            "params": merged_params(request.params, stored),
        })


def merged_params(params: GenerationParams, stored: PromptVersion) -> GenerationParams:
    """The request's parameters, with the prompt's stored value for each one left at the schema default."""
    defaults = GenerationParams()
    update = {
        name: value
        for name, value in stored.params.model_dump(exclude_none=True).items()
        if getattr(params, name) == getattr(defaults, name)
    }
    return params.model_copy(update=update) if update else params
