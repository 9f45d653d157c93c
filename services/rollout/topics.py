"""Where rollout data lives on Kafka: the topic names (injectable, for tests) and reading a compacted topic to its end.

Reading to the end uses the fetch high-water mark, never ListOffsets 'latest' (wrong on the local broker).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from schemas.topics import ALERTS, DEADLETTER, DEPLOYMENT_WINDOWS, ROLLOUT_SPECS, ROLLOUTS, TopicSpec
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import aiokafka_consumer_kwargs
from services.core.kafka.from_beginning import assign_from_beginning, caught_up
from services.core.settings import Settings


@dataclass(frozen=True)
class RolloutTopics:
    windows: str = DEPLOYMENT_WINDOWS.name
    rollouts: str = ROLLOUTS.name
    specs: str = ROLLOUT_SPECS.name
    alerts: str = ALERTS.name
    deadletter: str = DEADLETTER.name

    def specs_for_creation(self, windows_partitions: int | None = None) -> list[TopicSpec]:
        """The catalog's spec of every topic here, under the configured names (retention and layout from the catalog;
        tests may ask for another partition count of the windows topic)."""
        windows = DEPLOYMENT_WINDOWS.renamed(self.windows)
        if windows_partitions is not None:
            windows = replace(windows, partitions=windows_partitions)
        return [
            windows, ROLLOUTS.renamed(self.rollouts), ROLLOUT_SPECS.renamed(self.specs),
            ALERTS.renamed(self.alerts), DEADLETTER.renamed(self.deadletter),
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
