"""A model-free replica for the gateway and SDK tests: consumes a dispatch topic and answers each request at once.

It behaves like the real replica on the wire: chunks (one per word) and the completion go to the request's
``reply_to`` topic when set (chunks otherwise to the chunks topic), the completion always to the completions
topic; prompt id/version, routing weight and the fallback record are copied from the request. ``behaviour``
decides per request: answer with a text, fail with an error kind, or stay silent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.codec import decode, encode, make_event
from schemas.completions import Completion, CompletionChunk, CompletionError
from schemas.requests import InferenceRequest
from schemas.topics import dispatch_topic
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import aiokafka_consumer_kwargs, aiokafka_producer_kwargs
from services.core.settings import Settings


@dataclass
class Answer:
    text: str = ""
    error_kind: str | None = None
    silent: bool = False
    delay_s: float = 0.0


def echo(request: InferenceRequest) -> Answer:
    """Answers with the last message, prefixed: easy to assert on."""
    assert request.messages is not None
    return Answer(text=f"echo: {request.messages[-1].content}")


@dataclass
class FakeReplica:
    settings: Settings
    deployment_id: str
    completions_topic: str
    chunks_topic: str
    behaviour: Callable[[InferenceRequest], Answer] = echo
    seen: list[InferenceRequest] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def run(self) -> None:
        topic = dispatch_topic(self.deployment_id)
        await asyncio.to_thread(ensure_topics, self.settings, [topic])
        consumer = AIOKafkaConsumer(topic.name, **aiokafka_consumer_kwargs(
            self.settings, f"fake-{self.deployment_id}", fetch_max_wait_ms=10))
        producer = AIOKafkaProducer(**aiokafka_producer_kwargs(self.settings, linger_ms=0))
        await producer.start()
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=50)
                if consumer.assignment():
                    self.ready.set()
                for records in batches.values():
                    for rec in records:
                        request = decode(rec.value, rec.headers, expect=InferenceRequest).payload
                        self.seen.append(request)
                        task = asyncio.create_task(self._answer(producer, request))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                if batches:
                    await consumer.commit()
        finally:
            await consumer.stop()
            await producer.stop()

    async def _answer(self, producer: AIOKafkaProducer, request: InferenceRequest) -> None:
        answer = self.behaviour(request)
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        if answer.silent:
            return

        async def send(topic: str, payload: CompletionChunk | Completion) -> None:
            value, headers = encode(make_event(payload, source=f"fake.{self.deployment_id}", tenant_id=request.tenant))
            await (await producer.send(topic, value, key=request.request_id.encode(), headers=headers))

        if answer.error_kind is None and request.params.stream:
            words = answer.text.split(" ")
            for i, word in enumerate(words):
                piece = word if i == len(words) - 1 else word + " "
                await send(request.reply_to or self.chunks_topic,
                           CompletionChunk(request_id=request.request_id, deployment_id=self.deployment_id, index=i, text=piece))
        completion = Completion(
            request_id=request.request_id, tenant=request.tenant, application=request.application,
            model_alias=request.model_alias, deployment_id=self.deployment_id, model_name="fake-model",
            prompt_id=request.prompt.prompt_id if request.prompt else None,
            prompt_version=request.prompt.version if request.prompt else None,
            prompt_text="\n\n".join(m.content for m in request.messages or []),
            text=answer.text if answer.error_kind is None else "",
            finish_reason="stop" if answer.error_kind is None else "error",
            prompt_tokens=sum(len(m.content.split()) for m in request.messages or []),
            completion_tokens=len(answer.text.split()) if answer.error_kind is None else 0,
            total_ms=1.0, ttft_ms=0.5, routing_weight=request.routing_weight, fallback=request.fallback,
            error=CompletionError(kind=answer.error_kind, message="the fake replica failed on purpose")
            if answer.error_kind else None,
        )
        await send(self.completions_topic, completion)
        if request.reply_to:
            await send(request.reply_to, completion)
