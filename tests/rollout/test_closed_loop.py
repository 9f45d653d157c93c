"""The loop closed on the real broker: judge and router together. A bad canary's windows lead to a rollback,
and from then on the router sends every request of the alias to stable; a healthy one ends with all on canary."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from schemas import InferenceRequest, Message, RolloutEvent, make_event
from schemas.topics import TopicSpec
from services.kafka.admin import ensure_topics
from services.kafka.producer import EventProducer
from services.rollout.commands import start_rollout
from services.rollout.judge import Judge
from services.rollout.spec import RolloutSpec
from services.rollout.topics import RolloutTopics
from services.router.router import Router, RouterTopics
from services.settings import Settings
from tests.rollout.windows import window

INTERVAL = 10
T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def _setup(settings: Settings, unique: str) -> tuple[RolloutSpec, RolloutTopics, RouterTopics]:
    rollout_topics = RolloutTopics(windows=f"t.win.{unique}", rollouts=f"t.roll.{unique}", specs=f"t.spec.{unique}",
                                   alerts=f"t.alert.{unique}", deadletter=f"t.dl.{unique}")
    router_topics = RouterTopics(requests=f"t.req.{unique}", rollouts=rollout_topics.rollouts,
                                 completions=f"t.comp.{unique}", deadletter=rollout_topics.deadletter)
    ensure_topics(settings, [*rollout_topics.specs_for_creation(1),
                             TopicSpec(router_topics.requests, InferenceRequest, "request_id", 3),
                             TopicSpec(router_topics.completions, InferenceRequest, "request_id", 1)])
    spec = RolloutSpec.model_validate({
        "alias": f"chat-{unique}", "stable": f"v1-{unique}", "canary": f"v2-{unique}", "steps": [25, 50, 100],
        "analysis_interval_seconds": INTERVAL, "min_samples": 50, "failure_threshold": 2,
        "gates": {"error_rate": {"threshold": 0.02}, "p95_latency_ratio": {"threshold": 1.5}},
    })
    return spec, rollout_topics, router_topics


def _publish_windows(settings: Settings, topic: str, spec: RolloutSpec, intervals: range, **canary: object) -> None:
    producer = EventProducer(settings)
    for k in intervals:
        start = T0 + timedelta(seconds=k * INTERVAL)
        for w in (window(spec.stable, start, seconds=INTERVAL, seed=k),
                  window(spec.canary, start, seconds=INTERVAL, seed=100 + k, **canary)):  # type: ignore[arg-type]
            producer.send(topic, make_event(w, source="test", tenant_id="t"), key=w.deployment_id)
    producer.flush()


def _send_requests(settings: Settings, topic: str, alias: str, n: int, tag: str) -> None:
    producer = EventProducer(settings)
    for i in range(n):
        req = InferenceRequest(request_id=f"{tag}-{i}", tenant="t", application="a", model_alias=alias,
                               messages=[Message(role="user", content="hi")], user_id=f"user-{i}")
        producer.send(topic, make_event(req, source="test", tenant_id="t"), key=req.request_id)
    producer.flush()


async def _wait(condition, timeout_s: float = 40.0, what: str = "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _run_loop(settings: Settings, unique: str, canary: dict[str, float], intervals: range) -> tuple[Router, RolloutSpec, RolloutEvent | None]:
    spec, rollout_topics, router_topics = _setup(settings, unique)
    await start_rollout(settings, spec, topics=rollout_topics, started_at=T0)
    judge = Judge(settings, topics=rollout_topics, group_id=f"judge.{unique}", poll_ms=100)
    router = Router(settings, {spec.alias: spec.stable}, group_id=f"router.{unique}", topics=router_topics, poll_ms=100)
    tasks = [asyncio.create_task(judge.run()), asyncio.create_task(router.run())]
    try:
        await asyncio.wait_for(judge.ready.wait(), 30)
        await asyncio.wait_for(router.ready.wait(), 30)
        await _wait(lambda: router.state.weights(spec.alias) == spec.weights(1), what="the start event at the router")

        _publish_windows(settings, rollout_topics.windows, spec, intervals, **canary)

        def final() -> RolloutEvent | None:
            ev = router.state.rollouts.get(spec.alias)
            return ev if ev is not None and ev.action in ("rollback", "promote") else None

        await _wait(lambda: final() is not None, what="a verdict at the router")
        before = dict(router.routed)
        _send_requests(settings, router_topics.requests, spec.alias, 60, f"after-{unique}")
        await _wait(lambda: sum(router.routed.values()) - sum(before.values()) == 60, what="60 routed requests")
        router.routed = {d: n - before.get(d, 0) for d, n in router.routed.items()}
        return router, spec, final()
    finally:
        judge.stop()
        router.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def test_bad_canary_is_rolled_back_and_the_next_requests_all_go_to_stable(local_stack: Settings, unique: str) -> None:
    router, spec, verdict = await _run_loop(local_stack, unique, {"latency_scale": 3.0}, range(3))
    assert verdict is not None and verdict.action == "rollback"
    assert "p95_latency_ratio" in verdict.reason
    assert {d: n for d, n in router.routed.items() if n} == {spec.stable: 60}


async def test_healthy_canary_is_promoted_and_the_next_requests_all_go_to_canary(local_stack: Settings, unique: str) -> None:
    router, spec, verdict = await _run_loop(local_stack, unique, {}, range(4))
    assert verdict is not None and verdict.action == "promote"
    assert {d: n for d, n in router.routed.items() if n} == {spec.canary: 60}
