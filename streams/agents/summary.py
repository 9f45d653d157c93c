"""Per-deployment window summaries for the rollout judge, computed from the converged ClickHouse aggregates.

:func:`window_summaries` reads one window (e.g. the minute that just closed) from ``agg_latency_minute``,
``agg_cost_minute``, ``safety_findings``, ``v_feedback_minute`` and ``drift_checks`` (all FINAL, so the
numbers are the deduplicated totals) and returns one :class:`DeploymentWindowSummary` per deployment with
traffic in it. The model is the payload we asked to register in ``schemas/`` (event type
``stream.deployment_window``); until it is registered, nothing is published (the codec cannot encode it).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from streams.sink.clickhouse import ClickHouseWriter


class WindowPercentiles(BaseModel):
    """p50/p95/p99 in ms; None when the window had no value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class DeploymentWindowSummary(BaseModel):
    """What one deployment did in one window: traffic, errors, latency, safety, feedback, cost, drift."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deployment_id: str = Field(min_length=1, max_length=200)
    window_start: datetime
    window_seconds: int = Field(gt=0)
    requests: int = Field(ge=0)
    errors: int = Field(ge=0)
    errors_by_kind: dict[str, int] = Field(default_factory=dict)
    ttft_ms: WindowPercentiles
    total_ms: WindowPercentiles
    safety_findings: int = Field(ge=0, description="Findings on completion text.")
    safety_requests: int = Field(ge=0, description="Requests whose completion had at least one finding.")
    feedback_count: int = Field(ge=0, description="Feedback on this window's completions received so far.")
    feedback_mean: float | None = None
    feedback_share_negative: float | None = Field(default=None, description="Share of scores < 0.5.")
    cost_total: Decimal = Field(description="Cost of the priced completions.")
    unpriced: int = Field(ge=0, description="Completions of models with no price (not in cost_total).")
    cost_per_request: Decimal | None = None
    drift_share: float | None = Field(default=None, description="Latest drift check before the window's end.")


def _pct(values: Any) -> WindowPercentiles:
    cleaned = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in values or []]
    if len(cleaned) != 3:
        return WindowPercentiles()
    return WindowPercentiles(p50=cleaned[0], p95=cleaned[1], p99=cleaned[2])


async def window_summaries(writer: ClickHouseWriter, start: datetime, seconds: int) -> list[DeploymentWindowSummary]:
    """Summaries of every deployment with completions in ``[start, start + seconds)``."""
    start = start.astimezone(UTC)
    end = start + timedelta(seconds=seconds)
    params = {"s": start, "e": end}
    window = "minute >= {s:DateTime('UTC')} AND minute < {e:DateTime('UTC')}"
    latency = await writer.query(
        "SELECT deployment_id, sum(requests), sum(errors), sumMap(errors_by_kind), "
        "quantilesMerge(0.5, 0.95, 0.99)(ttft_state), quantilesMerge(0.5, 0.95, 0.99)(total_state) "
        f"FROM agg_latency_minute FINAL WHERE {window} GROUP BY deployment_id ORDER BY deployment_id", params)
    cost = {r[0]: r[1:] for r in await writer.query(
        "SELECT deployment_id, sum(cost), sum(unpriced), sum(requests) - sum(unpriced) "
        f"FROM agg_cost_minute FINAL WHERE {window} GROUP BY deployment_id", params)}
    safety = {r[0]: r[1:] for r in await writer.query(
        "SELECT deployment_id, count(), uniqExact(request_id) FROM safety_findings FINAL "
        "WHERE occurred_at >= {s:DateTime('UTC')} AND occurred_at < {e:DateTime('UTC')} AND scanned = 'completion' "
        "GROUP BY deployment_id", params)}
    feedback = {r[0]: r[1:] for r in await writer.query(
        "SELECT deployment_id, sum(feedback), sum(mean_score * feedback) / sum(feedback), "
        f"sum(share_negative * feedback) / sum(feedback) FROM v_feedback_minute WHERE {window} "
        "GROUP BY deployment_id", params)}
    drift = {r[0]: r[1] for r in await writer.query(
        "SELECT deployment_id, argMax(drift_share, checked_at) FROM drift_checks "
        "WHERE checked_at < {e:DateTime('UTC')} GROUP BY deployment_id", params)}

    out = []
    for dep, requests, errors, by_kind, ttft, total in latency:
        cost_total, unpriced, priced = cost.get(dep, (Decimal(0), 0, 0))
        findings, flagged = safety.get(dep, (0, 0))
        fb_count, fb_mean, fb_negative = feedback.get(dep, (0, None, None))
        cost_total = Decimal(str(cost_total or 0))
        out.append(DeploymentWindowSummary(
            deployment_id=dep, window_start=start, window_seconds=seconds, requests=int(requests),
            errors=int(errors), errors_by_kind={str(k): int(v) for k, v in (by_kind or {}).items()},
            ttft_ms=_pct(ttft), total_ms=_pct(total), safety_findings=int(findings), safety_requests=int(flagged),
            feedback_count=int(fb_count), feedback_mean=None if not fb_count else float(fb_mean),
            feedback_share_negative=None if not fb_count else float(fb_negative),
            cost_total=cost_total, unpriced=int(unpriced),
            cost_per_request=(cost_total / int(priced)) if priced else None,
            drift_share=None if dep not in drift else float(drift[dep]),
        ))
    return out
