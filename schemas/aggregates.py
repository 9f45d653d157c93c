"""Per-interval aggregates of one deployment, published by the stream agents for the canary judge.

The judge decides from these events alone (no ClickHouse polling). Counts are exact for the events the
agent saw in the window; ``latency_sample_ms`` is a bounded uniform sample of total_ms, so the judge can
run a rank test on latency without the raw stream.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.envelope import UtcDatetime

MAX_LATENCY_SAMPLE = 1000


class Quantiles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class DeploymentWindow(BaseModel):
    """What one deployment did in one window (e.g. one minute)."""

    model_config = ConfigDict(extra="forbid")

    deployment_id: str = Field(min_length=1, max_length=200)
    model_alias: str = Field(default="", max_length=200)
    window_start: UtcDatetime
    window_seconds: int = Field(ge=1)
    requests: int = Field(ge=0, description="Completions seen in the window, errors included.")
    errors: int = Field(ge=0)
    errors_by_kind: dict[str, int] = Field(default_factory=dict)
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    ttft_ms: Quantiles = Field(default_factory=Quantiles)
    total_ms: Quantiles = Field(default_factory=Quantiles)
    latency_sample_ms: list[float] = Field(default_factory=list, max_length=MAX_LATENCY_SAMPLE)
    safety_findings: int = Field(default=0, ge=0)
    safety_flagged_requests: int = Field(default=0, ge=0, description="Requests with at least one finding.")
    feedback_count: int = Field(default=0, ge=0)
    feedback_score_sum: float = Field(default=0.0, ge=0.0)
    feedback_negative: int = Field(default=0, ge=0, description="Feedback with score < 0.5.")
    cost_total: float = Field(default=0.0, ge=0.0, description="Priced cost of the window's completions (USD).")
    priced_requests: int = Field(default=0, ge=0)
    drift_share: float | None = Field(default=None, ge=0.0, le=1.0, description="Latest drift share, if checked.")
