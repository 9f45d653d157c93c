"""The router on the real broker: weights from the rollouts topic, rollback in under a second, restarts."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer

from schemas import Completion, InferenceRequest, Message, RolloutEvent, decode, make_event
from schemas.topics import TopicSpec
from services.kafka.admin import ensure_topics
from services.kafka.config import aiokafka_consumer_kwargs
from services.kafka.producer import EventProducer
from services.router.router import Router, RouterTopics, publish_rollout
from services.router.weights import choose
from services.settings import Settings


def _topics(settings: Settings, unique: str) -> RouterTopics:
    topics = RouterTopics(
        requests=f"t.req.{unique}", rollouts=f"t.roll.{unique}", completions=f"t.comp.{unique}", deadletter=f"t.dl.{unique}"
    )
    ensure_topics(settings, [
        TopicSpec(topics.requests, InferenceRequest, "request_id", 3),
        TopicSpec(topics.rollouts, RolloutEvent, "alias", 1, cleanup_policy="compact", retention_ms=None),
        TopicSpec(topics.completions, Completion, "request_id", 1),
        TopicSpec(topics.deadletter, Completion, "x", 1),
    ])
    return topics


def _rollout(alias: str, weights: dict[str, float], action: str = "step_up") -> RolloutEvent:
    stable, canary = sorted(weights)[0], sorted(weights)[-1]
    return RolloutEvent(alias=alias, rollout_id="ro-1", stable_deployment=stable, canary_deployment=canary,
                        action=action, step=1, weights=weights, reason="test")


def _send_requests(settings: Settings, topic: str, alias: str, users: list[str], tag: str) -> None:
    producer = EventProducer(settings)
    for user in users:
        req = InferenceRequest(request_id=f"{tag}-{user}", tenant="t", application="a", model_alias=alias,
                               messages=[Message(role="user", content="hi")], user_id=user)
        producer.send(topic, make_event(req, source="test", tenant_id="t"), key=req.request_id)
    producer.flush()


async def _read(settings: Settings, topic: str, n: int, timeout_s: float = 30.0) -> list:
    consumer = AIOKafkaConsumer(topic, **aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out += [decode(r.value, r.headers).payload for r in records]
    finally:
        await consumer.stop()
    return out


async def test_routes_by_weights_rolls_back_fast_and_restarts_with_same_weights(local_stack: Settings, unique: str) -> None:
    topics = _topics(local_stack, unique)
    alias, stable, canary = f"chat{unique}", f"s-{unique}", f"c-{unique}"
    half = {stable: 0.5, canary: 0.5}
    await publish_rollout(local_stack, _rollout(alias, half), topics.rollouts)

    router = Router(local_stack, {alias: stable}, group_id=f"router.{unique}", topics=topics)
    task = asyncio.create_task(router.run())
    try:
        await asyncio.wait_for(router.ready.wait(), 30)
        assert router.state.weights(alias) == half

        users = [f"u{i}" for i in range(40)]
        _send_requests(local_stack, topics.requests, alias, users, "a")
        expected_canary = sorted(u for u in users if choose(half, alias, u) == canary)
        assert 0 < len(expected_canary) < len(users)
        got = await _read(local_stack, f"llm.dispatch.{canary}", len(expected_canary))
        assert sorted(r.user_id for r in got) == expected_canary
        assert all(r.deployment_id == canary for r in got)

        # Roll back: the next requests all go to stable, and the state changed within a second.
        sent_at = await publish_rollout(local_stack, _rollout(alias, {stable: 1.0, canary: 0.0}, "rollback"), topics.rollouts)
        while router.state.weights(alias) != {stable: 1.0, canary: 0.0}:
            await asyncio.sleep(0.01)
            assert time.monotonic() - sent_at < 1.0, "rollback did not take effect within 1 s"
        before = router.routed.get(stable, 0)
        _send_requests(local_stack, topics.requests, alias, users, "b")
        while router.routed.get(stable, 0) < before + len(users):
            await asyncio.sleep(0.05)
        assert router.routed.get(canary, 0) == len(expected_canary)

        # Unknown alias: an error completion, never silence.
        _send_requests(local_stack, topics.requests, f"nope{unique}", ["x"], "c")
        [completion] = await _read(local_stack, topics.completions, 1)
        assert completion.finish_reason == "error" and completion.error.kind == "unknown_alias"
        assert f"nope{unique}" in completion.error.message

        # Malformed input: a dead letter with the reason and the original bytes; routing goes on.
        producer = EventProducer(local_stack)
        producer.send_raw(topics.requests, b"{not json", key=b"bad")
        producer.flush()
        [letter] = await _read(local_stack, topics.deadletter, 1)
        assert letter.error_kind == "not_json" and letter.original() == b"{not json" and letter.topic == topics.requests
    finally:
        router.stop()
        await asyncio.wait_for(task, 30)

    # A new router (a restart) rebuilds the same state from the compacted topic.
    again = Router(local_stack, {alias: stable}, group_id=f"router.{unique}", topics=topics)
    task = asyncio.create_task(again.run())
    try:
        await asyncio.wait_for(again.ready.wait(), 30)
        assert again.state.weights(alias) == {stable: 1.0, canary: 0.0}
    finally:
        again.stop()
        await asyncio.wait_for(task, 30)
