"""The stream worker's app: one manual-commit consumer loop that feeds every agent, then commits.

Flow per batch (size ``batch_size`` or ``batch_interval_s``, whichever first):
decode (bad input -> dead letters) -> safety scan and redaction -> cost -> ClickHouse inserts of raw rows,
dead letters, findings and costs (off the loop, retried with backoff until acknowledged) -> publish
findings, dead letters and alerts to Kafka (awaiting the broker's acks) -> budget check -> mark its minutes
and windows for recomputation, feed the drift monitors -> **commit the batch's offsets**. On a timer, the
touched minutes are recomputed into the aggregate tables and ended windows are published as
``DeploymentWindow`` events for the canary judge.

Why not a Faust agent with ``stream.take()``: in faust-streaming 0.15.3 ``Stream.take`` acks the
buffered events in a ``finally`` around its ``yield`` (faust/streams.py, ``take``), so when the agent
body raises or is cancelled during the ClickHouse insert (shutdown, rebalance, a failed insert) the
events are acked anyway and their offsets get committed: data that never reached ClickHouse would be
skipped. Faust's ``exactly_once`` crashes on the local broker and its table recovery is unreliable
there (shared/notes/local-broker.md). So the loop is a plain aiokafka consumer with
``enable_auto_commit=False`` whose offsets are committed explicitly, only after every side effect of the
batch was acknowledged. A crash at any point replays the uncommitted batch; every ClickHouse table is
keyed so that replay collapses (raw tables by event identity, aggregates recomputed per minute), and
republished events carry deterministic ids. That is at-least-once delivery with idempotent sinks,
correct on real Kafka and on the local broker alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import date, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import BaseModel

from schemas.alerts import Alert
from schemas.codec import encode, make_event
from schemas.completions import Completion
from schemas.feedback import Feedback
from schemas.requests import InferenceRequest
from services.clickhouse.raw_tables import (
    COMPLETION_COLUMNS,
    DEAD_LETTER_COLUMNS,
    FEEDBACK_COLUMNS,
    REQUEST_COLUMNS,
    completion_row,
    dead_letter_row,
    feedback_row,
    request_row,
)
from services.kafka.config import aiokafka_consumer_kwargs, aiokafka_producer_kwargs
from services.settings import Settings
from streams.agents.alerts import AlertPublisher
from streams.agents.cost import COST_COLUMNS, CostAgent, load_budgets
from streams.agents.decode import Record, decode_batch
from streams.agents.drift import DriftAgent
from streams.agents.safety import SAFETY_COLUMNS, SafetyAgent, load_tenant_policies
from streams.agents.safety_spike import safety_spike_alert
from streams.agents.windows import WindowAgent
from streams.config import StreamsConfig
from streams.cost import PriceTable
from streams.sink.aggregates import MinuteAggregator
from streams.sink.clickhouse import ClickHouseWriter, WriterStopped

log = logging.getLogger(__name__)
_DL_NS = uuid.UUID("2d0f0d57-7c77-4f57-8a53-2f8cbbf1e0a4")


class BatchStats(BaseModel):
    """Counters of what the worker processed (for logs, tests and the benchmark)."""

    batches: int = 0
    records: int = 0
    requests: int = 0
    completions: int = 0
    feedback: int = 0
    dead_letters: int = 0
    findings: int = 0
    commits_failed: int = 0


class StreamsApp:
    """Owns the consumer, producer, ClickHouse writers and agents of one worker."""

    def __init__(self, settings: Settings, config: StreamsConfig | None = None) -> None:
        self.settings = settings
        self.config = config or StreamsConfig()
        self.stats = BatchStats()
        self.stop_event = asyncio.Event()
        self.ready = asyncio.Event()
        """Set once the consumer got its first assignment."""
        cfg = self.config
        self.expected: dict[str, type[BaseModel]] = {
            cfg.requests_topic: InferenceRequest, cfg.completions_topic: Completion, cfg.feedback_topic: Feedback,
        }
        self.safety = SafetyAgent(load_tenant_policies(cfg.policies_path))
        self.cost = CostAgent(PriceTable.load(cfg.prices_path), load_budgets(cfg.budgets_path))

    def _writer(self, name: str) -> ClickHouseWriter:
        return ClickHouseWriter(self.settings, retry_initial_s=self.config.retry_initial_s,
                                retry_max_s=self.config.retry_max_s, stop=self.stop_event, name=name)

    async def run(self) -> None:
        """Consume until :meth:`stop` is called (or the task is cancelled)."""
        cfg = self.config
        self.sink = self._writer("sink")
        self._writers: dict[str, ClickHouseWriter] = {}
        self.aggregator = MinuteAggregator(self._writer("aggregates"))
        self.producer = AIOKafkaProducer(**aiokafka_producer_kwargs(self.settings))
        self.consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(
            self.settings, cfg.group_id, max_poll_records=cfg.batch_size, fetch_max_wait_ms=50,
        ))
        await self.producer.start()
        try:
            self.alerts = AlertPublisher(self.producer, self._writer("alerts"), cfg.alerts_topic)
            self.drift = (DriftAgent(cfg, self._writer("drift"), self.alerts) if cfg.drift_enabled else None)
            self.windows = (WindowAgent(self._writer("windows"), self.producer, cfg.windows_topic, cfg.window_seconds,
                                        cfg.window_grace_s) if cfg.windows_enabled else None)
            await self.consumer.start()
            try:
                self.consumer.subscribe(list(self.expected))
                recovered = await self.aggregator.recover(cfg.startup_recompute_hours)
                log.info("streams: %d minute(s) to recompute after start", recovered)
                if self.windows is not None:
                    log.info("streams: %d window(s) to republish after start",
                             await self.windows.recover(cfg.window_recover_s))
                background = asyncio.create_task(self._background(), name="streams-background")
                try:
                    await self._loop()
                finally:
                    background.cancel()
                    await asyncio.gather(background, return_exceptions=True)
                    try:  # a last recomputation; if it cannot run, the next start recovers these minutes
                        await self.aggregator.flush()
                    except WriterStopped:
                        pass
                    if self.drift is not None:
                        await self.drift.wait_idle()
            finally:
                await self.consumer.stop()
        finally:
            await self.producer.stop()

    def stop(self) -> None:
        self.stop_event.set()

    async def _loop(self) -> None:
        while not self.stop_event.is_set():
            records = await self._collect()
            if not records:
                continue
            try:
                await self._process(records)
            except WriterStopped:
                log.info("streams: stopped during a batch; its offsets stay uncommitted and it will be replayed")
                return
            await self._commit(records)

    async def _collect(self) -> list[Record]:
        """Records up to ``batch_size``, or what arrived within ``batch_interval_s`` of the first one."""
        cfg = self.config
        batch: list[Record] = []
        deadline: float | None = None
        while not self.stop_event.is_set():
            wait = 0.2 if deadline is None else max(0.0, deadline - time.monotonic())
            got = await self.consumer.getmany(timeout_ms=int(wait * 1000), max_records=cfg.batch_size - len(batch))
            if self.consumer.assignment():
                self.ready.set()
            for msgs in got.values():
                for m in msgs:
                    batch.append(Record(m.topic, m.partition, m.offset, m.key, m.value, list(m.headers or [])))
            if batch and deadline is None:
                deadline = time.monotonic() + cfg.batch_interval_s
            if len(batch) >= cfg.batch_size or (deadline is not None and time.monotonic() >= deadline):
                return batch
        return []  # stopping: whatever was buffered is not committed, so it is replayed

    async def _process(self, records: list[Record]) -> None:
        cfg = self.config
        decoded = decode_batch(records, self.expected, cfg.consumer_name)
        request_rows = [
            request_row(ev, pos, self.safety.redactor(ev.tenant_id, ev.payload.request_id, ev.payload.deployment_id))
            for ev, pos in decoded.requests
        ]
        feedback_rows = [
            feedback_row(ev, pos, self.safety.redactor(ev.tenant_id, ev.payload.request_id, None))
            for ev, pos in decoded.feedback
        ]
        completion_rows: list[list[Any]] = []
        finding_rows: list[list[Any]] = []
        finding_events = []
        cost_rows: list[list[Any]] = []
        alerts: list[tuple[Alert, str]] = []
        tenant_days: set[tuple[str, date]] = set()
        minutes: set[datetime] = set()
        for ev, pos in decoded.completions:
            result = self.safety.scan_completion(ev)
            texts = {ev.payload.prompt_text: result.prompt_text, ev.payload.text: result.text}
            completion_rows.append(completion_row(ev, pos, lambda t, texts=texts: texts.get(t, t)))
            finding_rows.extend(result.rows)
            finding_events.extend(result.events)
            row, alert = self.cost.row(ev, pos)
            cost_rows.append(row)
            if alert is not None:
                alerts.append((alert, ev.tenant_id))
            tenant_days.add((ev.tenant_id, ev.occurred_at.date()))
            minutes.add(ev.occurred_at)

        # 1. ClickHouse: every insert is idempotent and returns only once acknowledged; tables in parallel.
        await asyncio.gather(*(
            self._table_writer(table).insert(table, table_rows, columns)
            for table, table_rows, columns in (
                ("raw_requests", request_rows, REQUEST_COLUMNS),
                ("raw_completions", completion_rows, COMPLETION_COLUMNS),
                ("raw_feedback", feedback_rows, FEEDBACK_COLUMNS),
                ("dead_letters", [dead_letter_row(d) for d in decoded.dead_letters], DEAD_LETTER_COLUMNS),
                ("safety_findings", finding_rows, SAFETY_COLUMNS),
                ("cost_completions", cost_rows, COST_COLUMNS),
            ) if table_rows
        ))

        # 2. Kafka: findings and dead letters (deterministic ids, so a replay republishes the same events).
        futures = []
        for event in finding_events:
            value, headers = encode(event)
            futures.append(await self.producer.send(
                cfg.safety_topic, value, key=event.payload.request_id.encode(), headers=headers))
        for letter in decoded.dead_letters:
            position = f"{letter.topic}/{letter.partition}/{letter.offset}"
            value, headers = encode(make_event(
                letter, source=cfg.consumer_name, tenant_id="unknown",
                event_id=uuid.uuid5(_DL_NS, f"{position}/{letter.consumer}"),
            ))
            futures.append(await self.producer.send(cfg.deadletter_topic, value, key=position.encode(), headers=headers))
        for fut in futures:
            await fut

        # 3. Alerts: unknown prices, then budgets against the stored spend.
        if tenant_days and (self.cost.budgets.tenants or self.cost.budgets.default is not None):
            alerts.extend(await self.cost.budget_alerts(self.sink, tenant_days))
        if alerts:
            await self.alerts.raise_once(alerts)

        self.aggregator.touch(minutes)
        if self.windows is not None:
            self.windows.touch(minutes)
        if self.drift is not None:
            for ev, _ in decoded.completions:
                self.drift.add(ev.tenant_id, ev.payload)
            self.drift.start_due_checks()
        s = self.stats
        s.batches += 1
        s.records += len(records)
        s.requests += len(decoded.requests)
        s.completions += len(decoded.completions)
        s.feedback += len(decoded.feedback)
        s.dead_letters += len(decoded.dead_letters)
        s.findings += len(finding_rows)

    def _table_writer(self, table: str) -> ClickHouseWriter:
        """One writer (client) per table, so a batch's inserts run in parallel."""
        writer = self._writers.get(table)
        if writer is None:
            writer = self._writers[table] = self._writer(f"sink.{table}")
        return writer

    @property
    def sink_failures(self) -> int:
        """Failed ClickHouse attempts of the raw sink so far (each was retried)."""
        return sum(w.failures for w in self._writers.values())

    async def _commit(self, records: list[Record]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            offsets[tp] = max(offsets.get(tp, 0), rec.offset + 1)
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # Partitions moved to another member: it replays from the last commit; the sinks are idempotent.
            self.stats.commits_failed += 1
            log.warning("streams: commit failed (%s); the batch will be replayed", exc)

    async def _background(self) -> None:
        """Recompute touched minutes and start due drift checks, on a timer."""
        while True:
            await asyncio.sleep(self.config.aggregate_interval_s)
            try:
                await self.aggregator.flush()
                if self.windows is not None:
                    published = await self.windows.publish_due()
                    spikes = [safety_spike_alert(w, share=self.config.safety_spike_share,
                                                 min_requests=self.config.safety_spike_min_requests) for w in published]
                    if any(spikes):
                        await self.alerts.raise_once([(a, "platform") for a in spikes if a is not None])
                if self.drift is not None:
                    self.drift.start_due_checks()
            except WriterStopped:
                return
            except Exception:  # noqa: BLE001 - keep aggregating; the minutes stay dirty
                log.exception("streams: aggregate recomputation failed")
