"""Per-minute aggregates on the real ClickHouse: a batch stored while its minute is being recomputed is not lost
(the recomputation may not have seen it, so the minute stays dirty and the next flush counts it); two prompts with
the same version number on one deployment are rows of their own."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from services.core.clickhouse.client import connect
from services.core.clickhouse.writer import ClickHouseWriter
from services.core.settings import Settings
from streams.concerns.aggregates import MinuteAggregator

COLUMNS = ["tenant_id", "occurred_at", "request_id", "deployment_id", "model_name", "prompt_id", "prompt_version",
           "prompt_tokens", "completion_tokens", "cached_tokens", "priced", "cost", "currency", "src_topic", "src_partition",
           "src_offset"]


def _store(settings: Settings, tenant: str, minute: datetime, request_id: str, prompt_id: str = "") -> None:
    connect(settings).insert("cost_completions", [[tenant, minute, request_id, "dep", "m", prompt_id, "v1", 10, 5, 0, 0,
                                                   None, "USD", "t", 0, 0]], column_names=COLUMNS)


def _requests(settings: Settings, tenant: str) -> int:
    rows = connect(settings).query("SELECT sum(requests) FROM agg_cost_minute FINAL WHERE tenant_id = {t:String}",
                                   parameters={"t": tenant}).result_rows
    return int(rows[0][0])


def test_a_minute_touched_during_its_recomputation_stays_dirty(local_stack: Settings, unique: str) -> None:
    tenant = f"agg-{unique}"
    minute = datetime.now(UTC).replace(second=0, microsecond=0)

    async def scenario() -> tuple[int, int]:
        aggregator = MinuteAggregator(ClickHouseWriter(local_stack, name="aggregates"))
        _store(local_stack, tenant, minute, "r1")
        aggregator.touch([minute])
        flush = asyncio.create_task(aggregator.flush())
        await asyncio.sleep(0)  # the flush runs up to its first statement, which goes to a thread
        assert aggregator.writer._lock.locked(), "the recomputation is not running"
        # A batch stored and touched meanwhile (synchronously: the flush cannot finish in between).
        _store(local_stack, tenant, minute, "r2")
        aggregator.touch([minute])
        assert not flush.done()
        await flush
        pending = aggregator.pending
        await aggregator.flush()
        return pending, aggregator.pending

    pending_after_first, pending_after_second = asyncio.run(asyncio.wait_for(scenario(), timeout=60))
    assert pending_after_first == 1, "the minute touched during its recomputation was marked clean"
    assert pending_after_second == 0
    assert _requests(local_stack, tenant) == 2


def test_prompts_with_the_same_version_are_separate_rows(local_stack: Settings, unique: str) -> None:
    tenant = f"aggp-{unique}"
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    for i, prompt in enumerate(["summarize", "summarize", "translate"]):
        _store(local_stack, tenant, minute, f"r{i}", prompt)

    async def recompute_twice() -> None:
        aggregator = MinuteAggregator(ClickHouseWriter(local_stack, name="aggregates"))
        for _ in range(2):  # a recomputation replaces the rows of the same key
            aggregator.touch([minute])
            await aggregator.flush()

    asyncio.run(asyncio.wait_for(recompute_twice(), timeout=60))
    rows = connect(local_stack).query(
        "SELECT prompt_id, prompt_version, requests FROM agg_cost_minute FINAL WHERE tenant_id = {t:String} ORDER BY prompt_id",
        parameters={"t": tenant}).result_rows
    assert rows == [("summarize", "v1", 2), ("translate", "v1", 1)]
