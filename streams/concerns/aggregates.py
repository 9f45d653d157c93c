"""Per-minute aggregates, recomputed from the raw tables for every minute a stored batch touched.

``MinuteAggregator.touch(minutes)`` marks minutes dirty after their batch is in ClickHouse; ``flush``
runs one ``INSERT INTO agg_* SELECT ... FROM <source> FINAL`` per aggregate table for all dirty minutes.
The aggregate tables are ReplacingMergeTree on ``computed_at``, so a recomputation replaces the row of
the same (minute, dimensions): any replay or late event converges to the totals of the raw tables.
Minutes stay dirty until a recomputation that started after their last touch succeeded (a batch stored while a
recomputation of its minute is running touches it again, and that recomputation may not have seen it); on start,
``recover`` marks the minutes of recently ingested raw rows dirty, so a crash between storing a batch and aggregating
it loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from services.core.clickhouse.writer import ClickHouseWriter

log = logging.getLogger(__name__)

_WHERE = "toStartOfMinute(occurred_at) IN {minutes:Array(DateTime('UTC'))}"

AGGREGATE_SQL: dict[str, str] = {
    "agg_cost_minute": f"""INSERT INTO agg_cost_minute (minute, tenant_id, deployment_id, model_name, prompt_id, prompt_version,
    requests, prompt_tokens, completion_tokens, cached_tokens, unpriced, cost, computed_at)
SELECT toStartOfMinute(occurred_at) AS minute, tenant_id, deployment_id, model_name, prompt_id, prompt_version,
       count(), sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), countIf(priced = 0),
       toDecimal128(sum(ifNull(cost, toDecimal128(0, 12))), 12), now64(3)
FROM cost_completions FINAL WHERE {_WHERE}
GROUP BY minute, tenant_id, deployment_id, model_name, prompt_id, prompt_version""",
    "agg_latency_minute": f"""INSERT INTO agg_latency_minute
SELECT toStartOfMinute(occurred_at) AS minute, deployment_id, count(), countIf(kind != ''),
       sumMapIf(map(kind, toUInt64(1)), kind != ''),
       quantilesState(0.5, 0.95, 0.99)(ttft_ms), quantilesState(0.5, 0.95, 0.99)(total_ms), now64(3)
FROM (
    SELECT occurred_at, deployment_id, ttft_ms, total_ms,
           multiIf(error_kind != '', toString(error_kind), finish_reason = 'error', 'internal',
                   finish_reason = 'deadline', 'deadline_exceeded', '') AS kind
    FROM raw_completions FINAL WHERE {_WHERE}
)
GROUP BY minute, deployment_id""",
    "agg_safety_minute": f"""INSERT INTO agg_safety_minute
SELECT toStartOfMinute(occurred_at) AS minute, deployment_id, scanned, category, action,
       count(), uniqExact(request_id), now64(3)
FROM safety_findings FINAL WHERE {_WHERE}
GROUP BY minute, deployment_id, scanned, category, action""",
}


class MinuteAggregator:
    """Dirty minutes and their recomputation."""

    def __init__(self, writer: ClickHouseWriter) -> None:
        self.writer = writer
        self._dirty: dict[datetime, int] = {}
        """Dirty minutes, each with the number of the touch that last marked it."""
        self._touches = 0
        self._lock = asyncio.Lock()
        self.recomputed = 0
        """Minutes recomputed so far."""

    def touch(self, minutes: Iterable[datetime]) -> None:
        """Mark minutes (any datetime in them; naive ones are UTC) for recomputation."""
        for m in minutes:
            m = m.replace(tzinfo=UTC) if m.tzinfo is None else m.astimezone(UTC)
            self._touches += 1
            self._dirty[m.replace(second=0, microsecond=0)] = self._touches

    @property
    def pending(self) -> int:
        return len(self._dirty)

    async def recover(self, hours: float) -> int:
        """Mark dirty the minutes of completions ingested in the last ``hours``; returns how many."""
        if hours <= 0:
            return 0
        rows = await self.writer.query(
            "SELECT DISTINCT toStartOfMinute(occurred_at) FROM raw_completions "
            "WHERE ingested_at >= now64(3) - toIntervalSecond({s:UInt64})",
            {"s": int(hours * 3600)},
        )
        self.touch(r[0] for r in rows)
        return len(rows)

    async def flush(self) -> int:
        """Recompute every dirty minute; returns how many."""
        async with self._lock:
            if not self._dirty:
                return 0
            snapshot = dict(self._dirty)
            minutes = sorted(snapshot)
            for sql in AGGREGATE_SQL.values():
                await self.writer.command(sql, {"minutes": minutes})
            for minute, touch in snapshot.items():
                if self._dirty.get(minute) == touch:  # not touched again while it was being recomputed
                    del self._dirty[minute]
            self.recomputed += len(minutes)
            return len(minutes)
