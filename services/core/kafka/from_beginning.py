"""Reading topics from the beginning without a consumer group (compacted state topics: rollouts, specs).

"Caught up" is judged by the fetch high-water mark, which is right on every broker; ListOffsets 'latest'
(``end_offsets``) is wrong on the local one.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition


async def assign_from_beginning(consumer: AIOKafkaConsumer, names: list[str]) -> list[TopicPartition]:
    """Assign every partition of the topics and seek to the beginning."""
    await consumer.topics()  # refresh metadata, so topics created a moment ago are known
    tps = [TopicPartition(n, p) for n in names for p in sorted(consumer.partitions_for_topic(n) or set())]
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
