"""The reply side of request/reply: one consumer on this producer's own reply topic, handing each reply to its waiter.

A producer names its reply topic (``llm.replies.<instance>``, one partition) in ``InferenceRequest.reply_to``;
replicas publish the request's chunks and completion there (and the completion to ``llm.completions`` as
always). :class:`ReplyListener` reads that topic (no consumer group: the topic is this producer's alone) and
puts every reply for a registered request id on that request's queue; replies for ids nobody waits for
(answers that arrived after their waiter gave up, or a previous run's replies) are dropped.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas.codec import DecodeError, decode
from schemas.completions import Completion, CompletionChunk
from schemas.topics import reply_topic
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import aiokafka_consumer_kwargs, confluent_admin_config
from services.core.settings import Settings

log = logging.getLogger(__name__)

Reply = CompletionChunk | Completion


class ReplyListener:
    """Consumes one reply topic and routes replies by request id to :meth:`register`\\ ed queues."""

    def __init__(self, settings: Settings, instance_id: str, *, poll_ms: int = 100) -> None:
        self.settings = settings
        self.spec = reply_topic(instance_id)
        self.poll_ms = poll_ms
        self.dropped = 0
        self._waiters: dict[str, asyncio.Queue[Reply]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def topic(self) -> str:
        return self.spec.name

    def register(self, request_id: str) -> asyncio.Queue[Reply]:
        queue: asyncio.Queue[Reply] = asyncio.Queue()
        self._waiters[request_id] = queue
        return queue

    def waiting(self, request_id: str) -> bool:
        """Whether a caller already waits for this request id (a second one would take its replies)."""
        return request_id in self._waiters

    def unregister(self, request_id: str) -> None:
        self._waiters.pop(request_id, None)

    async def start(self) -> None:
        await asyncio.to_thread(ensure_topics, self.settings, [self.spec])
        self._consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(self.settings, None, fetch_max_wait_ms=self.poll_ms))
        await self._consumer.start()
        tp = TopicPartition(self.topic, 0)
        self._consumer.assign([tp])
        await self._consumer.seek_to_beginning(tp)  # replies of earlier runs are read and dropped (short retention)
        self._task = asyncio.create_task(self._run())

    async def stop(self, *, delete_topic: bool = False) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        if delete_topic:
            await asyncio.to_thread(_delete_topic, self.settings, self.topic)

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            batches = await consumer.getmany(timeout_ms=self.poll_ms, max_records=1000)
            for records in batches.values():
                for rec in records:
                    try:
                        reply = decode(rec.value, rec.headers, expect=(CompletionChunk, Completion)).payload
                    except DecodeError as exc:
                        log.warning("%s: skipping a bad reply at offset %s: %s", self.topic, rec.offset, exc)
                        continue
                    queue = self._waiters.get(reply.request_id)
                    if queue is None:
                        self.dropped += 1
                    else:
                        queue.put_nowait(reply)


def _delete_topic(settings: Settings, topic: str) -> None:
    admin = AdminClient(confluent_admin_config(settings))  # kept alive until the futures resolve
    futures = admin.delete_topics([topic], operation_timeout=10, request_timeout=10)
    for future in futures.values():
        try:
            future.result(timeout=10)
        except Exception as exc:  # noqa: BLE001 - an ephemeral topic left behind expires with its retention
            log.warning("could not delete reply topic %s: %s", topic, exc)
