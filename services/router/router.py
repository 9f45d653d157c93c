"""The router service: ``llm.requests`` in, ``llm.dispatch.<deployment>`` out, by sticky rollout weights.

Two loops share one :class:`RolloutState`: a follower reads ``llm.rollouts`` from the beginning (no
consumer group: every router sees every event) and applies each event as it arrives, so a rollback
takes effect within one poll interval; the request loop, in the consumer group ``llmops.router``,
routes each request and commits its offsets only after every message it produced for them was
acknowledged (at-least-once; request_id makes a duplicate harmless downstream). A request for an
unknown alias gets an error ``Completion``; an undecodable one goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from schemas.codec import DecodeError, decode, encode, make_event
from schemas.completions import Completion, CompletionError
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope
from schemas.requests import InferenceRequest
from schemas.rollouts import RolloutEvent
from schemas.topics import COMPLETIONS, DEADLETTER, REQUESTS, ROLLOUTS, dispatch_topic
from services.kafka.admin import ensure_topics
from services.kafka.config import aiokafka_consumer_kwargs, aiokafka_producer_kwargs
from services.kafka.from_beginning import assign_from_beginning, caught_up
from services.router.state import RolloutState
from services.router.weights import choose
from services.settings import Settings

log = logging.getLogger(__name__)
SOURCE = "llmops.router"


@dataclass(frozen=True)
class RouterTopics:
    requests: str = REQUESTS.name
    rollouts: str = ROLLOUTS.name
    completions: str = COMPLETIONS.name
    deadletter: str = DEADLETTER.name


class Router:
    """Route requests by rollout weights. ``run()`` until ``stop()``; ``ready`` is set once caught up."""

    def __init__(
        self,
        settings: Settings,
        static_routes: dict[str, str] | None = None,
        *,
        group_id: str = "llmops.router",
        topics: RouterTopics | None = None,
        poll_ms: int = 200,
    ) -> None:
        self.settings = settings
        self.state = RolloutState(static_routes=dict(static_routes or {}))
        self.group_id = group_id
        self.topics = topics or RouterTopics()
        self.poll_ms = poll_ms
        self.ready = asyncio.Event()
        self.routed: dict[str, int] = {}
        self._stopping = asyncio.Event()
        self._known_dispatch: set[str] = set()

    def stop(self) -> None:
        self._stopping.set()

    def route(self, request: InferenceRequest) -> str | None:
        """The deployment for a request, or None for an unknown alias. A pinned deployment is kept."""
        if request.deployment_id:
            return request.deployment_id
        weights = self.state.weights(request.model_alias)
        if weights is None:
            return None
        return choose(weights, request.model_alias, request.sticky_key())

    async def run(self) -> None:
        producer = AIOKafkaProducer(**aiokafka_producer_kwargs(self.settings))
        await producer.start()
        try:
            follower = asyncio.create_task(self._follow_rollouts())
            try:
                await asyncio.wait_for(self.ready.wait(), timeout=30)
                await self._route_requests(producer)
            finally:
                follower.cancel()
                await asyncio.gather(follower, return_exceptions=True)
        finally:
            await producer.stop()

    async def _follow_rollouts(self) -> None:
        consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(self.settings, None))
        await consumer.start()
        try:
            tps = await assign_from_beginning(consumer, [self.topics.rollouts])
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=self.poll_ms)
                for records in batches.values():
                    for rec in records:
                        try:
                            self.state.apply(decode(rec.value, rec.headers, expect=RolloutEvent).payload)
                        except DecodeError as exc:
                            log.warning("skipping bad rollout event at offset %s: %s", rec.offset, exc)
                if not self.ready.is_set() and await caught_up(consumer, tps):
                    self.ready.set()
        finally:
            await consumer.stop()

    async def _route_requests(self, producer: AIOKafkaProducer) -> None:
        consumer = AIOKafkaConsumer(self.topics.requests, **aiokafka_consumer_kwargs(self.settings, self.group_id))
        await consumer.start()
        try:
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=self.poll_ms, max_records=500)
                if not batches:
                    continue
                acks = []
                for tp, records in batches.items():
                    for rec in records:
                        acks.append(await self._route_one(producer, tp, rec.offset, rec.key, rec.value, rec.headers))
                await asyncio.gather(*acks)  # every output acknowledged before the inputs are committed
                await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batches.items()})
        finally:
            await consumer.stop()

    async def _route_one(
        self, producer: AIOKafkaProducer, tp: TopicPartition, offset: int, key: bytes | None, value: bytes | None,
        headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...],
    ) -> asyncio.Future[object]:
        try:
            event: Envelope[InferenceRequest] = decode(value, headers, expect=InferenceRequest)
        except DecodeError as exc:
            letter = DeadLetter.from_bytes(topic=tp.topic, partition=tp.partition, offset=offset, error_kind=exc.kind.value,
                                           error=exc.message, value=value, key=key, consumer=self.group_id)
            return await self._send(producer, self.topics.deadletter, letter, "router", f"{tp.topic}/{tp.partition}/{offset}")
        request = event.payload
        deployment = self.route(request)
        if deployment is None:
            known = ", ".join(self.state.aliases()) or "none"
            completion = Completion(
                request_id=request.request_id, tenant=request.tenant, application=request.application,
                model_alias=request.model_alias, deployment_id="router", finish_reason="error",
                error=CompletionError(kind="unknown_alias", message=f"unknown model alias {request.model_alias!r} (known: {known})"),
            )
            return await self._send(producer, self.topics.completions, completion, event.tenant_id, request.request_id, event)
        topic = dispatch_topic(deployment).name
        if topic not in self._known_dispatch:
            await asyncio.to_thread(ensure_topics, self.settings, [dispatch_topic(deployment)])
            self._known_dispatch.add(topic)
        routed = request.model_copy(update={"deployment_id": deployment})
        self.routed[deployment] = self.routed.get(deployment, 0) + 1
        return await self._send(producer, topic, routed, event.tenant_id, request.request_id, event)

    @staticmethod
    async def _send(
        producer: AIOKafkaProducer, topic: str, payload: object, tenant: str, key: str,
        origin: Envelope[InferenceRequest] | None = None,
    ) -> asyncio.Future[object]:
        out = make_event(payload, source=SOURCE, tenant_id=tenant, trace_id=origin.trace_id if origin else None)  # type: ignore[arg-type]
        value, headers = encode(out)
        return await producer.send(topic, value, key=key.encode(), headers=headers)


async def publish_rollout(settings: Settings, event: RolloutEvent, topic: str = ROLLOUTS.name) -> float:
    """Publish a rollout state change (keyed by alias) and wait for the ack; returns the send time."""
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    try:
        value, headers = encode(make_event(event, source=SOURCE, tenant_id="_system"))
        sent_at = time.monotonic()
        await (await producer.send(topic, value, key=event.alias.encode(), headers=headers))
        return sent_at
    finally:
        await producer.stop()
