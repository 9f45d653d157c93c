"""The loop closed on the real broker: the judge (its Faust app, as a process) and the router together. A bad
canary's windows lead to a rollback, and from then on the router sends every request of the alias to stable; a
healthy one ends with all on the canary."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas import InferenceRequest, Message, RolloutEvent, make_event
from schemas.topics import TopicSpec
from services.core.kafka.admin import ensure_topics
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings
from services.rollout.commands import start_rollout
from services.rollout.judge_app import JudgeConfig
from services.rollout.spec import RolloutSpec
from services.router.router import Router, RouterTopics
from tests.rollout.helpers import JudgeProcess, eventually, judge_config, publish_windows
from tests.rollout.windows import window

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def _setup(settings: Settings, unique: str) -> tuple[RolloutSpec, JudgeConfig, RouterTopics]:
    config = judge_config(settings, unique, windows_partitions=1)
    router_topics = RouterTopics(requests=f"t.req.{unique}", rollouts=config.rollouts_topic,
                                 completions=f"t.comp.{unique}", deadletter=config.deadletter_topic)
    ensure_topics(settings, [TopicSpec(router_topics.requests, InferenceRequest, "request_id", 3),
                             TopicSpec(router_topics.completions, InferenceRequest, "request_id", 1)])
    spec = RolloutSpec.model_validate({
        "alias": f"chat-{unique}", "stable": f"v1-{unique}", "canary": f"v2-{unique}", "steps": [25, 50, 100],
        "alpha": 0.01, "min_samples": 50, "min_step_seconds": 5,
        "gates": {"error_rate": {"max_ratio": 1.0, "margin": 0.05}, "slow_request_rate": {"margin": 0.05}},
    })
    return spec, config, router_topics


def _publish_windows(settings: Settings, topic: str, spec: RolloutSpec, seconds: range, **canary: object) -> None:
    """1-second windows at 400 req/s, split by the first step (the canary's shaped by ``canary``)."""
    share = spec.canary_share(1)
    windows = [window(spec.stable, T0 - timedelta(seconds=k), requests=400, seed=500 + k) for k in range(1, 6)]
    for k in seconds:
        start = T0 + timedelta(seconds=k)
        windows += [window(spec.stable, start, requests=round(400 * (1 - share)), seed=k, routing_weight=1 - share),
                    window(spec.canary, start, requests=round(400 * share), seed=100 + k, routing_weight=share,
                           **canary)]  # type: ignore[arg-type]  # overrides typed as object
    publish_windows(settings, topic, windows, spec.alias)


def _send_requests(settings: Settings, topic: str, alias: str, n: int, tag: str) -> None:
    producer = EventProducer(settings)
    for i in range(n):
        req = InferenceRequest(request_id=f"{tag}-{i}", tenant="t", application="a", model_alias=alias,
                               messages=[Message(role="user", content="hi")], user_id=f"user-{i}")
        producer.send(topic, make_event(req, source="test", tenant_id="t"), key=req.request_id)
    producer.flush()


async def _run_loop(settings: Settings, unique: str, tmp: Path, canary: dict[str, float], seconds: range,
                    ) -> tuple[Router, RolloutSpec, RolloutEvent | None]:
    spec, config, router_topics = _setup(settings, unique)
    await start_rollout(settings, spec, topics=config.topics, started_at=T0)
    router = Router(settings, {spec.alias: spec.stable}, group_id=f"router.{unique}", topics=router_topics, poll_ms=100)
    tasks = [asyncio.create_task(router.run())]
    judge = JudgeProcess(settings, config, tmp).start()
    try:
        await asyncio.wait_for(router.ready.wait(), 30)
        await eventually(lambda: router.state.weights(spec.alias) == spec.weights(1), what="the start event at the router")

        _publish_windows(settings, config.windows_topic, spec, seconds, **canary)

        def final() -> RolloutEvent | None:
            ev = router.state.rollouts.get(spec.alias)
            return ev if ev is not None and ev.action in ("rollback", "promote") else None

        await eventually(lambda: final() is not None, timeout_s=60, what="a verdict at the router")
        before = dict(router.routed)
        _send_requests(settings, router_topics.requests, spec.alias, 60, f"after-{unique}")
        await eventually(lambda: sum(router.routed.values()) - sum(before.values()) == 60, what="60 routed requests")
        router.routed = {d: n - before.get(d, 0) for d, n in router.routed.items()}
        return router, spec, final()
    finally:
        assert judge.stop() == 0
        router.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def test_bad_canary_is_rolled_back_and_the_next_requests_all_go_to_stable(
        local_stack: Settings, unique: str, tmp_path: Path) -> None:
    router, spec, verdict = await _run_loop(local_stack, unique, tmp_path, {"latency_scale": 3.0}, range(20))
    assert verdict is not None and verdict.action == "rollback"
    assert "slow_request_rate" in verdict.reason
    assert {d: n for d, n in router.routed.items() if n} == {spec.stable: 60}


async def test_healthy_canary_is_promoted_and_the_next_requests_all_go_to_canary(
        local_stack: Settings, unique: str, tmp_path: Path) -> None:
    router, spec, verdict = await _run_loop(local_stack, unique, tmp_path, {}, range(60))
    assert verdict is not None and verdict.action == "promote"
    assert {d: n for d, n in router.routed.items() if n} == {spec.canary: 60}
