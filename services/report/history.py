"""What the report draws, read from ClickHouse: a rollout's decisions (``rollout_decisions``, written by the judge),
the latency of both sides' completions while it ran (``raw_completions``) and the drift checks (``drift_checks``).

The rollout is the alias's latest one (by the last decision written) unless a rollout id is given. Per gate, the
judge records the statistic it compared with the threshold (``gate_observed``) and, since migration 0040, both
sides' values (``gate_canary_value``/``gate_stable_value``); the values are read when the columns exist.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from pydantic import BaseModel, Field


class GatePoint(BaseModel):
    """One gate at one decision."""

    gate: str
    passed: bool
    status: str = ""
    observed: float | None = None
    threshold: float | None = None
    canary: float | None = None
    stable: float | None = None
    detail: str = ""


class Decision(BaseModel):
    at: datetime
    action: str
    step: int
    weights: dict[str, float]
    reason: str
    canary_requests: int
    stable_requests: int
    gates: list[GatePoint] = Field(default_factory=list)


class DriftCheck(BaseModel):
    deployment_id: str
    checked_at: datetime
    drift_share: float
    share_threshold: float
    dataset_drifted: bool
    per_feature: dict[str, Any] = Field(default_factory=dict)


class RolloutHistory(BaseModel):
    alias: str
    rollout_id: str
    stable_deployment: str
    canary_deployment: str
    decisions: list[Decision]
    latency_ms: dict[str, list[float]] = Field(description="deployment -> total_ms of its completions during the rollout")
    ttft_ms: dict[str, list[float]] = Field(default_factory=dict)
    drift_checks: list[DriftCheck] = Field(default_factory=list)

    @property
    def started(self) -> datetime:
        return self.decisions[0].at

    @property
    def ended(self) -> datetime:
        return self.decisions[-1].at

    @property
    def outcome(self) -> str:
        return self.decisions[-1].action


class NoRollout(LookupError):
    """The alias has no decisions in ClickHouse."""


_OPTIONAL_GATE_COLUMNS = ("gate_status", "gate_canary_value", "gate_stable_value")


def load_history(client: Client, alias: str, rollout_id: str | None = None) -> RolloutHistory:
    """The alias's latest rollout (or ``rollout_id``) with its decisions in time order, latencies and drift checks."""
    if rollout_id is None:
        rows = client.query(
            "SELECT rollout_id FROM rollout_decisions FINAL WHERE alias = {alias:String} "
            "ORDER BY written_at DESC, interval_end DESC LIMIT 1", parameters={"alias": alias},
        ).result_rows
        if not rows:
            raise NoRollout(f"no rollout decisions for alias {alias!r} in ClickHouse")
        rollout_id = str(rows[0][0])
    present = {r[0] for r in client.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'rollout_decisions'"
    ).result_rows}
    optional = [c if c in present else "arrayMap(g -> NULL, gate)" for c in _OPTIONAL_GATE_COLUMNS]
    result = client.query(
        "SELECT interval_end, action, step, weights, reason, canary_requests, stable_requests, stable_deployment, "
        "canary_deployment, gate, gate_passed, gate_observed, gate_threshold, gate_detail, " + ", ".join(optional) +
        " FROM rollout_decisions FINAL WHERE alias = {alias:String} AND rollout_id = {rid:String} "
        "ORDER BY interval_end, interval_index", parameters={"alias": alias, "rid": rollout_id},
    )
    decisions: list[Decision] = []
    stable = canary = ""
    for row in result.result_rows:
        (at, action, step, weights, reason, canary_n, stable_n, stable_dep, canary_dep, gates, passed, observed,
         thresholds, details, statuses, canary_values, stable_values) = row
        stable = stable or stable_dep
        canary = canary or canary_dep
        decisions.append(Decision(
            at=at, action=action, step=step, weights=dict(weights), reason=reason, canary_requests=canary_n,
            stable_requests=stable_n,
            gates=[
                GatePoint(gate=g, passed=bool(p), status=s or "", observed=o, threshold=t, canary=c, stable=sv, detail=d)
                for g, p, o, t, d, s, c, sv in zip(
                    gates, passed, observed, thresholds, details, statuses or [None] * len(gates),
                    canary_values, stable_values, strict=True,
                )
            ],
        ))
    if not decisions:
        raise NoRollout(f"no decisions for rollout {rollout_id!r} of alias {alias!r}")
    history = RolloutHistory(
        alias=alias, rollout_id=rollout_id, stable_deployment=stable, canary_deployment=canary, decisions=decisions,
        latency_ms={}, ttft_ms={},
    )
    deployments = [d for d in (stable, canary) if d]
    window = {"deps": deployments, "t0": history.started, "t1": history.ended}
    for dep, total, ttft in client.query(
        "SELECT deployment_id, groupArray(total_ms), groupArray(ttft_ms) FROM raw_completions FINAL "
        "WHERE deployment_id IN {deps:Array(String)} AND occurred_at >= {t0:DateTime64(3)} - INTERVAL 1 MINUTE "
        "AND occurred_at <= {t1:DateTime64(3)} AND error_kind = '' GROUP BY deployment_id", parameters=window,
    ).result_rows:
        history.latency_ms[dep] = [float(x) for x in total]
        history.ttft_ms[dep] = [float(x) for x in ttft if x is not None]
    history.drift_checks = [
        DriftCheck(deployment_id=d, checked_at=at, drift_share=share, share_threshold=thr, dataset_drifted=bool(drifted),
                   per_feature=json.loads(per) if per else {})
        for d, at, share, thr, drifted, per in client.query(
            "SELECT deployment_id, checked_at, drift_share, share_threshold, dataset_drifted, per_feature FROM drift_checks "
            "WHERE deployment_id IN {deps:Array(String)} AND checked_at >= {t0:DateTime64(3)} - INTERVAL 1 MINUTE "
            "AND checked_at <= {t1:DateTime64(3)} + INTERVAL 1 MINUTE ORDER BY checked_at", parameters=window,
        ).result_rows
    ]
    return history
