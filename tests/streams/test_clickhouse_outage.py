"""ClickHouse down for 20 s while events keep coming: the worker retries, acks nothing meanwhile (its committed
offsets stay where they were), and loses and duplicates nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from services.core.clickhouse.migrations import migrate
from services.core.settings import Settings
from services.infra.clickhouse_server import LocalClickHouse
from services.infra.process import free_port
from streams.cost import PriceTable
from tests.streams.helpers import (
    WorkerProcess,
    committed,
    completion_event,
    make_config,
    producer,
    rows,
    scalar,
    wait_until,
)

OUTAGE_S = 20.0


@pytest.fixture
def own_clickhouse(local_stack: Settings, tmp_path: Path) -> Iterator[tuple[Settings, LocalClickHouse]]:
    """The session's broker with a ClickHouse server of this test's own (so stopping it disturbs no one)."""
    settings = local_stack.model_copy(update={
        "data_dir": tmp_path / "ch", "clickhouse_http_port": free_port(), "clickhouse_tcp_port": free_port(),
    })
    server = LocalClickHouse(settings)
    settings.data_dir.mkdir(parents=True)
    server.start()
    try:
        migrate(settings)
        yield settings, server
    finally:
        server.stop()


def test_clickhouse_outage_loses_and_duplicates_nothing(own_clickhouse: tuple[Settings, LocalClickHouse],
                                                       unique: str, tmp_path: Path) -> None:
    settings, server = own_clickhouse
    config = make_config(unique, tmp_path, batch_size=100, retry_initial_s=0.2, retry_max_s=2.0)
    tenant = f"outage-{unique}"
    prices = PriceTable.load(config.prices_path)
    expected = Decimal(0)
    worker = WorkerProcess(settings, config, tmp_path).start()
    try:
        p = producer(settings)

        def send(lo: int, hi: int) -> None:
            nonlocal expected
            for i in range(lo, hi):
                ev = completion_event(tenant, f"{tenant}-{i}", prompt_tokens=50 + i % 7, completion_tokens=i % 11)
                expected += prices.price(ev.payload.model_name, ev.occurred_at, 50 + i % 7, i % 11).total
                p.send(config.completions_topic, ev, key=f"{tenant}-{i}")
            p.flush()

        send(0, 500)
        wait_until(lambda: scalar(settings, "SELECT count() FROM raw_completions FINAL WHERE tenant_id = {t:String}",
                                  t=tenant) == 500, 30, "first half stored")
        topic = [config.completions_topic]
        wait_until(lambda: committed(settings, config.group_id, topic) == 500, 30, "the first half committed")
        server.stop()
        send(500, 1000)
        time.sleep(OUTAGE_S)  # the outage itself: a duration, not a condition
        assert "insert into raw_completions" in worker.log() and "failed" in worker.log(), "ClickHouse was never down"
        assert committed(settings, config.group_id, topic) == 500, "offsets were committed while no insert succeeded"
        server.start()

        wait_until(lambda: scalar(settings, "SELECT sum(requests) FROM agg_cost_minute FINAL WHERE tenant_id = {t:String}",
                                  t=tenant) == 1000, 60, "every completion aggregated after the outage")
        assert scalar(settings, "SELECT count() FROM raw_completions FINAL WHERE tenant_id = {t:String}", t=tenant) == 1000
        assert Decimal(rows(settings, "SELECT sum(cost) FROM agg_cost_minute FINAL WHERE tenant_id = {t:String}",
                            t=tenant)[0][0]) == expected
        # Nothing was skipped: every source offset of the topic is present exactly once after dedup.
        assert scalar(settings, "SELECT uniqExact(src_partition, src_offset) FROM raw_completions FINAL "
                                "WHERE tenant_id = {t:String}", t=tenant) == 1000
    finally:
        status = worker.stop()
    assert status == 0, worker.log()[-3000:]
