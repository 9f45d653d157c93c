"""A worker killed with SIGKILL in the middle of its batches and restarted gives exactly the same totals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from services.clickhouse.migrations import migrate
from services.settings import REPO_ROOT, Settings
from streams.config import StreamsConfig
from streams.cost import PriceTable
from streams.worker import prepare
from tests.streams.helpers import completion_event, make_config, producer, rows, scalar, wait_until


def _start(settings: Settings, config_file: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO_ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "streams.worker", "--config", str(config_file)],
                                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _count(settings: Settings, tenant: str) -> int:
    return int(scalar(settings, "SELECT count() FROM raw_completions WHERE tenant_id = {t:String}", t=tenant))


def _progress(settings: Settings, tenant: str) -> tuple[int, int]:
    return (
        int(scalar(settings, "SELECT count() FROM raw_completions FINAL WHERE tenant_id = {t:String}", t=tenant)),
        int(scalar(settings, "SELECT sum(requests) FROM agg_cost_minute FINAL WHERE tenant_id = {t:String}", t=tenant)),
    )


def test_sigkill_mid_batch_then_restart_gives_the_same_totals(local_stack: Settings, unique: str,
                                                                tmp_path: Path) -> None:
    settings = local_stack
    migrate(settings)
    config: StreamsConfig = make_config(unique, tmp_path, batch_size=100, batch_interval_s=0.2)
    prepare(settings, config)
    config_file = tmp_path / "streams.json"
    config_file.write_text(config.model_dump_json())
    tenant = f"kill-{unique}"
    prices = PriceTable.load(config.prices_path)
    n = 6000
    expected = Decimal(0)
    tokens = 0
    p = producer(settings)
    for i in range(n):
        ev = completion_event(tenant, f"{tenant}-{i}", model_name="gpt-4o", prompt_tokens=100 + i % 97,
                              completion_tokens=i % 13, deployment_id=f"{tenant}-dep")
        expected += prices.price("gpt-4o", ev.occurred_at, 100 + i % 97, i % 13).total
        tokens += 100 + i % 97 + i % 13
        p.send(config.completions_topic, ev, key=f"{tenant}-{i}")
    p.flush()

    log = tmp_path / "worker.log"
    first = _start(settings, config_file, log)
    try:
        at_kill = wait_until(lambda: (c := _count(settings, tenant)) >= 300 and c, 60, "first batches stored",
                             interval_s=0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    time.sleep(0.5)
    stored_when_killed = _count(settings, tenant)
    assert stored_when_killed < n, f"the worker finished ({at_kill}) before it was killed; nothing was tested"

    second = _start(settings, config_file, log)
    try:
        wait_until(lambda: (got := _progress(settings, tenant)) == (n, n) or print(got), 90,
                   "raw rows and aggregates cover all completions after the restart", interval_s=1.0)
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(30)
        except subprocess.TimeoutExpired:
            second.kill()
    assert scalar(settings, "SELECT count() FROM raw_completions FINAL WHERE tenant_id = {t:String}", t=tenant) == n
    agg = rows(settings, "SELECT sum(requests), sum(prompt_tokens) + sum(completion_tokens), sum(cost) "
                         "FROM agg_cost_minute FINAL WHERE tenant_id = {t:String}", t=tenant)[0]
    assert (agg[0], agg[1]) == (n, tokens)
    assert Decimal(agg[2]) == expected
    assert scalar(settings, "SELECT sum(requests) FROM agg_latency_minute FINAL WHERE deployment_id = {d:String}",
                  d=f"{tenant}-dep") == n
    assert second.returncode == 0, log.read_text()[-3000:]
