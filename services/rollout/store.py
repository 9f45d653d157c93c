"""Decisions into ClickHouse (``rollout_decisions``, migration 0020): one row per judged interval, idempotent.

The key is (alias, rollout_id, interval_index, action); a row written again after a restart replaces the
earlier one. Inserts are blocking calls: the judge runs them in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clickhouse_connect.driver.client import Client

from schemas.rollouts import RolloutEvent

TABLE = "rollout_decisions"
COLUMNS = [
    "alias", "rollout_id", "interval_index", "action", "interval_start", "interval_end", "step", "stable_deployment",
    "canary_deployment", "weights", "reason", "consecutive_failures", "canary_requests", "stable_requests", "gate",
    "gate_passed", "gate_observed", "gate_threshold", "gate_canary_samples", "gate_stable_samples", "gate_detail",
]


def decision_row(
    event: RolloutEvent, interval_index: int, interval_start: datetime, interval_end: datetime,
    consecutive_failures: int, canary_requests: int, stable_requests: int,
) -> list[Any]:
    """The row of one decision (start and abort: interval_index -1)."""
    g = event.gates
    return [
        event.alias, event.rollout_id, interval_index, event.action, interval_start, interval_end, event.step,
        event.stable_deployment, event.canary_deployment or "", dict(event.weights), event.reason,
        min(consecutive_failures, 65535), canary_requests, stable_requests,
        [x.gate for x in g], [int(x.passed) for x in g], [x.observed for x in g], [x.threshold for x in g],
        [x.canary_samples for x in g], [x.stable_samples for x in g], [x.detail for x in g],
    ]


def insert_rows(client: Client, rows: list[list[Any]]) -> None:
    if rows:
        client.insert(TABLE, rows, column_names=COLUMNS)
