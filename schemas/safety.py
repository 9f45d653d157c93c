"""Safety findings: what a scanner found in a prompt or completion (never the raw value)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SafetyCategory = Literal["pii", "prompt_injection", "toxicity"]


class SafetySpan(BaseModel):
    """Where in the scanned text a hit is: character offsets, end exclusive."""

    model_config = ConfigDict(extra="forbid")

    start: int = Field(ge=0)
    end: int = Field(ge=0)
    kind: str = Field(min_length=1, max_length=100, description="e.g. 'email', 'credit_card', 'ignore_previous'.")


class SafetyFinding(BaseModel):
    """One scanner hit on one request."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    deployment_id: str | None = Field(default=None, max_length=200)
    scanned: Literal["prompt", "completion"]
    category: SafetyCategory
    score: float = Field(ge=0.0, le=1.0)
    spans: list[SafetySpan] = Field(default_factory=list)
    action: Literal["flag", "redact", "block"] = "flag"
