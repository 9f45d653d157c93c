"""What the consumer runtime costs: GroupConsumer against a bare aiokafka loop, in one run, on the same events.

One command: ``python bench/consumer_runtime.py [--events 20000] [--rounds 3]``. It starts the local stack on free
ports under a temporary directory, publishes the events (Feedback, 6 partitions), then consumes them four ways,
each in a fresh consumer group, timing from the first record to the last one done (the group join is left out);
the four take turns for ``--rounds`` rounds and the best round of each is reported, so that a busy neighbour
slows one round rather than one variant:

* bare: an aiokafka loop that decodes each record and commits after each batch (the floor);
* runtime: :class:`~services.core.kafka.consumer.GroupConsumer` with a handler that does nothing;
* bare + produce: the old router loop: decode, produce each to an output topic, await the batch's acks, commit;
* runtime + produce: the router's way now: the handler produces and returns the ack, the runtime commits.

It prints events/s and the ratios runtime/bare. The machine may be shared: the numbers are indicative, the
ratios (measured in the same run) less so.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import Feedback, decode, encode, make_event
from schemas.topics import TopicSpec
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import aiokafka_consumer_kwargs, aiokafka_producer_kwargs
from services.core.kafka.consumer import GroupConsumer, Record, Work
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings
from services.infra.process import free_port
from services.infra.stack import LocalStack


async def _bare(settings: Settings, topic: str, n: int, out_topic: str | None) -> float:
    consumer = AIOKafkaConsumer(topic, **aiokafka_consumer_kwargs(settings, f"bare-{time.monotonic_ns()}"))
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await consumer.start()
    await producer.start()
    done, first = 0, 0.0
    try:
        while done < n:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            if batches and not first:
                first = time.perf_counter()
            acks = []
            for records in batches.values():
                for record in records:
                    event = decode(record.value, record.headers, expect=Feedback)
                    if out_topic is not None:
                        value, headers = encode(event)
                        acks.append(await producer.send(out_topic, value, key=record.key, headers=headers))
                    done += 1
            await asyncio.gather(*acks)
            if batches:
                await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batches.items()})
        return n / (time.perf_counter() - first)
    finally:
        await producer.stop()
        await consumer.stop()


async def _runtime(settings: Settings, topic: str, n: int, out_topic: str | None) -> float:
    first: list[float] = []
    runtime: GroupConsumer

    async def handler(event: Any, record: Record) -> Work | None:
        if not first:
            first.append(time.perf_counter())
        if out_topic is None:
            return None
        return await runtime.send(out_topic, event, key=record.key)

    runtime = GroupConsumer(settings, topics=[topic], group_id=f"rt-{time.monotonic_ns()}", handler=handler,
                            expect=Feedback, source="bench", poll_ms=200)
    task = asyncio.create_task(runtime.run())
    try:
        while runtime.stats.done < n:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        return n / (time.perf_counter() - first[0])
    finally:
        runtime.stop()
        await task
        if runtime.stats.consumed != n:
            print(f"    (runtime consumed {runtime.stats.consumed} records for {n}: a rebalance redelivered some)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), broker_port=free_port(), clickhouse_http_port=free_port(),
                            clickhouse_tcp_port=free_port())
        stack = LocalStack(settings)
        stack.up()
        try:
            topic, out = "bench.in", "bench.out"
            ensure_topics(settings, [TopicSpec(topic, Feedback, "request_id", 6), TopicSpec(out, Feedback, "request_id", 6)])
            producer = EventProducer(settings)
            for i in range(args.events):
                event = make_event(Feedback(request_id=f"r-{i}", score=0.5, comment="fine " * 20), source="b", tenant_id="t")
                producer.send(topic, event, key=f"r-{i}")
            producer.flush()
            runs: list[tuple[str, Callable[[], Coroutine[Any, Any, float]]]] = [
                ("bare", lambda: _bare(settings, topic, args.events, None)),
                ("runtime", lambda: _runtime(settings, topic, args.events, None)),
                ("bare + produce", lambda: _bare(settings, topic, args.events, out)),
                ("runtime + produce", lambda: _runtime(settings, topic, args.events, out)),
            ]
            rates: dict[str, float] = {}
            for _ in range(args.rounds):
                for name, run in runs:
                    rates[name] = max(rates.get(name, 0.0), asyncio.run(run()))
        finally:
            stack.down()
    print(f"{args.events} events, 6 partitions, one process, best of {args.rounds} rounds "
          "(indicative: the machine may be shared)")
    for name, rate in rates.items():
        print(f"  {name:18s} {rate:9,.0f} events/s")
    print(f"  runtime / bare                 {rates['runtime'] / rates['bare']:.2f}x")
    print(f"  runtime+produce / bare+produce {rates['runtime + produce'] / rates['bare + produce']:.2f}x")


if __name__ == "__main__":
    main()
