"""Alerts: raise once per condition on ``llm.alerts``; log every alert on the topic in ``alerts_log`` exactly once.

* :class:`AlertPublisher` publishes an ``Alert`` to the topic unless its ``alert_id`` was raised before (in this
  process, or found in ``alerts_log``). Ids are stable per condition, so notifiers and the log deduplicate a
  republication after a crash.
* :class:`Incidents` turns a condition that holds over many windows or checks into *one* alert when it starts and
  one more when it ends (``<kind>:<key>:<start>`` and the same id with ``:resolved``), instead of one per window.
  Open incidents are read back from ``alerts_log`` on first use, so a restart neither reopens nor forgets them.
* :class:`AlertIngest` is the one writer of ``alerts_log``: it consumes ``llm.alerts`` (alerts of the stream
  agents, the judge, anyone) and inserts each ``alert_id`` not yet logged. ``llm.alerts`` has one partition and
  the agent runs with concurrency 1, so check-then-insert is not raced; the table (ReplacingMergeTree by
  ``alert_id``) collapses anything a rebalance lets through twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from schemas.alerts import Alert
from schemas.codec import DecodeError, decode, encode, make_event
from schemas.deadletter import DeadLetter
from services.core import metrics
from services.core.clickhouse.writer import ClickHouseWriter
from services.core.faust_runtime import OutMessage, Record
from streams.concerns.decode import dead_letter
from streams.concerns.sink import Sink

log = logging.getLogger(__name__)

ALERT_COLUMNS = ["alert_id", "kind", "severity", "tenant_id", "deployment_id", "title", "detail", "observed",
                 "raised_at", "source"]
_NS = uuid.UUID("0c8a1f0e-8d0b-4c51-9a2e-5d2f3c4b6a70")
RESOLVED = ":resolved"

Publish = Callable[[Sequence[OutMessage]], Awaitable[None]]


class AlertPublisher:
    """Raise-once alerts, published to the alerts topic (``alerts_log`` is written by :class:`AlertIngest`)."""

    def __init__(self, publish: Publish, writer: ClickHouseWriter, topic: str, source: str = "streams") -> None:
        self.publish = publish
        self.writer = writer
        self.topic = topic
        self.source = source
        self._raised: set[str] = set()
        self.raised = 0

    async def raise_once(self, alerts: Sequence[tuple[Alert, str]]) -> list[Alert]:
        """Publish each (alert, tenant) whose id was not raised before; returns those published now."""
        fresh = {a.alert_id: (a, t) for a, t in alerts if a.alert_id not in self._raised}
        if fresh:
            rows = await self.writer.query("SELECT DISTINCT alert_id FROM alerts_log WHERE alert_id IN {a:Array(String)}",
                                           {"a": sorted(fresh)})
            for (logged,) in rows:
                self._raised.add(logged)
                fresh.pop(logged, None)
        if not fresh:
            return []
        messages = []
        for alert, tenant in fresh.values():
            value, headers = encode(make_event(alert, source=self.source, tenant_id=tenant or "unknown",
                                               event_id=uuid.uuid5(_NS, alert.alert_id)))
            messages.append(OutMessage(self.topic, alert.alert_id.encode(), value, headers))
        await self.publish(messages)
        self._raised.update(fresh)
        self.raised += len(fresh)
        for alert, _ in fresh.values():
            log.info("alert raised: %s (%s)", alert.alert_id, alert.title)
            metrics.ALERTS_RAISED.labels(service="streams", kind=alert.kind).inc()
        return [a for a, _ in fresh.values()]


def _stamp(at: datetime) -> str:
    return at.strftime("%Y%m%dT%H%M%SZ")


class Incidents:
    """Open/resolve alerts of one kind, per key (e.g. a deployment)."""

    def __init__(self, kind: str, writer: ClickHouseWriter) -> None:
        self.kind = kind
        self.writer = writer
        self._open: dict[str, str] | None = None
        """key -> alert id of its open incident."""

    async def _load(self) -> dict[str, str]:
        if self._open is None:
            rows = await self.writer.query("SELECT DISTINCT alert_id FROM alerts_log WHERE kind = {k:String}",
                                           {"k": self.kind})
            ids = {r[0] for r in rows}
            self._open = {}
            for alert_id in sorted(ids):
                if alert_id.endswith(RESOLVED) or alert_id + RESOLVED in ids or ":" not in alert_id:
                    continue
                key = alert_id[len(self.kind) + 1: alert_id.rindex(":")]
                self._open[key] = alert_id
        return self._open

    async def is_open(self, key: str) -> bool:
        return key in await self._load()

    async def update(self, key: str, active: bool, at: datetime, open_alert: Callable[[str], Alert],
                     resolve_alert: Callable[[str], Alert]) -> Alert | None:
        """The alert to raise now: an opening when ``active`` starts, a resolution when it stops, else None.

        ``open_alert(alert_id)`` and ``resolve_alert(alert_id)`` build the alert with the given id.
        """
        opened = await self._load()
        if active and key not in opened:
            opened[key] = f"{self.kind}:{key}:{_stamp(at)}"
            return open_alert(opened[key])
        if not active and key in opened:
            return resolve_alert(opened.pop(key) + RESOLVED)
        return None


class AlertIngest:
    """Batches of ``llm.alerts`` records -> ``alerts_log`` rows, one per alert_id; undecodable ones -> dead letters."""

    def __init__(self, sink: Sink, consumer: str) -> None:
        self.sink = sink
        self.consumer = consumer
        self.logged = 0

    async def handle(self, records: list[Record]) -> list[DeadLetter]:
        """Log the batch's new alerts; returns the dead letters of records that are not alerts."""
        rows: dict[str, list[Any]] = {}
        sources: dict[str, Record] = {}
        letters = []
        for rec in records:
            try:
                event = decode(rec.value, rec.headers, expect=Alert)
            except DecodeError as exc:
                letters.append(dead_letter(rec, exc.kind.value, str(exc), self.consumer))
                continue
            a = event.payload
            sources.setdefault(a.alert_id, rec)
            rows.setdefault(a.alert_id, [a.alert_id, a.kind, a.severity, event.tenant_id, a.deployment_id or "", a.title,
                                         a.detail, a.observed, event.occurred_at, event.source])
        if rows:
            logged = await self.sink.writer("alerts_log").query(
                "SELECT DISTINCT alert_id FROM alerts_log WHERE alert_id IN {a:Array(String)}", {"a": sorted(rows)})
            for (alert_id,) in logged:
                rows.pop(alert_id, None)
        fresh = list(rows.values())
        rejected = await self.sink.insert("alerts_log", fresh, ALERT_COLUMNS)
        for i, reason in rejected:
            letters.append(dead_letter(sources[fresh[i][0]], "rejected", reason, self.consumer))
        self.logged += len(fresh) - len(rejected)
        return letters
