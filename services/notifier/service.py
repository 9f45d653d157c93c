"""The notifier loop: ``llm.alerts`` in (consumer group, manual commits), webhooks and the console out.

For each polled batch: undecodable or wrong-type records go to ``llm.deadletter`` (acknowledged before
anything is committed); each alert is printed (if the console is on) and posted to every webhook whose
filters match, all webhooks of an alert and all alerts of a batch concurrently (at most
``max_in_flight`` deliveries at once). Offsets are committed only once every delivery of a record has
finished, delivered or failed permanently: at-least-once, and the dedup key (the envelope's event_id)
lets receivers drop a redelivery. In one process the same event is not posted twice to a webhook (an
LRU of recently delivered keys, plus one delivery per event_id within a batch). ``stop()`` lets
in-flight requests end, interrupts pending retries and commits only what finished; the rest is
delivered again, with the same dedup key, by whoever consumes the partition next.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import sys
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from schemas.alerts import Alert
from schemas.codec import DecodeError, decode, encode, make_event
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope, utc_now
from schemas.topics import ALERTS, DEADLETTER
from services.kafka.admin import ensure_topics
from services.kafka.config import aiokafka_consumer_kwargs, aiokafka_producer_kwargs
from services.notifier.config import NotifierConfig, WebhookConfig
from services.notifier.console import print_alert
from services.notifier.webhook import DeliveryResult, Outcome, WebhookSender, build_body, dedup_key
from services.settings import Settings

log = logging.getLogger(__name__)
SOURCE = "llmops.notifier"
CONSOLE = "<console>"
_DL_NS = uuid.UUID("5b0e6a39-3f0c-4e54-9d0b-3f6f3c1e2a71")


@dataclass(frozen=True)
class NotifierTopics:
    alerts: str = ALERTS.name
    deadletter: str = DEADLETTER.name


@dataclass
class NotifierStats:
    """Counters since start. ``failed`` = rejected + exhausted, per webhook."""

    alerts: int = 0
    printed: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    exhausted: dict[str, int] = field(default_factory=dict)
    interrupted: int = 0
    duplicates_skipped: int = 0
    stale_skipped: int = 0
    dead_letters: int = 0
    commits: int = 0
    commits_failed: int = 0
    committed: dict[str, int] = field(default_factory=dict)
    """``topic/partition`` -> the last committed offset (the next record to read)."""

    @property
    def failed(self) -> dict[str, int]:
        return {k: self.rejected.get(k, 0) + self.exhausted.get(k, 0) for k in {*self.rejected, *self.exhausted}}

    def count(self, result: DeliveryResult) -> None:
        counter = {Outcome.DELIVERED: self.delivered, Outcome.REJECTED: self.rejected,
                   Outcome.EXHAUSTED: self.exhausted}.get(result.outcome)
        if counter is None:
            self.interrupted += 1
        else:
            counter[result.webhook] = counter.get(result.webhook, 0) + 1


class Notifier:
    """Deliver alerts until ``stop()``. ``ready`` is set once the consumer has partitions."""

    def __init__(
        self,
        settings: Settings,
        config: NotifierConfig,
        *,
        topics: NotifierTopics | None = None,
        console: TextIO | None = None,
        client: httpx.AsyncClient | None = None,
        poll_ms: int = 200,
    ) -> None:
        self.settings = settings
        self.config = config
        self.topics = topics or NotifierTopics()
        self.console = (console or sys.stdout) if config.console else None
        self.poll_ms = poll_ms
        self.stats = NotifierStats()
        self.ready = asyncio.Event()
        self._client = client
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await asyncio.to_thread(ensure_topics, self.settings, [
            dataclasses.replace(ALERTS, name=self.topics.alerts),
            dataclasses.replace(DEADLETTER, name=self.topics.deadletter),
        ])
        producer = AIOKafkaProducer(**aiokafka_producer_kwargs(self.settings))
        consumer = AIOKafkaConsumer(self.topics.alerts, **aiokafka_consumer_kwargs(
            self.settings, self.config.group_id, max_poll_interval_ms=self.config.max_poll_interval_ms()))
        await producer.start()
        try:
            await consumer.start()
            try:
                async with WebhookSender(self.config.retry, client=self._client) as sender:
                    await self._loop(consumer, producer, sender)
            finally:
                await consumer.stop()
        finally:
            await producer.stop()
            self.ready.clear()
            s = self.stats
            log.info("notifier stopped: %d alerts, delivered %s, failed %s, %d dead letters",
                     s.alerts, s.delivered, s.failed, s.dead_letters)

    async def _loop(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer, sender: WebhookSender) -> None:
        while not self._stopping.is_set():
            batches = await consumer.getmany(timeout_ms=self.poll_ms, max_records=self.config.batch_size)
            if not self.ready.is_set() and consumer.assignment():
                self.ready.set()
            if not batches:
                continue
            offsets = await self._process(producer, sender, batches)
            await self._commit(consumer, offsets)

    async def _process(
        self, producer: AIOKafkaProducer, sender: WebhookSender, batches: dict[TopicPartition, list[ConsumerRecord[Any, Any]]],
    ) -> dict[TopicPartition, int]:
        """Handle a batch; returns, per partition, the offset to commit (the first record not finished)."""
        letters: list[asyncio.Future[Any]] = []
        first_of: dict[str, tuple[TopicPartition, int]] = {}
        work: dict[tuple[TopicPartition, int], Envelope[Alert]] = {}
        same_as: dict[tuple[TopicPartition, int], tuple[TopicPartition, int]] = {}
        for tp, records in batches.items():
            for rec in records:
                try:
                    event: Envelope[Alert] = decode(rec.value, rec.headers, expect=Alert)
                except DecodeError as exc:
                    letters.append(await self._dead_letter(producer, tp, rec, exc))
                    continue
                self.stats.alerts += 1
                key = dedup_key(event)
                if key in first_of:  # the same event twice in one batch (e.g. a producer retry): one delivery
                    self.stats.duplicates_skipped += 1
                    same_as[(tp, rec.offset)] = first_of[key]
                    continue
                first_of[key] = (tp, rec.offset)
                work[(tp, rec.offset)] = event
        for fut in letters:  # dead letters acknowledged before their inputs are committed
            await fut
        finished = await asyncio.gather(*(self._handle(sender, event) for event in work.values()))
        done = dict(zip(work, finished, strict=True))
        for pos, first in same_as.items():
            done[pos] = done[first]

        offsets: dict[TopicPartition, int] = {}
        for tp, records in batches.items():
            offsets[tp] = records[-1].offset + 1
            for rec in records:
                if not done.get((tp, rec.offset), True):
                    offsets[tp] = rec.offset
                    break
            if offsets[tp] == records[0].offset:
                del offsets[tp]  # nothing finished: the committed position stays where it is
        return offsets

    async def _handle(self, sender: WebhookSender, event: Envelope[Alert]) -> bool:
        """Print and post one alert; True when every output finished (delivered or failed permanently)."""
        alert, key = event.payload, dedup_key(event)
        max_age = self.config.max_age_s
        if max_age is not None and (age := (utc_now() - event.occurred_at).total_seconds()) > max_age:
            self.stats.stale_skipped += 1
            log.info("skipping alert %s (%s): %.0fs old, max_age_s is %.0f", alert.alert_id, key, age, max_age)
            return True
        if self.console is not None and not self._seen(CONSOLE, key):
            print_alert(event, self.console)
            self.stats.printed += 1
            self._remember(CONSOLE, key)
        targets = [w for w in self.config.webhooks if w.matches(alert)]
        if not targets:
            return True
        body = build_body(event)
        finished = await asyncio.gather(*(self._deliver(sender, w, body, key, alert.alert_id) for w in targets))
        return all(finished)

    async def _deliver(self, sender: WebhookSender, webhook: WebhookConfig, body: bytes, key: str, alert_id: str) -> bool:
        if self._seen(webhook.name, key):
            self.stats.duplicates_skipped += 1
            return True
        async with self._slots:
            if self._stopping.is_set():
                self.stats.interrupted += 1
                return False  # not started: the next consumer of the partition delivers it
            result = await sender.deliver(webhook, body, key, alert_id=alert_id, stopping=self._stopping)
        self.stats.count(result)
        if result.outcome in (Outcome.DELIVERED, Outcome.REJECTED):
            self._remember(webhook.name, key)
        return result.outcome.finished

    def _seen(self, target: str, key: str) -> bool:
        if (target, key) in self._recent:
            self._recent.move_to_end((target, key))
            return True
        return False

    def _remember(self, target: str, key: str) -> None:
        self._recent[(target, key)] = None
        self._recent.move_to_end((target, key))
        while len(self._recent) > self.config.dedup_cache_size:
            self._recent.popitem(last=False)

    async def _dead_letter(
        self, producer: AIOKafkaProducer, tp: TopicPartition, rec: ConsumerRecord[Any, Any], exc: DecodeError,
    ) -> asyncio.Future[Any]:
        position = f"{tp.topic}/{tp.partition}/{rec.offset}"
        log.warning("notifier: dead-lettering %s: %s", position, exc)
        letter = DeadLetter.from_bytes(topic=tp.topic, partition=tp.partition, offset=rec.offset,
                                       error_kind=exc.kind.value, error=exc.message, value=rec.value, key=rec.key,
                                       consumer=self.config.group_id)
        value, headers = encode(make_event(letter, source=SOURCE, tenant_id="unknown",
                                           event_id=uuid.uuid5(_DL_NS, f"{position}/{self.config.group_id}")))
        self.stats.dead_letters += 1
        return await producer.send(self.topics.deadletter, value, key=position.encode(), headers=headers)

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The partition moved to another member: it redelivers from the last commit, with the same dedup keys.
            self.stats.commits_failed += 1
            log.warning("notifier: commit failed (%s); those alerts will be delivered again", exc)
            return
        self.stats.commits += 1
        for tp, offset in offsets.items():
            self.stats.committed[f"{tp.topic}/{tp.partition}"] = offset


async def run_notifier(
    settings: Settings,
    config: NotifierConfig,
    *,
    topics: NotifierTopics | None = None,
    console: TextIO | None = None,
    handle_signals: bool = True,
) -> NotifierStats:
    """Run the notifier until SIGINT/SIGTERM (when ``handle_signals``) or cancellation; returns its counters.

    Console lines (when ``config.console``) go to ``console``, standard output by default.
    """
    notifier = Notifier(settings, config, topics=topics, console=console)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, notifier.stop)
    try:
        await notifier.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return notifier.stats
