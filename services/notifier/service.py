"""The notifier: ``llm.alerts`` in (consumer group, on the consumer runtime), webhooks and the console out.

Each alert is printed (if the console is on) and posted to every webhook whose filters match, all webhooks of
an alert and many alerts concurrently (at most ``batch_size`` alerts open and ``max_in_flight`` deliveries at
once). The consumer runtime (:class:`~services.core.kafka.consumer.GroupConsumer`) dead-letters undecodable or
wrong-type records and commits an alert's offset only once every delivery of it has finished, delivered or
failed permanently: at-least-once, and the dedup key (the envelope's event_id) lets receivers drop a
redelivery. In one process the same event is not posted twice to a webhook (an LRU of recently delivered
keys, and a second copy of an event still being delivered waits for the first). ``stop()`` lets in-flight
requests end, interrupts pending retries and commits only what finished; the rest is delivered again, with the
same dedup key, by whoever consumes the partition next.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TextIO

import httpx

from schemas.alerts import Alert
from schemas.envelope import Envelope, utc_now
from schemas.topics import ALERTS, DEADLETTER
from services.core import metrics
from services.core.kafka.admin import ensure_topics
from services.core.kafka.consumer import ConsumerStats, GroupConsumer, Record, Work
from services.core.settings import Settings
from services.notifier.config import NotifierConfig, WebhookConfig
from services.notifier.console import print_alert
from services.notifier.webhook import DeliveryResult, Outcome, WebhookSender, build_body, dedup_key

log = logging.getLogger(__name__)
SOURCE = "llmops.notifier"
CONSOLE = "<console>"


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
    consumer: ConsumerStats = field(default_factory=ConsumerStats)
    """The consumer runtime's counters: dead letters, commits, committed positions."""

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
    """Deliver alerts until ``stop()``. ``ready`` is set once the consumer holds partitions."""

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
        self.consumer = GroupConsumer(
            settings, topics=[self.topics.alerts], group_id=config.group_id, handler=self._on_alert, expect=Alert,
            source=SOURCE, deadletter_topic=self.topics.deadletter, max_in_flight=config.batch_size, poll_ms=poll_ms,
            consumer_overrides={"max_poll_interval_ms": config.max_poll_interval_ms()},
        )
        self.stats = NotifierStats(consumer=self.consumer.stats)
        self.ready = self.consumer.assigned
        self._client = client
        self._sender: WebhookSender | None = None
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._delivering: dict[str, asyncio.Task[bool]] = {}

    def stop(self) -> None:
        self._stopping.set()
        self.consumer.stop()

    async def run(self) -> None:
        metrics.start_metrics_server(self.settings)
        await asyncio.to_thread(ensure_topics, self.settings, [
            dataclasses.replace(ALERTS, name=self.topics.alerts),
            dataclasses.replace(DEADLETTER, name=self.topics.deadletter),
        ])
        try:
            async with WebhookSender(self.config.retry, client=self._client) as sender:
                self._sender = sender
                await self.consumer.run()
        finally:
            self._sender = None
            s = self.stats
            log.info("notifier stopped: %d alerts, delivered %s, failed %s, %d dead letters",
                     s.alerts, s.delivered, s.failed, s.consumer.dead_lettered)

    async def _on_alert(self, event: Envelope[Alert], record: Record) -> Work:
        """Start delivering one alert; the runtime commits its offset once the returned task says it finished."""
        self.stats.alerts += 1
        key = dedup_key(event)
        if key in self._delivering:  # the same event again (e.g. a producer retry) while it is being delivered
            self.stats.duplicates_skipped += 1
            return self._delivering[key]
        assert self._sender is not None
        task = asyncio.create_task(self._handle(self._sender, event))
        self._delivering[key] = task
        task.add_done_callback(lambda _: self._delivering.pop(key, None))
        return task

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
            metrics.ALERT_DELIVERIES.labels(sink=CONSOLE, outcome="delivered").inc()
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
        metrics.ALERT_DELIVERIES.labels(sink=webhook.name, outcome=result.outcome.value).inc()
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
