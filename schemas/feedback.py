"""Feedback on a completion, from end users or automatic graders."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Feedback(BaseModel):
    """A score (0..1, higher is better) and optional label for one request's completion."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    score: float = Field(ge=0.0, le=1.0)
    label: str | None = Field(default=None, max_length=200)
    comment: str | None = Field(default=None, max_length=10_000)
    source: Literal["user", "grader", "human_review", "human"] = Field(
        default="user", description="'human': a label recorded with `llmops review` (the review queue).",
    )
