"""Per-window aggregates of one deployment, published by the stream agents for the canary judge.

The judge decides from these events alone (no ClickHouse polling). Counts are exact for the events the
agent saw in the window; ``latency_sample_ms`` is a bounded uniform sample of total_ms, so the judge can
run a rank test on latency without the raw stream, and ``latency_histogram`` counts every request in
log-spaced buckets (:func:`latency_bucket`), so the number of requests slower than any bucket bound is exact.

A window may be a *fragment*: with ``source_partition`` set, it covers only the completions read from that
partition of the completions topic (each stream worker owns some partitions). The judge sums the fragments
of one (deployment, window_start); a fragment published again for the same (deployment, window_start,
source_partition, prompt_id, prompt_version) replaces the earlier copy (a late event, or a replay after a restart).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from schemas.envelope import UtcDatetime

MAX_LATENCY_SAMPLE = 1000
LATENCY_BUCKETS_PER_DOUBLING = 8
"""Resolution of ``latency_histogram``: bucket bounds grow by 2**(1/8) (about 9 %)."""


def latency_bucket(ms: float) -> int:
    """The histogram bucket of a latency: bucket ``i`` holds values in (upper(i-1), upper(i)]; <= 1 ms is bucket 0."""
    if not ms > 1.0:  # also NaN
        return 0
    return max(0, math.ceil(math.log2(ms) * LATENCY_BUCKETS_PER_DOUBLING - 1e-9))


def latency_bucket_upper(index: int) -> float:
    """The inclusive upper bound (ms) of a histogram bucket."""
    return float(2.0 ** (index / LATENCY_BUCKETS_PER_DOUBLING))


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

    # Added for the sequential judge (all optional, so older windows still decode).
    source_partition: int | None = Field(
        default=None, ge=0,
        description="Partition of the completions topic this fragment covers; None: every partition.",
    )
    prompt_version: str | None = Field(
        default=None, max_length=100, description="Prompt version of the window's requests, when they named one."
    )
    prompt_id: str | None = Field(
        default=None, max_length=200, description="Registry prompt of the window's requests, when they named one."
    )
    routing_weight: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="Mean share of the alias's traffic the router gave this deployment when it routed the window's "
        "requests (from InferenceRequest.routing_weight); None when unknown.",
    )
    latency_histogram: dict[int, int] = Field(
        default_factory=dict,
        description="total_ms of every request by log bucket (schemas.aggregates.latency_bucket) -> count.",
    )
    feedback_score_sumsq: float = Field(default=0.0, ge=0.0, description="Sum of squared feedback scores.")
    cost_sumsq: float = Field(default=0.0, ge=0.0, description="Sum of squared per-request costs (USD^2).")

    def slower_than(self, bucket: int) -> int:
        """Requests whose latency lies above the upper bound of ``bucket`` (exact, from the histogram)."""
        return sum(n for b, n in self.latency_histogram.items() if b > bucket)
