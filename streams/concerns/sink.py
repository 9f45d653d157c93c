"""The sink: ClickHouse writes of the stream agents, one writer (client) per table so a batch's tables go in parallel.

Every table the agents write is keyed so that a repeated insert collapses (ReplacingMergeTree), so a batch may be
written again after any failure or replay. An insert returns only once ClickHouse acknowledged it; while the
server is unreachable the writer retries (the agent is blocked, so it stops consuming and acks nothing). Rows the
server rejects (a value it cannot store) come back as ``(index, reason)`` so the caller dead-letters their events
and the rest of the batch is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from services.core.clickhouse.writer import ClickHouseWriter
from services.core.settings import Settings

Rejected = list[tuple[int, str]]


class Sink:
    """Writers by table, created on first use."""

    def __init__(self, settings: Settings, *, retry_initial_s: float, retry_max_s: float) -> None:
        self.settings = settings
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._writers: dict[str, ClickHouseWriter] = {}

    def writer(self, name: str) -> ClickHouseWriter:
        """The writer of a table (or of any named job: queries, aggregates)."""
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = ClickHouseWriter(
                self.settings, retry_initial_s=self.retry_initial_s, retry_max_s=self.retry_max_s, name=f"sink.{name}")
        return writer

    async def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> Rejected:
        """Insert rows; returns the rejected ones (index into ``rows``, the server's reason)."""
        if not rows:
            return []
        result = await self.writer(table).insert(table, rows, columns)
        return [(r.index, r.reason) for r in result.rejected]

    async def insert_all(self, tables: Sequence[tuple[str, Sequence[Sequence[Any]], Sequence[str]]]
                         ) -> dict[str, Rejected]:
        """Insert into several tables in parallel; the rejected rows per table."""
        results = await asyncio.gather(*(self.insert(table, rows, columns) for table, rows, columns in tables))
        return {table: rejected for (table, _, _), rejected in zip(tables, results, strict=True) if rejected}

    @property
    def failures(self) -> int:
        """Failed ClickHouse attempts so far (each was retried)."""
        return sum(w.failures for w in self._writers.values())
