"""A smoke check of the stack: bring it up, publish sample traffic, land it in ClickHouse, report.

The foundation round trip, no model involved: requests, completions and feedback are produced to Kafka with
confluent-kafka, read back by an aiokafka consumer group, written to the raw ClickHouse tables
(offsets committed only after ClickHouse acknowledged), and counted back with SQL.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer

from schemas.codec import DecodeError, decode, make_event
from schemas.completions import Completion
from schemas.envelope import utc_now
from schemas.feedback import Feedback
from schemas.requests import InferenceRequest, Message
from schemas.topics import COMPLETIONS, FEEDBACK, REQUESTS
from services.core.clickhouse import raw_tables
from services.core.clickhouse.client import connect
from services.core.clickhouse.migrations import migrate
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import aiokafka_consumer_kwargs
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings
from services.infra.stack import LocalStack

Echo = Callable[[str], None]

RowBuilder = Callable[[Any, raw_tables.SourcePosition], list[Any]]
_TABLES: dict[str, tuple[str, list[str], RowBuilder]] = {
    REQUESTS.name: ("raw_requests", raw_tables.REQUEST_COLUMNS, raw_tables.request_row),
    COMPLETIONS.name: ("raw_completions", raw_tables.COMPLETION_COLUMNS, raw_tables.completion_row),
    FEEDBACK.name: ("raw_feedback", raw_tables.FEEDBACK_COLUMNS, raw_tables.feedback_row),
}


def publish_sample_traffic(settings: Settings, run_id: str, events: int) -> set[str]:
    """Publish ``events`` requests with their completions and feedback; returns the request ids."""
    rng = random.Random(run_id)
    producer = EventProducer(settings)
    ids = set()
    for i in range(events):
        request_id = f"smoke-{run_id}-{i:04d}"
        ids.add(request_id)
        tenant = rng.choice(["acme", "globex"])
        req = InferenceRequest(
            request_id=request_id, tenant=tenant, application="demo", model_alias="chat",
            messages=[Message(role="user", content=f"Question {i}: what is {i} + {i}?")],
            deadline=utc_now() + timedelta(seconds=30), user_id=f"user-{rng.randint(1, 5)}",
        )
        prompt_tokens, completion_tokens = rng.randint(8, 40), rng.randint(4, 60)
        comp = Completion(
            request_id=request_id, tenant=tenant, application="demo", model_alias="chat", deployment_id="chat-v1",
            model_name="SmolLM2-135M-Instruct", model_version="v1", text=f"{i} + {i} = {2 * i}.",
            finish_reason="stop", prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            queue_ms=rng.uniform(1, 20), ttft_ms=rng.uniform(20, 200), total_ms=rng.uniform(200, 2000),
        )
        fb = Feedback(request_id=request_id, score=rng.random(), source="user")
        for topic, payload in ((REQUESTS.name, req), (COMPLETIONS.name, comp), (FEEDBACK.name, fb)):
            producer.send(topic, make_event(payload, source="llmops.smoke", tenant_id=tenant), key=request_id)
    producer.flush()
    return ids


async def read_back_into_clickhouse(settings: Settings, run_id: str, expected: int, timeout_s: float = 60.0) -> int:
    """Consume the three topics in a consumer group and insert this run's events into the raw tables."""
    client = connect(settings)
    consumer = AIOKafkaConsumer(*_TABLES, **aiokafka_consumer_kwargs(settings, group_id="llmops.smoke.readback"))
    await consumer.start()
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while seen < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            rows: dict[str, list[list[object]]] = {}  # by topic
            for tp, records in batches.items():
                _table, _cols, to_row = _TABLES[tp.topic]
                for rec in records:
                    try:
                        event = decode(rec.value, rec.headers)
                    except DecodeError:
                        continue  # the stream worker dead-letters these; the smoke check only counts
                    if event.payload.request_id.startswith(f"smoke-{run_id}-"):
                        seen += 1
                    pos = raw_tables.SourcePosition(tp.topic, tp.partition, rec.offset)
                    rows.setdefault(tp.topic, []).append(to_row(event, pos))
            for topic, topic_rows in rows.items():
                table, columns, _to_row = _TABLES[topic]
                await asyncio.to_thread(client.insert, table, topic_rows, column_names=columns)
            if batches:
                await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batches.items()})
    finally:
        await consumer.stop()
    return seen


def run_smoke(settings: Settings, *, events: int, keep_running: bool, echo: Echo = print) -> None:
    t0 = time.monotonic()
    stack = LocalStack(settings)
    echo("== local stack")
    for st in stack.up():
        where = f"{st.location} (pid {st.pid}, log {st.log})" if st.managed else f"{st.location} (external)"
        echo(f"   {st.name:<11} {'up' if st.running else 'DOWN'}  {where}")
    echo("== topics")
    created = ensure_topics(settings)
    echo(f"   {len(created)} catalog topics present ({sum(r.created for r in created)} created now)")
    echo("== migrations")
    applied = migrate(settings)
    echo(f"   {len(applied)} applied now" if applied else "   up to date")

    run_id = uuid.uuid4().hex[:8]
    echo(f"== publishing {events} requests, completions and feedback (run {run_id})")
    publish_sample_traffic(settings, run_id, events)
    echo("== reading them back through the consumer group 'llmops.smoke.readback' into ClickHouse")
    seen = asyncio.run(read_back_into_clickhouse(settings, run_id, expected=3 * events))
    echo(f"   consumed {seen} events of this run")

    client = connect(settings)
    prefix = f"smoke-{run_id}-%"
    echo("== ClickHouse (SELECT ... FINAL, this run only)")
    for table in ("raw_requests", "raw_completions", "raw_feedback"):
        n = client.query(f"SELECT count() FROM {table} FINAL WHERE request_id LIKE %(p)s", parameters={"p": prefix})
        echo(f"   {table:<16} {n.result_rows[0][0]} rows")
    summary = client.query(
        "SELECT tenant_id, count(), sum(prompt_tokens + completion_tokens), round(quantile(0.95)(total_ms)) "
        "FROM raw_completions FINAL WHERE request_id LIKE %(p)s GROUP BY tenant_id ORDER BY tenant_id",
        parameters={"p": prefix},
    )
    echo("   tenant   completions  tokens  p95 total_ms")
    for tenant, n, tokens, p95 in summary.result_rows:
        echo(f"   {tenant:<8} {n:>11}  {tokens:>6}  {p95:>12}")

    host, port, *_ = settings.clickhouse_http()
    echo("== where things are")
    echo(f"   Kafka bootstrap : {settings.bootstrap_servers}")
    echo(f"   ClickHouse HTTP : http://{host}:{port}  database {settings.clickhouse_database}")
    echo(f"   data directory  : {settings.data_dir.resolve()}")
    echo(f"   done in {time.monotonic() - t0:.1f}s")
    if keep_running:
        echo("   the stack keeps running; stop it with `llmops infra down`")
    else:
        stack.down()
        echo("   stack stopped")
