"""The judge's metrics after a real rollout: `python -m services.rollout.judge_app` with a metrics port, windows of a
canary three times slower than stable, and its /metrics scraped (parsed with prometheus_client) once it rolled back."""

from __future__ import annotations

from pathlib import Path

from schemas.rollouts import RolloutEvent
from services.core.settings import Settings
from services.infra.process import free_port
from services.rollout.commands import start_rollout
from tests.observability.scrape import Scrape, scrape
from tests.rollout.helpers import JudgeProcess, collect, judge_config, publish_windows
from tests.rollout.test_judge import T0, _before_start, _spec, _traffic
from tests.streams.helpers import wait_until


async def test_judge_metrics_after_a_rollback(local_stack: Settings, unique: str, tmp_path: Path) -> None:
    port = free_port()
    settings = local_stack.model_copy(update={"metrics_port": port})
    config = judge_config(settings, unique)
    spec = _spec(unique)
    await start_rollout(settings, spec, topics=config.topics, started_at=T0)
    url = f"http://127.0.0.1:{port}/metrics"
    with JudgeProcess(settings, config, tmp_path):
        publish_windows(settings, config.topics.windows, _before_start(spec) + _traffic(spec, range(30), latency_scale=3.0),
                        spec.alias)
        events: list[RolloutEvent] = await collect(settings, config.topics.rollouts,
                                                   lambda es: any(e.action == "rollback" for e in es), what="a rollback")

        def rolled_back() -> Scrape | None:
            s = scrape(url)
            return s if s.total("llmops_rollout_decisions_total", alias=spec.alias, action="rollback") == 1 else None

        after = wait_until(rolled_back, 30, "the rollback in the judge's metrics")
        assert after is not None
    rollback = events[-1]
    assert after.total("llmops_rollout_decisions_total", alias=spec.alias, action="start") == 1
    assert after.total("llmops_rollout_weight", alias=spec.alias, deployment=spec.canary, role="canary") == 0.0
    assert after.total("llmops_rollout_weight", alias=spec.alias, deployment=spec.stable, role="stable") == 1.0
    gate = next(g for g in rollback.gates if g.gate == "slow_request_rate")
    assert after.total("llmops_rollout_gate_value", alias=spec.alias, gate=gate.gate, side="canary") == gate.canary_value
    assert after.total("llmops_rollout_gate_statistic", alias=spec.alias, gate=gate.gate, quantity="e_value") == gate.e_value
    assert after.total("llmops_events_processed_total", service="judge", topic=config.topics.windows) >= 30
    assert after.has("process_resident_memory_bytes")
