"""Drift through the worker: a deployment whose traffic shifts is flagged (row + alert), a steady one is not."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from schemas import Completion, make_event
from services.clickhouse.migrations import migrate
from services.settings import Settings
from tests.streams.helpers import WorkerThread, make_config, producer, rows, wait_until

WORDS = ("the model answer request cost token latency user data system question result value stream window "
         "report table query error retry cache price budget tenant deploy").split()


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


def test_shifted_window_is_flagged_and_steady_one_is_not(local_stack: Settings, unique: str, tmp_path: Path) -> None:
    migrate(local_stack)
    window = 200
    config = make_config(unique, tmp_path, drift_enabled=True, drift_reference_size=window,
                         drift_current_size=window, drift_check_every=window, drift_check_interval_s=600)
    tenant = f"drift-{unique}"
    steady, shifted = f"{tenant}-steady", f"{tenant}-shifted"
    plan = {
        steady: traffic(tenant, steady, window, 1) + traffic(tenant, steady, window, 2),
        shifted: traffic(tenant, shifted, window, 3) + traffic(tenant, shifted, window, 4, length_scale=3.0,
                                                               latency_scale=2.0),
    }
    worker = WorkerThread(local_stack, config).start()
    try:
        p = producer(local_stack)
        for deployment, completions in plan.items():
            for c in completions:  # one key per deployment: one partition, so the order (reference first) holds
                p.send(config.completions_topic, make_event(c, source="test", tenant_id=tenant), key=deployment)
        p.flush()
        checks = wait_until(
            lambda: (got := {r[0]: r[1:] for r in rows(
                local_stack, "SELECT deployment_id, dataset_drifted, drift_share, reference_size, current_size "
                             "FROM drift_checks FINAL WHERE deployment_id IN {d:Array(String)}", d=[steady, shifted])})
            and len(got) == 2 and got, 90, "a drift check of both deployments")
    finally:
        worker.stop()
    assert checks[steady][0] == 0 and checks[steady][2:] == (window, window)
    assert checks[shifted][0] == 1 and checks[shifted][1] >= config.drift_share_threshold
    alerts = rows(local_stack, "SELECT deployment_id FROM alerts_log FINAL WHERE kind = 'drift' "
                               "AND deployment_id IN {d:Array(String)}", d=[steady, shifted])
    assert alerts == [(shifted,)]
