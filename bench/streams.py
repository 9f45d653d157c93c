"""Benchmark: events/s through the whole stream worker vs a bare aiokafka consume+decode loop; aggregate delay.

One command: ``python bench/streams.py [--events 20000] [--probes 60]``. It starts its own broker and
ClickHouse on free ports (temporary directory), creates topics, applies migrations, and produces a
backlog of mixed events (per request: the request, its completion, and feedback for every other one;
1 in 5 completions carries PII, so the scanners and redaction have work). Then, in one run:

1. bare loop: an aiokafka consumer group reads the three topics and decodes every record with the codec
   (no ClickHouse, no agents) -- the ceiling for this broker and client on this machine;
2. worker: ``StreamsApp`` (the real agent graph, default StreamsConfig batching, drift on) reads the same
   backlog with its own group until every record is committed;
3. delay: probe completions are produced one at a time (each its own deployment) while the worker runs;
   for each, the time from produce to its minute's row in ``agg_latency_minute`` being visible in
   ClickHouse (polled every 50 ms) gives p50/p99.

Rates exclude the consumer-group join (the clock starts at the first record). Everything shares the same
machine (broker, ClickHouse, worker, producer).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer  # noqa: E402

from schemas import Completion, Feedback, InferenceRequest, Message, decode, make_event  # noqa: E402
from services.clickhouse.client import connect  # noqa: E402
from services.clickhouse.migrations import migrate  # noqa: E402
from services.infra.process import free_port  # noqa: E402
from services.infra.stack import LocalStack  # noqa: E402
from services.kafka.config import aiokafka_consumer_kwargs  # noqa: E402
from services.kafka.producer import EventProducer  # noqa: E402
from services.settings import Settings  # noqa: E402
from streams.app import StreamsApp  # noqa: E402
from streams.config import StreamsConfig  # noqa: E402
from streams.worker import prepare  # noqa: E402


def produce_backlog(settings: Settings, config: StreamsConfig, requests: int) -> int:
    producer = EventProducer(settings, **{"linger.ms": 20})
    sent = 0
    for i in range(requests):
        rid = f"bench-{i}"
        tenant = f"tenant-{i % 5}"
        deployment = f"dep-{i % 4}"
        pii = i % 5 == 0
        prompt = "Summarise the ticket from jane.doe@example.com" if pii else f"Summarise ticket number {i}"
        producer.send(config.requests_topic, make_event(InferenceRequest(
            request_id=rid, tenant=tenant, application="bench", model_alias="chat", deployment_id=deployment,
            messages=[Message(role="user", content=prompt)]), source="bench", tenant_id=tenant), key=rid)
        producer.send(config.completions_topic, make_event(Completion(
            request_id=rid, tenant=tenant, deployment_id=deployment, model_name="gpt-4o-mini", prompt_version="1",
            prompt_text=prompt, text=("Call +1 415 555 0100 about it." if pii else "The customer wants a refund. ") * 3,
            finish_reason="stop", prompt_tokens=40 + i % 50, completion_tokens=20 + i % 30, ttft_ms=20.0 + i % 40,
            total_ms=200.0 + i % 300), source="bench", tenant_id=tenant), key=rid)
        sent += 2
        if i % 2 == 0:
            producer.send(config.feedback_topic, make_event(Feedback(request_id=rid, score=(i % 10) / 10),
                                                            source="bench", tenant_id=tenant), key=rid)
            sent += 1
    producer.flush(120)
    return sent


async def bare_loop(settings: Settings, config: StreamsConfig, n: int) -> float:
    topics = [config.requests_topic, config.completions_topic, config.feedback_topic]
    consumer = AIOKafkaConsumer(*topics, **aiokafka_consumer_kwargs(settings, f"{config.group_id}-bare"))
    await consumer.start()
    got, t0 = 0, None
    try:
        while got < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=config.batch_size)
            if batches and t0 is None:
                t0 = time.perf_counter()
            for records in batches.values():
                for r in records:
                    decode(r.value, list(r.headers or []))
                    got += 1
        return time.perf_counter() - (t0 or time.perf_counter())
    finally:
        await consumer.stop()


async def worker_run(settings: Settings, config: StreamsConfig, n: int, probes: int) -> tuple[float, list[float]]:
    app = StreamsApp(settings, config)
    task = asyncio.create_task(app.run())
    try:
        while not app.ready.is_set():  # the clock starts when the group is joined and the first fetch returned
            await asyncio.sleep(0.005)
            if task.done():
                await task
        t0 = time.perf_counter()
        while app.stats.records < n:
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - t0
        delays = await probe_delays(settings, config, probes)
        return elapsed, delays
    finally:
        app.stop()
        await task


async def probe_delays(settings: Settings, config: StreamsConfig, probes: int) -> list[float]:
    producer = EventProducer(settings, **{"linger.ms": 0})
    client = connect(settings)
    delays = []
    for i in range(probes):
        dep = f"probe-{os.urandom(4).hex()}"
        producer.send(config.completions_topic, make_event(Completion(
            request_id=dep, tenant="probe", deployment_id=dep, model_name="gpt-4o-mini", text="ok",
            finish_reason="stop", prompt_tokens=5, completion_tokens=2, total_ms=10.0), source="bench",
            tenant_id="probe"), key=dep)
        producer.flush()
        sent = time.perf_counter()
        while True:
            rows = await asyncio.to_thread(lambda: client.query(
                "SELECT count() FROM agg_latency_minute WHERE deployment_id = {d:String}",
                parameters={"d": dep}).result_rows)
            if rows[0][0]:
                delays.append(time.perf_counter() - sent)
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1 + (i % 7) * 0.05)  # spread the probes over batch and aggregation phases
    return delays


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="approximate backlog size (requests x 2.5)")
    parser.add_argument("--probes", type=int, default=40)
    args = parser.parse_args()
    # Evidently/scipy warn about constant columns of the synthetic traffic in every drift check.
    warnings.filterwarnings("ignore", category=RuntimeWarning)

    tmp = Path(tempfile.mkdtemp(prefix="llmops-bench-streams-"))
    settings = Settings(data_dir=tmp, broker_port=free_port(), clickhouse_http_port=free_port(),
                        clickhouse_tcp_port=free_port(), clickhouse_database="bench")
    stack = LocalStack(settings)
    stack.up()
    try:
        run = os.urandom(4).hex()
        config = StreamsConfig(
            group_id=f"bench-{run}", requests_topic=f"bench.{run}.requests", completions_topic=f"bench.{run}.completions",
            feedback_topic=f"bench.{run}.feedback", safety_topic=f"bench.{run}.safety",
            alerts_topic=f"bench.{run}.alerts", deadletter_topic=f"bench.{run}.deadletter",
            policies_path=None, budgets_path=None,
        )
        prepare(settings, config)
        migrate(settings)
        t = time.perf_counter()
        n = produce_backlog(settings, config, int(args.events / 2.5))
        print(f"== backlog: {n:,} events (requests, completions, feedback) produced in {time.perf_counter() - t:.1f}s")

        bare = asyncio.run(bare_loop(settings, config, n))
        worked, delays = asyncio.run(worker_run(settings, config, n, args.probes))
        bare_rate, worker_rate = n / bare, n / worked
        print(f"\n== {n:,} events, 6 partitions per topic, local broker + ClickHouse, one machine "
              f"({os.cpu_count()} CPUs); batch {config.batch_size} / {config.batch_interval_s}s, "
              f"aggregates every {config.aggregate_interval_s}s")
        print(f"   {'pipeline':<44} {'events/s':>10} {'seconds':>8} {'vs bare':>8}")
        print(f"   {'bare aiokafka consume + decode':<44} {bare_rate:>10,.0f} {bare:>8.2f} {1.0:>7.2f}x")
        print(f"   {'stream worker (all agents, ClickHouse, commit)':<44} {worker_rate:>10,.0f} {worked:>8.2f} "
              f"{worker_rate / bare_rate:>7.2f}x")
        print(f"\n== completion produced -> its minute visible in agg_latency_minute ({len(delays)} probes)")
        print(f"   p50 {pct(delays, 0.5):.2f}s   p99 {pct(delays, 0.99):.2f}s   max {max(delays):.2f}s")
    finally:
        stack.down()


if __name__ == "__main__":
    main()
