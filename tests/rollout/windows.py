"""Synthetic deployment windows for the rollout tests."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from schemas.aggregates import DeploymentWindow


def window(
    deployment: str, start: datetime, *, requests: int = 500, error_rate: float = 0.01, latency_ms: float = 200.0,
    latency_scale: float = 1.0, seconds: int = 10, seed: int = 0, flagged: int = 0, feedback: tuple[int, float] = (0, 0.0),
    cost_per_request: float = 0.001, drift_share: float | None = None, alias: str = "",
) -> DeploymentWindow:
    """A window with exact error counts and a lognormal latency sample (seeded, so tests are deterministic)."""
    rng = np.random.default_rng(seed)
    sample = (rng.lognormal(np.log(latency_ms), 0.3, size=min(requests, 1000)) * latency_scale).tolist()
    return DeploymentWindow(
        deployment_id=deployment, model_alias=alias, window_start=start, window_seconds=seconds, requests=requests,
        errors=round(requests * error_rate), latency_sample_ms=sample, safety_flagged_requests=flagged,
        safety_findings=flagged, feedback_count=feedback[0], feedback_score_sum=feedback[0] * feedback[1],
        cost_total=cost_per_request * requests, priced_requests=requests, drift_share=drift_share,
    )


def at(t0: datetime, seconds: float) -> datetime:
    return t0 + timedelta(seconds=seconds)
