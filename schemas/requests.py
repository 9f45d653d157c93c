"""Inference requests: what a producer (gateway, service) asks a model alias to generate."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.envelope import UtcDatetime

Role = Literal["system", "user", "assistant", "tool"]


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str = Field(max_length=1_000_000)


class PromptRef(BaseModel):
    """A reference to a versioned prompt template plus the variables to fill it with."""

    model_config = ConfigDict(extra="forbid")

    prompt_id: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=100)
    variables: dict[str, str] = Field(default_factory=dict)


class GenerationParams(BaseModel):
    """Sampling parameters, with the ranges every engine accepts."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=128, ge=1, le=32_768)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: list[str] = Field(default_factory=list, max_length=16)
    stream: bool = True


class FallbackRecord(BaseModel):
    """Why a request was retried on its alias's fallback deployment (at most once)."""

    model_config = ConfigDict(extra="forbid")

    from_deployment: str = Field(min_length=1, max_length=200, description="The deployment that failed first.")
    reason: Literal["error", "timeout"]
    error_kind: str | None = Field(default=None, max_length=100, description="The failed completion's error kind.")
    message: str = Field(default="", max_length=2_000)


class InferenceRequest(BaseModel):
    """A request for one completion from a model alias (or a pinned deployment)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    tenant: str = Field(min_length=1, max_length=200)
    application: str = Field(min_length=1, max_length=200)
    model_alias: str = Field(min_length=1, max_length=200)
    deployment_id: str | None = Field(default=None, max_length=200, description="Set by the router, or pinned.")
    messages: list[Message] | None = Field(
        default=None, min_length=1, description="The conversation; with 'prompt' too, the rendered prompt."
    )
    prompt: PromptRef | None = Field(
        default=None, description="A registry prompt; the router renders it into 'messages' and keeps it as provenance."
    )
    params: GenerationParams = Field(default_factory=GenerationParams)
    priority: int = Field(default=0, ge=0, le=9, description="Higher is served first.")
    deadline: UtcDatetime | None = Field(default=None, description="Drop with an error after this instant.")
    user_id: str | None = Field(default=None, max_length=200)
    session_id: str | None = Field(default=None, max_length=200)
    routing_weight: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="Set by the router: the share of the alias's traffic its deployment had when this was routed.",
    )
    reply_to: str | None = Field(
        default=None, max_length=249,
        description="A reply topic (llm.replies.<instance>): the completion and the streamed chunks are also "
        "published there, so a waiting producer reads only its own replies.",
    )
    fallback: FallbackRecord | None = Field(
        default=None,
        description="Set on the one retry of a request on its alias's fallback deployment; copied onto the completion.",
    )

    @model_validator(mode="after")
    def _messages_or_prompt(self) -> InferenceRequest:
        if self.messages is None and self.prompt is None:
            raise ValueError("one of 'messages' or 'prompt' must be given")
        if self.messages is not None and self.prompt is not None and not self.prompt.version.isdigit():
            raise ValueError(
                "'messages' with 'prompt' is a rendered prompt reference: its version must be the rendered version number"
            )
        return self

    @property
    def needs_rendering(self) -> bool:
        """A prompt reference not rendered yet (the router renders it before dispatch)."""
        return self.messages is None

    def sticky_key(self) -> str:
        """The key that keeps a user (or session) on one deployment during a rollout."""
        return self.user_id or self.session_id or self.request_id

    def is_expired(self, now: datetime) -> bool:
        return self.deadline is not None and now >= self.deadline
