"""Reading topics from the beginning without a consumer group (compacted state topics: rollouts, specs).

"Caught up" is judged by the fetch high-water mark, which is right on every broker; ListOffsets 'latest'
(``end_offsets``) is wrong on the local one.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, TopicPartition

RETRY_S = 0.2
"""Pause between metadata refreshes while a topic to read is unknown."""


class TopicMissing(RuntimeError):
    """A topic to read has no partitions in the cluster's metadata (it does not exist, or not yet)."""


async def assign_from_beginning(
    consumer: AIOKafkaConsumer, names: list[str], timeout_s: float = 30.0,
) -> list[TopicPartition]:
    """Assign every partition of the topics and seek to the beginning.

    The partitions come from the consumer's own metadata, refreshed until every topic is in it: metadata
    fetched at start misses a topic created afterwards, and assigning no partitions would read nothing, forever,
    and look caught up. ``TopicMissing`` if a topic is still unknown after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        parts = {n: consumer.partitions_for_topic(n) for n in names}
        missing = sorted(n for n, p in parts.items() if not p)
        if not missing:
            break
        if time.monotonic() > deadline:
            raise TopicMissing(f"topic(s) {', '.join(missing)} not found in the cluster metadata within {timeout_s}s")
        # aiokafka has no public refresh: consumer.topics() fetches into a separate object, not the consumer's
        # metadata that partitions_for_topic reads.
        await consumer._client.force_metadata_update()
        if any(not consumer.partitions_for_topic(n) for n in missing):
            await asyncio.sleep(RETRY_S)  # the topic is still being created, or not at all: do not spin on the broker
    tps = [TopicPartition(n, p) for n in names for p in sorted(parts[n] or set())]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return tps


async def caught_up(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
    """True once every partition's position reached the fetch high-water mark."""
    for tp in tps:
        high = consumer.highwater(tp)
        if high is None or await consumer.position(tp) < high:
            return False
    return True
