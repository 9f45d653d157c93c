"""Following compacted state topics (rollouts, rollout specs, prompts) from the beginning, without a consumer group.

Every instance of a service (every router, every judge) must see every state event, so a follower assigns
itself all partitions of its topics and reads them from offset 0: the compacted topic's latest event per key is
the state, and replaying it rebuilds that state after any restart. Each decoded event goes to the service's
``apply`` callback in topic order; an undecodable one is logged and skipped (the same bad record would
otherwise be dead-lettered by every instance at every start), and a tombstone (no value) is skipped.

``ready`` is set once the follower has read up to the fetch high-water mark of every partition it follows, i.e.
the state as of its start is complete; it keeps following afterwards, so a change (a rollback) applies within
one poll interval. "Caught up" uses the fetch high-water mark, which is right on every broker, not
ListOffsets 'latest' (``end_offsets``), which is wrong on the local one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from pydantic import BaseModel

from schemas.codec import DecodeError, decode
from schemas.envelope import Envelope
from services.core.kafka.config import aiokafka_consumer_kwargs
from services.core.kafka.from_beginning import assign_from_beginning, caught_up
from services.core.settings import Settings

log = logging.getLogger(__name__)

Apply = Callable[[Envelope[Any], ConsumerRecord[bytes, bytes]], None]


class CompactedFollower:
    """Reads ``topics`` from the beginning into ``apply`` until :meth:`stop`; ``ready`` once caught up."""

    def __init__(
        self,
        settings: Settings,
        topics: list[str],
        apply: Apply,
        *,
        expect: type[BaseModel] | tuple[type[BaseModel], ...] | None = None,
        poll_ms: int = 200,
        name: str = "follower",
    ) -> None:
        self.settings = settings
        self.topics = list(topics)
        self.apply = apply
        self.expect = expect
        self.poll_ms = poll_ms
        self.name = name
        self.ready = asyncio.Event()
        self.applied = 0
        self.skipped = 0
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(self.settings, None, fetch_max_wait_ms=self.poll_ms))
        try:
            await consumer.start()
            tps = await assign_from_beginning(consumer, self.topics)
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=self.poll_ms)
                for records in batches.values():
                    for record in records:
                        self._apply(record)
                if not self.ready.is_set() and await caught_up(consumer, tps):
                    self.ready.set()
                    log.info("%s: read %s to the end (%d partition(s)): %d applied, %d skipped", self.name,
                             ", ".join(self.topics), len(tps), self.applied, self.skipped)
        finally:
            await consumer.stop()

    def _apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.value is None:
            return  # a tombstone
        try:
            event = decode(record.value, record.headers, expect=self.expect)
        except DecodeError as exc:
            self.skipped += 1
            log.warning("%s: skipping bad event at %s/%s/%s: %s", self.name, record.topic, record.partition,
                        record.offset, exc)
            return
        self.apply(event, record)
        self.applied += 1

    async def wait_ready(self, task: asyncio.Task[None], timeout_s: float) -> None:
        """Wait until caught up; the follower's own error if ``task`` (its :meth:`run`) failed first; else
        TimeoutError after ``timeout_s``."""
        ready = asyncio.ensure_future(self.ready.wait())
        try:
            await asyncio.wait({ready, task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if task.done() and not self.ready.is_set():
            task.result()  # raises the follower's error
            raise RuntimeError(f"{self.name}: stopped before reading {self.topics} to the end")
        if not self.ready.is_set():
            raise TimeoutError(f"{self.name}: {self.topics} not read to the end within {timeout_s}s")
