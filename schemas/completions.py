"""Completions and streamed chunks, published by inference replicas."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.requests import FallbackRecord

FinishReason = Literal["stop", "length", "eos", "error", "deadline"]


class CompletionError(BaseModel):
    """Why a request produced no (or a partial) completion."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal[
        "deadline_exceeded",
        "prompt_too_long",
        "invalid_params",
        "unknown_deployment",
        "unknown_alias",
        "overloaded",
        "internal",
    ]
    message: str = Field(max_length=10_000)


class CompletionChunk(BaseModel):
    """A piece of generated text, in order, while the completion is being produced."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    deployment_id: str = Field(min_length=1, max_length=200)
    index: int = Field(ge=0, description="0-based position of this chunk in the stream.")
    text: str


class Completion(BaseModel):
    """The final result of one request, success or error."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    tenant: str = Field(min_length=1, max_length=200)
    application: str = Field(default="", max_length=200)
    model_alias: str = Field(default="", max_length=200)
    deployment_id: str = Field(min_length=1, max_length=200)
    model_name: str = Field(default="", max_length=500)
    model_version: str = Field(default="", max_length=200)
    prompt_id: str | None = Field(default=None, max_length=200)
    prompt_version: str | None = Field(default=None, max_length=100)
    prompt_text: str = Field(default="", description="The rendered prompt, for safety scanning and drift.")
    text: str = ""
    finish_reason: FinishReason
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    cached_tokens: int = Field(default=0, ge=0)
    queue_ms: float = Field(default=0.0, ge=0.0)
    ttft_ms: float | None = Field(default=None, ge=0.0)
    total_ms: float = Field(default=0.0, ge=0.0)
    error: CompletionError | None = None
    routing_weight: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Copied from the request: the router's weight for this deployment."
    )
    cached: bool = Field(
        default=False, description="Answered from the gateway's response cache: no model ran, so its cost is 0."
    )
    fallback: FallbackRecord | None = Field(
        default=None, description="Copied from the request: this answer came from the alias's fallback deployment."
    )
