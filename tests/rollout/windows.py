"""Synthetic deployment windows for the rollout tests, carrying what the stream worker publishes for the judge."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from schemas.aggregates import DeploymentWindow, latency_bucket


def window(
    deployment: str, start: datetime, *, requests: int = 500, error_rate: float = 0.01, latency_ms: float = 200.0,
    latency_scale: float = 1.0, seconds: int = 1, seed: int = 0, flagged: int = 0,
    feedback: tuple[int, float] = (0, 0.0), cost_per_request: float = 0.001, drift_share: float | None = None,
    alias: str = "", source_partition: int | None = None, routing_weight: float | None = None,
) -> DeploymentWindow:
    """A window with exact error counts and a lognormal latency histogram (seeded, so tests are deterministic).

    ``feedback`` is (count, mean): scores 1 with probability mean, else 0 (sum and sum of squares exact).
    Costs vary by +-20% around ``cost_per_request``.
    """
    rng = np.random.default_rng(seed)
    latency = rng.lognormal(np.log(latency_ms), 0.3, size=requests) * latency_scale
    histogram: dict[int, int] = {}
    for ms in latency:
        b = latency_bucket(float(ms))
        histogram[b] = histogram.get(b, 0) + 1
    scores = (rng.random(feedback[0]) < feedback[1]).astype(float)
    costs = cost_per_request * rng.uniform(0.8, 1.2, size=requests)
    return DeploymentWindow(
        deployment_id=deployment, model_alias=alias, window_start=start, window_seconds=seconds, requests=requests,
        errors=round(requests * error_rate), latency_sample_ms=latency[:1000].tolist(), latency_histogram=histogram,
        safety_flagged_requests=flagged, safety_findings=flagged, feedback_count=feedback[0],
        feedback_score_sum=float(scores.sum()), feedback_score_sumsq=float((scores * scores).sum()),
        cost_total=float(costs.sum()), cost_sumsq=float((costs * costs).sum()), priced_requests=requests,
        drift_share=drift_share, source_partition=source_partition, routing_weight=routing_weight,
    )


def at(t0: datetime, seconds: float) -> datetime:
    return t0 + timedelta(seconds=seconds)
