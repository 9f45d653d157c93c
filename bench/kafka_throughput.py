"""Benchmark: local stack start-up and memory, and produce/consume throughput of both Kafka clients.

One command: ``python bench/kafka_throughput.py [--messages 100000] [--size 1024]``. It starts its own
broker and ClickHouse on free ports (or uses LLMOPS_KAFKA_BOOTSTRAP), sends N messages of ~SIZE bytes
with confluent-kafka and with aiokafka, reads each topic back in a consumer group with both clients,
and prints msgs/s and MB/s with ratios against confluent-kafka produce measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer

from schemas import Feedback, encode, make_event
from schemas.topics import TopicSpec
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import (
    aiokafka_consumer_kwargs,
    aiokafka_producer_kwargs,
    confluent_consumer_config,
    confluent_producer_config,
)
from services.core.settings import Settings
from services.infra.process import free_port
from services.infra.stack import LocalStack


def confluent_produce(settings: Settings, topic: str, payload: bytes, n: int) -> float:
    producer = Producer(confluent_producer_config(settings, **{"linger.ms": 20, "batch.size": 1_000_000}))
    t0 = time.perf_counter()
    for i in range(n):
        while True:
            try:
                producer.produce(topic, payload, key=str(i).encode())
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - t0


def confluent_consume(settings: Settings, topic: str, n: int, group: str) -> float:
    consumer = Consumer(confluent_consumer_config(settings, group))
    consumer.subscribe([topic])
    got, t0 = 0, None
    while got < n:
        msgs = consumer.consume(num_messages=10_000, timeout=1.0)
        if msgs and t0 is None:
            t0 = time.perf_counter()  # exclude the group join from the rate
        got += sum(1 for m in msgs if m.error() is None)
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    consumer.close()
    return elapsed


async def aiokafka_produce(settings: Settings, topic: str, payload: bytes, n: int) -> float:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings, linger_ms=20, max_batch_size=1_000_000))
    await producer.start()
    t0 = time.perf_counter()
    batch = []
    for i in range(n):
        batch.append(await producer.send(topic, payload, key=str(i).encode()))
        if len(batch) >= 5000:
            await asyncio.gather(*batch)
            batch.clear()
    await asyncio.gather(*batch)
    elapsed = time.perf_counter() - t0
    await producer.stop()
    return elapsed


async def aiokafka_consume(settings: Settings, topic: str, n: int, group: str) -> float:
    consumer = AIOKafkaConsumer(topic, **aiokafka_consumer_kwargs(settings, group, max_partition_fetch_bytes=4_000_000))
    await consumer.start()
    got, t0 = 0, None
    while got < n:
        batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
        if batches and t0 is None:
            t0 = time.perf_counter()
        got += sum(len(v) for v in batches.values())
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    await consumer.stop()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024, help="approximate message size in bytes")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="llmops-bench-"))
    settings = Settings(data_dir=tmp, broker_port=free_port(), clickhouse_http_port=free_port(), clickhouse_tcp_port=free_port())
    stack = LocalStack(settings)
    statuses = stack.up()
    try:
        print("== local stack (start-up until healthy, resident memory after start)")
        for st in statuses:
            started = f"{st.started_in_s:.3f}s" if st.started_in_s is not None else "external"
            rss = f"{st.rss_bytes / 2**20:.0f} MiB" if st.rss_bytes else "-"
            print(f"   {st.name:<11} ready in {started:<9} rss {rss}")

        def event_bytes(comment: str) -> bytes:
            return encode(make_event(Feedback(request_id="bench", score=0.5, comment=comment), source="bench", tenant_id="t"))[0]

        payload = event_bytes("x" * max(0, args.size - len(event_bytes(""))))
        n = args.messages
        run = os.urandom(4).hex()
        topics = {c: f"bench.{c}.{run}" for c in ("confluent", "aiokafka")}
        ensure_topics(settings, [TopicSpec(t, Feedback, "key", 6) for t in topics.values()])

        results: list[tuple[str, float]] = []
        results.append(("confluent-kafka produce", confluent_produce(settings, topics["confluent"], payload, n)))
        results.append(("aiokafka produce", asyncio.run(aiokafka_produce(settings, topics["aiokafka"], payload, n))))
        results.append(("confluent-kafka consume", confluent_consume(settings, topics["confluent"], n, f"bc.{run}")))
        results.append(("aiokafka consume", asyncio.run(aiokafka_consume(settings, topics["aiokafka"], n, f"ba.{run}"))))
        broker_rss = stack.broker.process.rss_bytes()

        baseline = n / results[0][1]
        print(f"\n== {n:,} messages of {len(payload)} bytes, 6 partitions, local broker, 2 clients in one process")
        print(f"   {'client / direction':<26} {'msgs/s':>10} {'MB/s':>8} {'vs confluent produce':>22}")
        for name, elapsed in results:
            rate = n / elapsed
            print(f"   {name:<26} {rate:>10,.0f} {rate * len(payload) / 1e6:>8.1f} {rate / baseline:>21.2f}x")
        if broker_rss:
            print(f"\n   broker rss after the run: {broker_rss / 2**20:.0f} MiB (memory storage keeps every message)")
    finally:
        stack.down()


if __name__ == "__main__":
    main()
