"""A worker killed with SIGKILL in the middle of its batches and windows, then restarted: the same totals, and every
deployment window is published with exactly the completions ClickHouse holds for it."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

from services.core.clickhouse.migrations import migrate
from services.core.settings import Settings
from streams.config import StreamsConfig
from streams.cost import PriceTable
from tests.streams.helpers import (
    TopicReader,
    WorkerProcess,
    completion_event,
    latest_fragments,
    make_config,
    producer,
    rows,
    scalar,
    wait_until,
)


def _count(settings: Settings, tenant: str) -> int:
    return int(scalar(settings, "SELECT count() FROM raw_completions WHERE tenant_id = {t:String}", t=tenant))


def _progress(settings: Settings, tenant: str) -> tuple[int, int]:
    return (
        int(scalar(settings, "SELECT count() FROM raw_completions FINAL WHERE tenant_id = {t:String}", t=tenant)),
        int(scalar(settings, "SELECT sum(requests) FROM agg_cost_minute FINAL WHERE tenant_id = {t:String}", t=tenant)),
    )


def test_sigkill_mid_batch_and_mid_window_then_restart_gives_the_same_totals_and_every_window(
    local_stack: Settings, unique: str, tmp_path: Path
) -> None:
    settings = local_stack
    migrate(settings)
    config: StreamsConfig = make_config(unique, tmp_path, batch_size=100)
    tenant = f"kill-{unique}"
    deployment = f"{tenant}-dep"
    prices = PriceTable.load(config.prices_path)
    backlog, live = 4000, 600
    expected = Decimal(0)
    tokens = 0
    p = producer(settings)

    def send(i: int) -> None:
        nonlocal expected, tokens
        ev = completion_event(tenant, f"{tenant}-{i}", model_name="gpt-4o", prompt_tokens=100 + i % 97,
                              completion_tokens=i % 13, deployment_id=deployment, model_alias="chat")
        expected += prices.price("gpt-4o", ev.occurred_at, 100 + i % 97, i % 13).total
        tokens += 100 + i % 97 + i % 13
        p.send(config.completions_topic, ev, key=f"{tenant}-{i}")

    for i in range(backlog):
        send(i)
    p.flush()

    stop_live = threading.Event()

    def produce_live() -> None:  # completions keep arriving while the worker dies and comes back (~100/s)
        for i in range(backlog, backlog + live):
            if stop_live.is_set():
                break
            send(i)
            p.flush()
            time.sleep(0.01)

    worker = WorkerProcess(settings, config, tmp_path)
    worker.start()
    live_thread = threading.Thread(target=produce_live, daemon=True)
    try:
        at_kill = wait_until(lambda: (c := _count(settings, tenant)) >= 300 and c, 60, "first batches stored",
                             interval_s=0.1)
        live_thread.start()
        worker.kill()
        stored_when_killed = _count(settings, tenant)
        assert stored_when_killed < backlog, f"the worker finished ({at_kill}) before it was killed; nothing was tested"
        worker.start()
        live_thread.join(60)
        n = backlog + live
        wait_until(lambda: (got := _progress(settings, tenant)) == (n, n) or print(got), 120,
                   "raw rows and aggregates cover all completions after the restart", interval_s=1.0)

        # Every window is published, each fragment with what ClickHouse holds for its (window, partition).
        in_clickhouse = {
            (start.timestamp(), part): count for start, part, count in rows(
                settings, "SELECT toStartOfSecond(occurred_at), src_partition, count() FROM raw_completions FINAL "
                          "WHERE tenant_id = {t:String} GROUP BY 1, 2", t=tenant)
        }
        reader = TopicReader(settings, config.windows_topic)
        try:
            def published() -> dict[tuple[float, int], int]:
                return {(w.window_start.timestamp(), w.source_partition or 0): w.requests
                        for w in latest_fragments(reader.poll()).values() if w.deployment_id == deployment}

            wait_until(lambda: published() == in_clickhouse, 60, "every window published with its stored completions")
        finally:
            reader.close()
    finally:
        stop_live.set()
        status = worker.stop()
    assert status == 0, worker.log()[-3000:]
    assert sum(in_clickhouse.values()) == n
    agg = rows(settings, "SELECT sum(requests), sum(prompt_tokens) + sum(completion_tokens), sum(cost) "
                         "FROM agg_cost_minute FINAL WHERE tenant_id = {t:String}", t=tenant)[0]
    assert (agg[0], agg[1]) == (n, tokens)
    assert Decimal(agg[2]) == expected
    assert scalar(settings, "SELECT sum(requests) FROM agg_latency_minute FINAL WHERE deployment_id = {d:String}",
                  d=deployment) == n
