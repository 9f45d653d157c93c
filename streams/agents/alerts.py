"""Alert agent: publish an Alert to ``llm.alerts`` once per ``alert_id`` and record it in ``alerts_log``.

"Once" survives restarts: before publishing, the id is looked up in ``alerts_log`` (and in memory).
The alert is published first and logged second, so a crash in between republishes it with the same
``alert_id`` (the notifiers' dedup key) rather than losing it.
"""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaProducer

from schemas.alerts import Alert
from schemas.codec import encode, make_event
from streams.sink.clickhouse import ClickHouseWriter

ALERT_COLUMNS = ["alert_id", "kind", "severity", "tenant_id", "deployment_id", "title", "detail", "observed"]
_NS = uuid.UUID("0c8a1f0e-8d0b-4c51-9a2e-5d2f3c4b6a70")


class AlertPublisher:
    """Raise-once alerts."""

    def __init__(self, producer: AIOKafkaProducer, writer: ClickHouseWriter, topic: str, source: str = "streams") -> None:
        self.producer = producer
        self.writer = writer
        self.topic = topic
        self.source = source
        self._raised: set[str] = set()

    async def already_raised(self, alert_id: str) -> bool:
        if alert_id in self._raised:
            return True
        rows = await self.writer.query("SELECT count() FROM alerts_log WHERE alert_id = {a:String}", {"a": alert_id})
        if rows and rows[0][0]:
            self._raised.add(alert_id)
            return True
        return False

    async def raise_once(self, alerts: list[tuple[Alert, str]]) -> list[Alert]:
        """Publish and log each (alert, tenant) not raised before; returns those published now."""
        fresh: dict[str, tuple[Alert, str]] = {}
        for alert, tenant in alerts:
            if alert.alert_id not in fresh and not await self.already_raised(alert.alert_id):
                fresh[alert.alert_id] = (alert, tenant)
        if not fresh:
            return []
        futures = []
        for alert, tenant in fresh.values():
            value, headers = encode(make_event(
                alert, source=self.source, tenant_id=tenant or "unknown", event_id=uuid.uuid5(_NS, alert.alert_id)
            ))
            futures.append(await self.producer.send(self.topic, value, key=alert.alert_id.encode(), headers=headers))
        for fut in futures:
            await fut
        await self.writer.insert("alerts_log", [
            [a.alert_id, a.kind, a.severity, t, a.deployment_id or "", a.title, a.detail, a.observed]
            for a, t in fresh.values()
        ], ALERT_COLUMNS)
        self._raised.update(fresh)
        return [a for a, _ in fresh.values()]

    async def publish(self, alert: Alert, tenant: str) -> None:
        """Publish and log an alert that is not deduplicated across ids (e.g. one per drift check)."""
        await self.raise_once([(alert, tenant)])
