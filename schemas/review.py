"""Review items: completions queued for a human to label (safe or unsafe), and why.

The stream worker queues a completion when a safety score falls in a configurable gray band, when its
feedback is low, or when a rollout flagged its deployment. The human's label comes back as a ``Feedback``
event with ``source="human"`` (schemas/feedback.py), so it reaches the quality aggregates and the judge
like any feedback; an item is pending until such feedback exists for its request.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ReviewReason = Literal["injection_gray_band", "toxicity_gray_band", "low_feedback", "rollout_flag"]


class ReviewItem(BaseModel):
    """One completion to review. Texts are stored redacted (PII always removed), never raw."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    deployment_id: str | None = Field(default=None, max_length=200)
    reasons: list[ReviewReason] = Field(min_length=1)
    injection_score: float | None = Field(default=None, ge=0.0, le=1.0, description="Highest of prompt and completion.")
    toxicity_score: float | None = Field(default=None, ge=0.0, le=1.0, description="Highest of prompt and completion.")
    feedback_score: float | None = Field(default=None, ge=0.0, le=1.0)
    detail: str = Field(default="", max_length=2_000, description="e.g. the rollout decision that flagged the deployment.")
    prompt_text: str | None = Field(default=None, description="Redacted; None when the queueing event had no text.")
    text: str | None = Field(default=None, description="Redacted completion; None when the queueing event had no text.")
