"""The router on the real broker: weights from the rollouts topic, the routing weight on every routed request,
a rollback followed live, unknown aliases answered, bad input dead-lettered, restarts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer

from schemas import Completion, InferenceRequest, Message, RolloutEvent, decode, make_event
from schemas.topics import TopicSpec
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import aiokafka_consumer_kwargs
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings
from services.router.router import Router, RouterTopics, publish_rollout
from services.router.weights import choose
from tests.notifier.helpers import wait_until


def _topics(settings: Settings, unique: str) -> RouterTopics:
    topics = RouterTopics(
        requests=f"t.req.{unique}", rollouts=f"t.roll.{unique}", completions=f"t.comp.{unique}", deadletter=f"t.dl.{unique}"
    )
    ensure_topics(settings, [
        TopicSpec(topics.requests, InferenceRequest, "request_id", 3),
        TopicSpec(topics.rollouts, RolloutEvent, "alias", 1, cleanup_policy="compact", retention_ms=None),
        TopicSpec(topics.completions, Completion, "request_id", 1),
        TopicSpec(topics.deadletter, Completion, "x", 1),
        TopicSpec(f"t.reply.{unique}", Completion, "request_id", 1),
    ])
    return topics


def _rollout(alias: str, weights: dict[str, float], action: str = "step_up") -> RolloutEvent:
    stable, canary = sorted(weights)[0], sorted(weights)[-1]
    return RolloutEvent(alias=alias, rollout_id="ro-1", stable_deployment=stable, canary_deployment=canary,
                        action=action, step=1, weights=weights, reason="test")


def _send_requests(settings: Settings, topic: str, alias: str, users: list[str], tag: str, **fields: Any) -> None:
    producer = EventProducer(settings)
    for user in users:
        req = InferenceRequest(request_id=f"{tag}-{user}", tenant="t", application="a", model_alias=alias,
                               messages=[Message(role="user", content="hi")], user_id=user, **fields)
        producer.send(topic, make_event(req, source="test", tenant_id="t"), key=req.request_id)
    producer.flush()


async def _read(settings: Settings, topic: str, n: int, timeout_s: float = 30.0) -> list[Any]:
    """Exactly the first ``n`` payloads of ``topic`` (read from the beginning); fails if fewer arrive in time."""
    consumer = AIOKafkaConsumer(topic, **aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n:
            assert time.monotonic() < deadline, f"only {len(out)} of {n} messages on {topic} after {timeout_s}s"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out += [decode(r.value, r.headers).payload for r in records]
    finally:
        await consumer.stop()
    return out


async def test_routes_by_weights_rolls_back_live_and_restarts_with_same_weights(local_stack: Settings, unique: str) -> None:
    topics = _topics(local_stack, unique)
    alias, stable, canary = f"chat{unique}", f"s-{unique}", f"c-{unique}"
    half = {stable: 0.5, canary: 0.5}
    await publish_rollout(local_stack, _rollout(alias, half), topics.rollouts)

    router = Router(local_stack, {alias: stable}, group_id=f"router.{unique}", topics=topics)
    task = asyncio.create_task(router.run())
    try:
        await wait_until(lambda: router.ready.is_set() or task.done(), 30, "the router to read the rollouts")
        assert router.state.weights(alias) == half

        users = [f"u{i}" for i in range(40)]
        _send_requests(local_stack, topics.requests, alias, users, "a")
        expected_canary = sorted(u for u in users if choose(half, alias, u) == canary)
        assert 0 < len(expected_canary) < len(users)
        got = await _read(local_stack, f"llm.dispatch.{canary}", len(expected_canary))
        assert sorted(r.user_id for r in got) == expected_canary
        assert all(r.deployment_id == canary and r.routing_weight == 0.5 for r in got)

        # Roll back: the running router follows (no restart), and the next requests all go to stable with weight 1.
        # (How fast: within one poll interval, 200 ms here; a timing, so measured by bench/rollback_e2e.py, not here.)
        await publish_rollout(local_stack, _rollout(alias, {stable: 1.0, canary: 0.0}, "rollback"), topics.rollouts)
        await wait_until(lambda: router.state.weights(alias) == {stable: 1.0, canary: 0.0}, 10, "the rollback")
        before = router.routed.get(stable, 0)
        _send_requests(local_stack, topics.requests, alias, users, "b")
        await wait_until(lambda: router.routed.get(stable, 0) >= before + len(users), 30, "40 requests routed to stable")
        assert router.routed.get(stable, 0) == before + len(users)
        assert router.routed.get(canary, 0) == len(expected_canary)
        on_stable = await _read(local_stack, f"llm.dispatch.{stable}", before + len(users))
        assert [r.routing_weight for r in on_stable if r.request_id.startswith("b-")] == [1.0] * len(users)

        # Unknown alias: an error completion, never silence, also on the producer's reply topic.
        _send_requests(local_stack, topics.requests, f"nope{unique}", ["x"], "c", reply_to=f"t.reply.{unique}")
        [completion] = await _read(local_stack, topics.completions, 1)
        assert completion.finish_reason == "error" and completion.error.kind == "unknown_alias"
        assert f"nope{unique}" in completion.error.message
        [reply] = await _read(local_stack, f"t.reply.{unique}", 1)
        assert reply == completion

        # Malformed input: a dead letter with the reason and the original bytes; routing goes on.
        producer = EventProducer(local_stack)
        producer.send_raw(topics.requests, b"{not json", key=b"bad")
        producer.flush()
        [letter] = await _read(local_stack, topics.deadletter, 1)
        assert letter.error_kind == "not_json" and letter.original() == b"{not json" and letter.topic == topics.requests
        assert letter.consumer == f"router.{unique}"
    finally:
        router.stop()
        await asyncio.wait_for(task, 30)
    assert router.consumer.stats.dead_lettered == 1 and router.consumer.stats.failed == 0

    # A new router (a restart) rebuilds the same state from the compacted topic.
    again = Router(local_stack, {alias: stable}, group_id=f"router.{unique}", topics=topics)
    task = asyncio.create_task(again.run())
    try:
        await wait_until(lambda: again.ready.is_set() or task.done(), 30, "the restarted router to read the rollouts")
        assert again.state.weights(alias) == {stable: 1.0, canary: 0.0}
    finally:
        again.stop()
        await asyncio.wait_for(task, 30)


async def test_static_routes_carry_weight_one_and_pinned_requests_keep_theirs(local_stack: Settings, unique: str) -> None:
    topics = _topics(local_stack, unique)
    alias, stable, pinned = f"chat{unique}", f"s-{unique}", f"p-{unique}"
    router = Router(local_stack, {alias: stable}, group_id=f"router.{unique}", topics=topics, poll_ms=50)
    task = asyncio.create_task(router.run())
    try:
        await wait_until(lambda: router.ready.is_set() or task.done(), 30, "the router to start")
        _send_requests(local_stack, topics.requests, alias, ["u1", "u2"], "s")
        _send_requests(local_stack, topics.requests, alias, ["u3"], "p", deployment_id=pinned)
        assert [r.routing_weight for r in await _read(local_stack, f"llm.dispatch.{stable}", 2)] == [1.0, 1.0]
        [kept] = await _read(local_stack, f"llm.dispatch.{pinned}", 1)
        assert kept.request_id == "p-u3" and kept.routing_weight is None
    finally:
        router.stop()
        await asyncio.wait_for(task, 30)


async def test_stop_before_the_rollouts_are_read_returns_cleanly(local_stack: Settings, unique: str) -> None:
    topics = _topics(local_stack, unique)
    router = Router(local_stack, {}, group_id=f"router.{unique}", topics=topics)
    task = asyncio.create_task(router.run())
    router.stop()
    await asyncio.wait_for(task, 30)
    assert not router.ready.is_set()
