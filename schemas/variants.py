"""Rollout variants: what one share of an alias's traffic runs — a deployment, optionally with a pinned prompt version.

A model canary compares two deployments (``chat-v1`` vs ``chat-v2``). A prompt-version canary compares two
versions of one registry prompt on the same deployment: its variants are ``<deployment>/<prompt_id>@<version>``
(``chat-v1/summarize@3`` vs ``chat-v1/summarize@4``). Variant ids are the keys of ``RolloutEvent.weights`` and
the ``stable``/``canary`` of a rollout spec. The router sends a request to the variant's deployment and, when
the request names the variant's prompt, renders that prompt at the variant's version; the judge counts a
deployment window for a variant when its deployment (and, for a prompt variant, its prompt version) match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.ids import validate_deployment_id

_PROMPT_PART = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,99})@([0-9]{1,9})$")


@dataclass(frozen=True)
class Variant:
    deployment: str
    prompt_id: str | None = None
    prompt_version: str | None = None

    @property
    def id(self) -> str:
        if self.prompt_id is None:
            return self.deployment
        return f"{self.deployment}/{self.prompt_id}@{self.prompt_version}"

    def matches(self, deployment_id: str, prompt_version: str | None, prompt_id: str | None = None) -> bool:
        """Whether traffic (a window, a completion) of this deployment and prompt belongs to the variant.

        ``prompt_id`` may be unknown (None: e.g. a window of an older stream worker); then only the version is compared.
        """
        if deployment_id != self.deployment:
            return False
        if self.prompt_id is None:
            return True
        return prompt_version == self.prompt_version and (prompt_id is None or prompt_id == self.prompt_id)


def parse_variant(text: str) -> Variant:
    """``deployment`` or ``deployment/prompt_id@version``; ValueError saying what is wrong."""
    deployment, sep, prompt = text.partition("/")
    validate_deployment_id(deployment)
    if not sep:
        return Variant(deployment)
    match = _PROMPT_PART.match(prompt)
    if match is None:
        raise ValueError(f"invalid variant {text!r}: expected <deployment>/<prompt_id>@<version number>")
    return Variant(deployment, match.group(1), match.group(2))
