"""The router service: ``llm.requests`` in, ``llm.dispatch.<deployment>`` out, by sticky rollout weights.

Two parts share one :class:`RolloutState`. A :class:`~services.core.kafka.follower.CompactedFollower` reads
``llm.rollouts`` from the beginning (no consumer group: every router sees every event) and applies each event as
it arrives, so a rollback takes effect within one poll interval. The request side runs on the consumer runtime
(:class:`~services.core.kafka.consumer.GroupConsumer`, group ``llmops.router``): each request is routed in
partition order and its offset is committed only once the message produced for it was acknowledged
(at-least-once; request_id makes a duplicate harmless downstream). The routed request carries
``routing_weight``: the share of the alias's traffic its deployment had at that moment (the judge weighs windows
by it). A request for an unknown alias gets an error ``Completion`` (on ``llm.completions``, and on the
producer's reply topic when the request names one); an undecodable one goes to the dead-letter topic.

Prompts: a third part follows the prompt registry (``llm.prompts``). Weights are keyed by rollout variants
(``schemas.variants``: a deployment, or ``<deployment>/<prompt_id>@<version>`` for a prompt-version canary);
before dispatch, :func:`services.prompts.dispatch.prepare_for_dispatch` renders a request's unrendered PromptRef
and, when the chosen variant pins a version of the request's prompt, renders it at that version. A request whose
prompt is unknown or whose variables do not fit gets an ``invalid_params`` error completion.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaProducer

from schemas.codec import encode, make_event
from schemas.completions import Completion, CompletionError
from schemas.envelope import Envelope
from schemas.requests import InferenceRequest
from schemas.rollouts import RolloutEvent
from schemas.topics import COMPLETIONS, DEADLETTER, PROMPTS, REQUESTS, ROLLOUTS, dispatch_topic
from services.core import metrics
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import aiokafka_producer_kwargs
from services.core.kafka.consumer import GroupConsumer, Record, Work
from services.core.kafka.follower import CompactedFollower
from services.core.settings import Settings
from services.prompts.dispatch import prepare_for_dispatch
from services.prompts.registry import UnknownPrompt
from services.prompts.render import RenderError
from services.prompts.store import PromptFollower
from services.router.state import RolloutState
from services.router.weights import choose

SOURCE = "llmops.router"


@dataclass(frozen=True)
class RouterTopics:
    requests: str = REQUESTS.name
    rollouts: str = ROLLOUTS.name
    completions: str = COMPLETIONS.name
    deadletter: str = DEADLETTER.name
    prompts: str = PROMPTS.name


@dataclass(frozen=True)
class Route:
    """Where a request goes, and the share of its alias's traffic that deployment had when it was routed."""

    deployment: str
    """The variant the weights chose: a deployment, or ``<deployment>/<prompt_id>@<version>``."""
    weight: float | None
    """None for a request pinned to a deployment by its producer (no rollout share applies)."""


class Router:
    """Route requests by rollout weights. ``run()`` until ``stop()``; ``ready`` is set once the rollouts are read."""

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
        self.ready = asyncio.Event()
        self.routed: dict[str, int] = {}
        """Requests routed (acknowledged by the broker) per deployment since start."""
        self.follower = CompactedFollower(settings, [self.topics.rollouts], lambda event, _: self.state.apply(event.payload),
                                          expect=RolloutEvent, poll_ms=poll_ms, name="router rollouts")
        self.prompts = PromptFollower(settings, topic=self.topics.prompts, poll_ms=poll_ms)
        self.consumer = GroupConsumer(
            settings, topics=[self.topics.requests], group_id=group_id, handler=self._route_one, expect=InferenceRequest,
            source=SOURCE, deadletter_topic=self.topics.deadletter, poll_ms=poll_ms,
        )
        self._known_dispatch: set[str] = set()

    def stop(self) -> None:
        self.follower.stop()
        self.prompts.stop()
        self.consumer.stop()

    def route(self, request: InferenceRequest) -> Route | None:
        """The deployment for a request, or None for an unknown alias. A pinned deployment is kept."""
        if request.deployment_id:
            return Route(request.deployment_id, request.routing_weight)
        weights = self.state.weights(request.model_alias)
        if weights is None:
            return None
        deployment = choose(weights, request.model_alias, request.sticky_key())
        return Route(deployment, weights[deployment])

    async def run(self) -> None:
        metrics.start_metrics_server(self.settings)
        following = asyncio.create_task(self.follower.run())
        prompts = asyncio.create_task(self.prompts.run())
        try:
            try:
                await self.follower.wait_ready(following, timeout_s=30)
                await self.prompts.follower.wait_ready(prompts, timeout_s=30)
            except RuntimeError:
                if self.consumer.stopping:
                    return  # stopped while starting
                raise
            self.ready.set()
            await self.consumer.run()
        finally:
            self.follower.stop()
            self.prompts.stop()
            await asyncio.gather(following, prompts, return_exceptions=True)
            self.ready.clear()

    async def _route_one(self, event: Envelope[InferenceRequest], record: Record) -> Work:
        request = event.payload
        route = self.route(request)
        if route is None:
            known = ", ".join(self.state.aliases()) or "none"
            return await self._error(event, "unknown_alias", f"unknown model alias {request.model_alias!r} (known: {known})")
        try:
            deployment, prepared = prepare_for_dispatch(request, route.deployment, self.prompts.registry)
        except (UnknownPrompt, RenderError, ValueError) as exc:
            return await self._error(event, "invalid_params", str(exc))
        topic = dispatch_topic(deployment).name
        if topic not in self._known_dispatch:
            await asyncio.to_thread(ensure_topics, self.settings, [dispatch_topic(deployment)])
            self._known_dispatch.add(topic)
        routed = prepared.model_copy(update={"routing_weight": route.weight})
        out = make_event(routed, source=SOURCE, tenant_id=event.tenant_id, trace_id=event.trace_id)
        ack = await self.consumer.send(topic, out, key=request.request_id)
        ack.add_done_callback(functools.partial(self._count, request.model_alias, route.deployment))
        return ack

    def _count(self, alias: str, deployment: str, ack: asyncio.Future[Any]) -> None:
        if not ack.cancelled() and ack.exception() is None:
            metrics.ROUTED_REQUESTS.labels(alias=alias, deployment=deployment).inc()
            self.routed[deployment] = self.routed.get(deployment, 0) + 1

    async def _error(self, event: Envelope[InferenceRequest], kind: Literal["unknown_alias", "invalid_params"],
                     message: str) -> Work:
        """Answer the request with an error completion (on llm.completions and its reply topic)."""
        request = event.payload
        completion = Completion(
            request_id=request.request_id, tenant=request.tenant, application=request.application,
            model_alias=request.model_alias, deployment_id="router", finish_reason="error",
            prompt_id=request.prompt.prompt_id if request.prompt else None,
            error=CompletionError(kind=kind, message=message[:10_000]),
        )
        out = make_event(completion, source=SOURCE, tenant_id=event.tenant_id, trace_id=event.trace_id)
        acks = [await self.consumer.send(self.topics.completions, out, key=request.request_id)]
        if request.reply_to:  # the producer waiting for this answer reads only its reply topic
            acks.append(await self.consumer.send(request.reply_to, out, key=request.request_id))
        return asyncio.gather(*acks)


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
