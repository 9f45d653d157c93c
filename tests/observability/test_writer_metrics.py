"""The ClickHouse writer's metrics after real inserts: duration, rows written, rows rejected (a poison row)."""

from __future__ import annotations

import asyncio

from services.core import metrics
from services.core.clickhouse.client import connect
from services.core.clickhouse.writer import ClickHouseWriter
from services.core.settings import Settings
from tests.observability.scrape import Scrape


def test_insert_metrics_move(local_stack: Settings, unique: str) -> None:
    table = f"obs_writer_{unique}"
    connect(local_stack).command(f"CREATE TABLE {table} (id UInt32, text String) ENGINE = MergeTree ORDER BY id")
    rows: list[list[object]] = [[i, f"row {i}"] for i in range(100)]
    rows[37] = [37, "lone surrogate \ud800"]  # refused while serializing: a poison row
    before = Scrape(metrics.exposition().decode())

    async def write() -> None:
        writer = ClickHouseWriter(local_stack, name="obs-test")
        result = await writer.insert(table, rows, ["id", "text"])
        assert result.written == 99 and [r.index for r in result.rejected] == [37]

    asyncio.run(asyncio.wait_for(write(), 120))
    after = Scrape(metrics.exposition().decode())
    for name, moved in (("llmops_clickhouse_rows_written_total", 99), ("llmops_clickhouse_rows_rejected_total", 1),
                        ("llmops_clickhouse_insert_duration_seconds_count", 1)):
        assert after.total(name, table=table) - before.total(name, table=table) == moved, name
    assert after.total("llmops_clickhouse_insert_duration_seconds_sum", table=table) > 0
