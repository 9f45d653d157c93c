"""Drift through the worker: a deployment whose traffic shifts is flagged (row + alert), a steady one is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from schemas import Completion, make_event
from services.core.clickhouse.migrations import migrate
from services.core.settings import Settings
from tests.streams.helpers import WorkerProcess, make_config, producer, rows, scalar, wait_until

WORDS = ["the", "model", "answer", "request", "cost", "token", "latency", "user", "data", "system", "question", "result",
         "value", "stream", "window", "report", "table", "query", "error", "retry", "cache", "price", "budget", "tenant",
         "deploy"]


def traffic(tenant: str, deployment: str, n: int, seed: int, length_scale: float = 1.0,
            latency_scale: float = 1.0) -> list[Completion]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tokens = max(1, int(rng.lognormal(4.0, 0.5) * length_scale))
        ttft = float(rng.lognormal(5.0, 0.4)) * latency_scale
        out.append(Completion(
            request_id=f"{deployment}-{seed}-{i}", tenant=tenant, deployment_id=deployment, model_name="gpt-4o-mini",
            finish_reason="length" if rng.random() < 0.08 else "stop",
            text=" ".join(str(WORDS[rng.integers(len(WORDS))]) for _ in range(max(1, int(tokens * 0.75)))),
            prompt_tokens=int(rng.lognormal(5.0, 0.5)), completion_tokens=tokens, ttft_ms=ttft,
            total_ms=ttft + tokens * float(rng.lognormal(3.0, 0.2)) * latency_scale,
        ))
    return out


def test_shifted_window_is_flagged_and_steady_one_is_not_and_a_restart_keeps_the_reference(
    local_stack: Settings, unique: str, tmp_path: Path
) -> None:
    migrate(local_stack)
    window = 200
    config = make_config(unique, tmp_path, drift_enabled=True, drift_reference_size=window,
                         drift_current_size=window, drift_check_every=window, drift_check_interval_s=600)
    tenant = f"drift-{unique}"
    steady, shifted = f"{tenant}-steady", f"{tenant}-shifted"
    p = producer(local_stack)

    def send(plan: dict[str, list[Completion]]) -> None:
        for deployment, completions in plan.items():
            for c in completions:  # one key per deployment: one partition, so the order (reference first) holds
                p.send(config.completions_topic, make_event(c, source="test", tenant_id=tenant), key=deployment)
        p.flush()

    def checks(n: int) -> dict[str, list[tuple[Any, ...]]]:
        got: dict[str, list[tuple[Any, ...]]] = {}
        for r in rows(local_stack, "SELECT deployment_id, dataset_drifted, drift_share, reference_size, current_size "
                                   "FROM drift_checks FINAL WHERE deployment_id IN {d:Array(String)} ORDER BY checked_at",
                      d=[steady, shifted]):
            got.setdefault(str(r[0]), []).append(r[1:])
        return got if len(got) == 2 and all(len(v) >= n for v in got.values()) else {}

    def drift_alerts() -> list[tuple[object, ...]]:
        return rows(local_stack, "SELECT deployment_id FROM alerts_log WHERE kind = 'drift' "
                                 "AND deployment_id IN {d:Array(String)}", d=[steady, shifted])

    worker = WorkerProcess(local_stack, config, tmp_path, "first")
    worker.start()
    try:
        send({steady: traffic(tenant, steady, window, 1) + traffic(tenant, steady, window, 2),
              shifted: traffic(tenant, shifted, window, 3) + traffic(tenant, shifted, window, 4, length_scale=3.0,
                                                                      latency_scale=2.0)})
        first = wait_until(lambda: checks(1), 120, "a drift check of both deployments")
        wait_until(drift_alerts, 30, "the drift alert")
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    assert first[steady][0][0] == 0 and first[steady][0][2:] == (window, window)
    assert first[shifted][0][0] == 1 and first[shifted][0][1] >= config.drift_share_threshold
    assert scalar(local_stack, "SELECT uniqExact(deployment_id), count() FROM drift_references "
                               "WHERE deployment_id IN {d:Array(String)}", d=[steady, shifted]) == 2

    # A restarted worker compares new traffic with the persisted references: one window of new completions is
    # checked at once (without them, it would have become the new reference and nothing would be checked).
    worker = WorkerProcess(local_stack, config, tmp_path, "second")
    worker.start()
    try:
        send({steady: traffic(tenant, steady, window, 5),
              shifted: traffic(tenant, shifted, window, 6, length_scale=3.0, latency_scale=2.0)})
        second = wait_until(lambda: checks(2), 120, "a second drift check of both deployments after the restart")
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    assert worker.log().count("reference restored from ClickHouse") == 2
    assert second[steady][1][0] == 0 and second[steady][1][2:] == (window, window)
    assert second[shifted][1][0] == 1
    assert drift_alerts() == [(shifted,)], "the drift incident was still open: no second alert"
