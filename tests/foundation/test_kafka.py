"""Real broker: catalog topics, and both clients producing/consuming in groups that resume after a restart."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer

from schemas import Feedback, decode, encode, make_event
from schemas.topics import TOPICS, TopicSpec
from services.core.kafka.admin import ensure_topics, existing_topics
from services.core.kafka.config import (
    aiokafka_consumer_kwargs,
    aiokafka_producer_kwargs,
    confluent_consumer_config,
)
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings
from tests.inference.kafka_io import decode_message


def _topic(settings: Settings, name: str, partitions: int = 3) -> str:
    ensure_topics(settings, [TopicSpec(name, Feedback, "request_id", partitions)])
    return name


def _feedback(i: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    return encode(make_event(Feedback(request_id=f"req-{i}", score=(i % 10) / 10), source="test", tenant_id="t"))


def test_catalog_topics_exist_with_their_partitions(local_stack: Settings) -> None:
    existing = existing_topics(local_stack)
    for spec in TOPICS.values():
        assert existing.get(spec.name) == spec.partitions, spec.name


def test_ensure_topics_is_idempotent(local_stack: Settings) -> None:
    again = ensure_topics(local_stack)
    assert all(not r.created for r in again)
    assert [r.partitions for r in again] == [s.partitions for s in TOPICS.values()]


async def _aiokafka_read(settings: Settings, topic: str, group: str, n: int, timeout_s: float = 30.0) -> list[str]:
    consumer = AIOKafkaConsumer(topic, **aiokafka_consumer_kwargs(settings, group))
    await consumer.start()
    ids: list[str] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(ids) < n and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=300, max_records=n - len(ids))).items():
                ids += [decode(r.value, r.headers).payload.request_id for r in records]
                await consumer.commit({tp: records[-1].offset + 1})
    finally:
        await consumer.stop()
    return ids


def test_confluent_produce_aiokafka_group_resumes_after_restart(local_stack: Settings, unique: str) -> None:
    topic = _topic(local_stack, f"t.c2a.{unique}")
    group = f"g.{unique}"
    producer = EventProducer(local_stack)
    for i in range(30):
        producer.send(topic, make_event(Feedback(request_id=f"req-{i}", score=0.5), source="t", tenant_id="t"), key=f"req-{i}")
    producer.flush()

    first = asyncio.run(_aiokafka_read(local_stack, topic, group, 30))
    assert sorted(first) == sorted(f"req-{i}" for i in range(30))

    for i in range(30, 40):
        producer.send(topic, make_event(Feedback(request_id=f"req-{i}", score=0.5), source="t", tenant_id="t"), key=f"req-{i}")
    producer.flush()
    # A new consumer in the same group (a restart) starts from the committed offsets: only the new ten.
    second = asyncio.run(_aiokafka_read(local_stack, topic, group, 10))
    assert sorted(second) == sorted(f"req-{i}" for i in range(30, 40))
    assert asyncio.run(_aiokafka_read(local_stack, topic, group, 1, timeout_s=4)) == []


async def _aiokafka_produce(settings: Settings, topic: str, start: int, stop: int) -> None:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    try:
        for i in range(start, stop):
            value, headers = _feedback(i)
            await producer.send(topic, value, key=f"req-{i}".encode(), headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


def _confluent_read(settings: Settings, topic: str, group: str, n: int, timeout_s: float = 30.0) -> list[str]:
    consumer = Consumer(confluent_consumer_config(settings, group))
    consumer.subscribe([topic])
    ids: list[str] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(ids) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.3)
            if msg is None or msg.error():
                continue
            ids.append(decode_message(msg).payload.request_id)
            consumer.commit(message=msg, asynchronous=False)
    finally:
        consumer.close()
    return ids


def test_aiokafka_produce_confluent_group_resumes_after_restart(local_stack: Settings, unique: str) -> None:
    topic = _topic(local_stack, f"t.a2c.{unique}")
    group = f"g.{unique}"
    asyncio.run(_aiokafka_produce(local_stack, topic, 0, 20))
    first = _confluent_read(local_stack, topic, group, 20)
    assert sorted(first) == sorted(f"req-{i}" for i in range(20))

    asyncio.run(_aiokafka_produce(local_stack, topic, 20, 25))
    second = _confluent_read(local_stack, topic, group, 5)
    assert sorted(second) == sorted(f"req-{i}" for i in range(20, 25))
