"""The judge's ClickHouse rows: its decisions (``rollout_decisions``, migrations 0020 and 0040) and the windows it
read (``rollout_windows``, 0041 and 0042: one row per fragment), and reading a rollout's windows back. Idempotent:
every table is a ReplacingMergeTree on its key, read with FINAL.

A decision's key is (alias, rollout_id, interval_index, action), interval_index being the decision's event time in
milliseconds since the rollout started (start and abort rows: -1), so a decision written again after a restart
replaces its row. The functions here build rows and SQL; the caller runs them through the retrying
:class:`services.core.clickhouse.writer.ClickHouseWriter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from schemas.aggregates import DeploymentWindow
from schemas.rollouts import RolloutEvent

DECISIONS = "rollout_decisions"
DECISION_COLUMNS = [
    "alias", "rollout_id", "interval_index", "action", "interval_start", "interval_end", "step", "stable_deployment",
    "canary_deployment", "weights", "reason", "consecutive_failures", "canary_requests", "stable_requests", "gate",
    "gate_passed", "gate_observed", "gate_threshold", "gate_canary_samples", "gate_stable_samples", "gate_detail",
    "step_seconds", "gate_status", "gate_canary_value", "gate_stable_value", "gate_e_value", "gate_e_threshold",
    "gate_worse_low", "gate_worse_high", "gate_margin",
]
WINDOWS = "rollout_windows"
WINDOW_COLUMNS = ["deployment_id", "window_start", "source_partition", "prompt_id", "prompt_version", "payload"]


def decision_row(event: RolloutEvent, started_at: datetime, step_started_at: datetime, at: datetime) -> list[Any]:
    """The row of one decision of the judge, decided at event time ``at``."""
    g = event.gates
    index = round((at - started_at).total_seconds() * 1000)
    return [
        event.alias, event.rollout_id, index, event.action, step_started_at, at, event.step, event.stable_deployment,
        event.canary_deployment or "", dict(event.weights), event.reason, 0, event.canary_requests or 0,
        event.stable_requests or 0, [x.gate for x in g], [int(x.passed) for x in g], [x.observed for x in g],
        [x.threshold for x in g], [x.canary_samples for x in g], [x.stable_samples for x in g], [x.detail for x in g],
        event.step_seconds, [x.status or "" for x in g], [x.canary_value for x in g], [x.stable_value for x in g],
        [x.e_value for x in g], [x.e_threshold for x in g], [x.worse_low for x in g], [x.worse_high for x in g],
        [x.margin for x in g],
    ]


def command_row(event: RolloutEvent, at: datetime) -> list[Any]:
    """The row of a start or abort (written by whoever published it; interval_index -1)."""
    return [
        event.alias, event.rollout_id, -1, event.action, at, at, event.step, event.stable_deployment,
        event.canary_deployment or "", dict(event.weights), event.reason, 0, 0, 0, [], [], [], [], [], [], [],
        None, [], [], [], [], [], [], [], [],
    ]


def window_row(w: DeploymentWindow) -> list[Any]:
    """A window as stored (its latency sample dropped when the histogram says more)."""
    stored = w.model_copy(update={"latency_sample_ms": []}) if w.latency_histogram else w
    return [w.deployment_id, w.window_start, -1 if w.source_partition is None else w.source_partition,
            w.prompt_id or "", w.prompt_version or "", stored.model_dump_json()]


def windows_query(deployments: list[str], since: datetime) -> tuple[str, dict[str, Any]]:
    """SQL and parameters for the stored windows of ``deployments`` starting at or after ``since``."""
    sql = (f"SELECT payload FROM {WINDOWS} FINAL WHERE deployment_id IN {{deps:Array(String)}} "
           "AND window_start >= {since:DateTime64(3)} ORDER BY window_start, deployment_id, source_partition")
    return sql, {"deps": deployments, "since": since}


def windows_of(rows: Sequence[Sequence[Any]]) -> list[DeploymentWindow]:
    return [DeploymentWindow.model_validate_json(r[0]) for r in rows]
