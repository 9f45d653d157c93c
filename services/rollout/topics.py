"""Where rollout data lives on Kafka: the topic names (injectable, for tests) and reading a compacted topic to its end.

Reading to the end uses the fetch high-water mark, never ListOffsets 'latest' (wrong on the local broker).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from schemas.aggregates import DeploymentWindow
from schemas.alerts import Alert
from schemas.deadletter import DeadLetter
from schemas.rollout_specs import RolloutSpecRecord
from schemas.rollouts import RolloutEvent
from schemas.topics import ALERTS, DEADLETTER, DEPLOYMENT_WINDOWS, ROLLOUT_SPECS, ROLLOUTS, TopicSpec
from services.kafka.admin import ensure_topics
from services.kafka.config import aiokafka_consumer_kwargs
from services.kafka.from_beginning import assign_from_beginning, caught_up
from services.settings import Settings


@dataclass(frozen=True)
class RolloutTopics:
    windows: str = DEPLOYMENT_WINDOWS.name
    rollouts: str = ROLLOUTS.name
    specs: str = ROLLOUT_SPECS.name
    alerts: str = ALERTS.name
    deadletter: str = DEADLETTER.name

    def specs_for_creation(self, windows_partitions: int = DEPLOYMENT_WINDOWS.partitions) -> list[TopicSpec]:
        """Topic specs for every topic here (used to create the spec topic, and test topics)."""
        return [
            TopicSpec(self.windows, DeploymentWindow, "deployment_id", windows_partitions),
            TopicSpec(self.rollouts, RolloutEvent, "alias", 1, cleanup_policy="compact", retention_ms=None),
            TopicSpec(self.specs, RolloutSpecRecord, "alias", 1, cleanup_policy="compact", retention_ms=None),
            TopicSpec(self.alerts, Alert, "alert_id", 1),
            TopicSpec(self.deadletter, DeadLetter, "original topic/partition/offset", 1),
        ]


async def ensure_rollout_topics(settings: Settings, topics: RolloutTopics) -> None:
    """Create the rollout topics that are missing (for topics renamed in tests; the catalog creates the defaults)."""
    await asyncio.to_thread(ensure_topics, settings, topics.specs_for_creation())


async def read_to_end(settings: Settings, names: list[str], timeout_s: float = 30.0) -> list[ConsumerRecord]:
    """Every record of the topics, from the beginning to the current end, in offset order per partition."""
    consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    out: list[ConsumerRecord] = []
    try:
        tps = await assign_from_beginning(consumer, names)
        deadline = time.monotonic() + timeout_s
        while True:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                out.extend(records)
            if await caught_up(consumer, tps):
                return out
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {', '.join(names)} to the end within {timeout_s}s")
    finally:
        await consumer.stop()
