"""The consumer runtime of the plain Kafka services (router, notifier, inference replica): one group consumer loop.

A service gives :class:`GroupConsumer` its topics, group, expected payload type and a handler; the runtime does
the rest the same way for all of them:

* **Decode** each record with the one codec; a record that does not decode goes to the dead-letter topic
  (:mod:`services.core.kafka.deadletters`) and counts as done.
* **Handle** it: ``await handler(event, record)`` is called in partition order. It returns ``None`` when the
  record's side effects are already acknowledged, or an awaitable (a producer ack, a task) that finishes when they
  are. Records finish in any order; the runtime commits, per partition, up to the first record not finished
  (:class:`~services.core.kafka.offsets.OffsetTracker`), periodically, on a rebalance and at stop. So nothing is
  committed before its side effects are acknowledged (at-least-once; outputs carry ids that make a redelivery
  harmless).
* **Failures**: a transient one (the broker unreachable, a timeout: :func:`is_transient`) makes the runtime call
  the handler again for that record, with backoff, until it succeeds or the service stops. Any other exception,
  raised by the handler or by its awaitable, dead-letters the record with kind ``processing_failed`` and the
  error, and the loop goes on: one bad record never stops a service nor blocks its partition. An awaitable that
  resolves to ``False`` means "released, not done" (e.g. interrupted by a stop): the record stays uncommitted
  and is redelivered to whoever consumes the partition next.
* **Backpressure**: at most ``max_in_flight`` records are open at once; when full, every assigned partition is
  paused until there is room again, so nothing is buffered without bound.
* **Rebalance**: before partitions are revoked, their open work gets ``revoke_grace_s`` to finish, done records
  are committed, and the service's ``on_revoked`` releases what is left (the new owner redoes it).
* **Graceful stop** (:meth:`GroupConsumer.stop`, wired to SIGTERM by :mod:`services.core.signals`): stop
  fetching, give open work ``shutdown_grace_s``, let the service release the rest (``on_stopping``), commit
  what is done, leave the group.

Faust apps (the stream worker, the judge) do not use this: they have their own guard rails
(:mod:`services.core.faust_runtime`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.structs import OffsetAndMetadata
from pydantic import BaseModel

from schemas.codec import DecodeError, decode, encode
from schemas.envelope import Envelope
from schemas.topics import DEADLETTER
from services.core import metrics
from services.core.errors import is_transient
from services.core.kafka.config import aiokafka_consumer_kwargs, aiokafka_producer_kwargs
from services.core.kafka.deadletters import position, send_dead_letter
from services.core.kafka.offsets import OffsetTracker
from services.core.settings import Settings

log = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[bytes, bytes]
Work: TypeAlias = Awaitable[object]
"""Finishes when a record's side effects are acknowledged; resolving to ``False`` means released, not done."""
Handler: TypeAlias = Callable[[Envelope[Any], Record], Awaitable[Work | None]]
PartitionsHook: TypeAlias = Callable[[set[TopicPartition]], Awaitable[None]]

PROCESSING_FAILED = "processing_failed"
"""The dead-letter kind of a record whose handling raised something other than a transient failure."""


@dataclass
class ConsumerStats:
    """Counters since start."""

    consumed: int = 0
    done: int = 0
    dead_lettered: int = 0
    failed: int = 0
    """Records whose handling raised a non-transient error (each one dead-lettered)."""
    retries: int = 0
    """Transient failures retried."""
    released: int = 0
    paused_times: int = 0
    max_in_flight: int = 0
    revoked: int = 0
    """Partitions taken away by rebalances."""
    commits: int = 0
    commits_failed: int = 0
    committed: dict[str, int] = field(default_factory=dict)
    """``topic/partition`` -> the last committed position (the next record to read)."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no type information
    def __init__(self, runtime: GroupConsumer) -> None:
        self.runtime = runtime

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.runtime._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.runtime._assigned(set(assigned))


class GroupConsumer:
    """One consumer group member running a service's handler; ``run()`` until :meth:`stop`."""

    def __init__(
        self,
        settings: Settings,
        *,
        topics: list[str],
        group_id: str,
        handler: Handler,
        expect: type[BaseModel] | tuple[type[BaseModel], ...],
        source: str,
        deadletter_topic: str = DEADLETTER.name,
        max_in_flight: int = 5000,
        poll_ms: int = 200,
        commit_interval_s: float = 0.2,
        shutdown_grace_s: float = 10.0,
        revoke_grace_s: float = 5.0,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        on_revoked: PartitionsHook | None = None,
        on_stopping: Callable[[], Awaitable[None]] | None = None,
        consumer_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.topics = list(topics)
        self.group_id = group_id
        self.handler = handler
        self.expect = expect
        self.source = source
        self.deadletter_topic = deadletter_topic
        self.max_in_flight = max_in_flight
        self.poll_ms = poll_ms
        self.commit_interval_s = commit_interval_s
        self.shutdown_grace_s = shutdown_grace_s
        self.revoke_grace_s = revoke_grace_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.on_revoked = on_revoked
        self.on_stopping = on_stopping
        self.consumer_overrides = dict(consumer_overrides or {})
        self.stats = ConsumerStats()
        self.started = asyncio.Event()
        """Set once the consumer is started and subscribed (before the group join completes)."""
        self.assigned = asyncio.Event()
        """Set once this member holds partitions."""
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._offsets = OffsetTracker()
        self._open: dict[asyncio.Future[object], TopicPartition] = {}
        """The outcome of every open record, and its partition."""
        self._paused: set[TopicPartition] = set()
        self._stop = asyncio.Event()

    # ---- what services use -------------------------------------------------------------------------------

    @property
    def producer(self) -> AIOKafkaProducer:
        """The runtime's producer (started in :meth:`run`), for the service's own outputs."""
        if self._producer is None:
            raise RuntimeError("the consumer runtime is not running")
        return self._producer

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Stop fetching; :meth:`run` then finishes open work (within the grace period), commits and returns."""
        self._stop.set()

    async def send(self, topic: str, event: Envelope[Any], key: str | bytes | None) -> asyncio.Future[Any]:
        """Publish an event with the one codec; returns the broker's acknowledgement to await (or to return as work)."""
        value, headers = encode(event)
        key_bytes = key.encode() if isinstance(key, str) else key
        ack: asyncio.Future[Any] = await self.producer.send(topic, value, key=key_bytes, headers=headers)
        return ack

    def in_flight(self) -> int:
        return self._offsets.in_flight()

    # ---- lifecycle -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        self._producer = AIOKafkaProducer(**aiokafka_producer_kwargs(self.settings))
        self._consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(self.settings, self.group_id, **self.consumer_overrides))
        try:
            await self._producer.start()
            try:
                await self._consumer.start()
                self._consumer.subscribe(self.topics, listener=_Rebalance(self))
                self.started.set()
                committer = asyncio.create_task(self._commit_periodically())
                try:
                    await self._consume()
                    await self._wait_for_work(set(self._open), self.shutdown_grace_s)
                finally:
                    committer.cancel()
                    await asyncio.gather(committer, return_exceptions=True)
                    await self._release_the_rest()
                    await self._commit()
            finally:
                await self._consumer.stop()
        finally:
            await self._producer.stop()
            self.started.clear()
            self.assigned.clear()

    async def _release_the_rest(self) -> None:
        if self.on_stopping is not None:
            await self.on_stopping()
        await self._wait_for_work(set(self._open), 2.0)
        # Still open: left uncommitted, redelivered to the next member. Tasks are cancelled (a plain future, e.g. a
        # producer's ack, belongs to its producer and is left alone).
        tasks = [f for f in self._open if isinstance(f, asyncio.Task)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- consuming -----------------------------------------------------------------------------------------

    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self._stop.is_set():
            self._apply_backpressure()
            room = self.max_in_flight - self._offsets.in_flight()
            # When full, every partition is paused: the poll returns nothing, but it keeps this member in the group
            # (a consumer that stops polling for max_poll_interval_ms is dropped from it).
            batches = await consumer.getmany(timeout_ms=self.poll_ms if room > 0 else 50, max_records=max(room, 1))
            for tp, records in batches.items():
                metrics.CONSUMER_LAG.labels(service=self.group_id, topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, (consumer.highwater(tp) or 0) - records[-1].offset - 1))
                for record in records:
                    if self._stop.is_set():
                        consumer.seek(tp, record.offset)  # not started: this member must not skip it
                        break
                    if tp not in consumer.assignment():
                        break  # revoked while this batch was being handled: the new owner reads it
                    await self._start(tp, record)

    async def _start(self, tp: TopicPartition, record: Record) -> None:
        self.stats.consumed += 1
        self._offsets.started(tp, record.offset)
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._offsets.in_flight())
        try:
            event = decode(record.value, record.headers, expect=self.expect)
        except DecodeError as exc:
            self._follow(tp, record, None, self._dead_letter(record, exc.kind.value, str(exc)))
            return
        try:
            work = await self.handler(event, record)
        except Exception as exc:  # noqa: BLE001 - classified in _recover
            self._follow(tp, record, event, self._recover(event, record, exc))
            return
        if work is None:
            self._finished(tp, record.offset)
        else:
            self._follow(tp, record, event, work)

    def _follow(self, tp: TopicPartition, record: Record, event: Envelope[Any] | None, outcome: Awaitable[object]) -> None:
        """Keep the record open until ``outcome`` finishes (a done-callback: no task per record for a future)."""
        future = asyncio.ensure_future(outcome)
        self._open[future] = tp
        future.add_done_callback(functools.partial(self._settled, tp, record, event))

    def _settled(self, tp: TopicPartition, record: Record, event: Envelope[Any] | None, future: asyncio.Future[object]) -> None:
        """The outcome of an open record: done, released (False, cancelled), or an error to recover from."""
        self._open.pop(future, None)
        if future.cancelled():
            self.stats.released += 1
            return
        error = future.exception()
        if error is None:
            if future.result() is False:
                self.stats.released += 1
            else:
                self._finished(tp, record.offset)
        elif event is None or not isinstance(error, Exception):
            log.error("%s: %s left open after an unexpected error", self.group_id, position(record), exc_info=error)
        else:
            self._follow(tp, record, event, self._recover(event, record, error))

    def _finished(self, tp: TopicPartition, offset: int) -> None:
        self.stats.done += 1
        metrics.EVENTS_PROCESSED.labels(service=self.group_id, topic=tp.topic).inc()
        self._offsets.done(tp, offset)

    async def _recover(self, event: Envelope[Any], record: Record, error: Exception) -> bool:
        """After a failure: retry transient ones (calling the handler again), dead-letter others. True when done."""
        delay = self.retry_initial_s
        while True:
            if not is_transient(error):
                self.stats.failed += 1
                log.error("%s: %s failed (%s: %s); dead-lettering it", self.group_id, position(record),
                          type(error).__name__, error)
                return await self._dead_letter(record, PROCESSING_FAILED, f"{type(error).__name__}: {error}")
            self.stats.retries += 1
            log.warning("%s: %s: transient failure (%s); retrying in %.1fs", self.group_id, position(record),
                        error, delay)
            if not await self._sleep_unless_stopped(delay):
                return False
            delay = min(delay * 2, self.retry_max_s)
            try:
                work = await self.handler(event, record)
                return work is None or (await work) is not False
            except Exception as exc:  # noqa: BLE001 - classified on the next turn
                error = exc

    async def _dead_letter(self, record: Record, kind: str, error: str) -> bool:
        """Publish the record's dead letter, retrying until acknowledged; False if stopped first (left open)."""
        delay = self.retry_initial_s
        while True:
            try:
                ack = await send_dead_letter(self.producer, record, kind, error, consumer=self.group_id,
                                             source=self.source, topic=self.deadletter_topic)
                await ack
            except Exception as exc:  # noqa: BLE001 - the broker is the only way out: keep trying until stopped
                log.warning("%s: dead letter for %s not acknowledged (%s); retrying in %.1fs", self.group_id,
                            position(record), exc, delay)
                if not await self._sleep_unless_stopped(delay):
                    return False
                delay = min(delay * 2, self.retry_max_s)
                continue
            self.stats.dead_lettered += 1
            metrics.DEAD_LETTERS.labels(service=self.group_id, topic=record.topic, reason=kind).inc()
            log.warning("%s: dead-lettered %s (%s): %s", self.group_id, position(record), kind, error[:300])
            return True

    async def _sleep_unless_stopped(self, seconds: float) -> bool:
        """Sleep; False (at once) if the runtime is stopping."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False

    # ---- backpressure, rebalances and commits -------------------------------------------------------------

    def _is_full(self) -> bool:
        return self._offsets.in_flight() >= self.max_in_flight

    def _apply_backpressure(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        assigned = consumer.assignment()
        if self._is_full():
            to_pause = assigned - self._paused
            if to_pause:
                consumer.pause(*to_pause)
                self._paused |= to_pause
                self.stats.paused_times += 1
        elif self._paused:
            consumer.resume(*(self._paused & assigned))
            self._paused.clear()

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned and self._consumer is not None and self._is_full():
            self._consumer.pause(*assigned)
            self._paused |= assigned
        if assigned:
            self.assigned.set()

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        self.stats.revoked += len(revoked)
        await self._wait_for_work({f for f, tp in self._open.items() if tp in revoked}, self.revoke_grace_s)
        await self._commit()
        if self.on_revoked is not None:
            await self.on_revoked(revoked)
        self._offsets.forget(revoked)
        self._paused -= revoked

    async def _wait_for_work(self, outcomes: set[asyncio.Future[object]], timeout_s: float) -> None:
        if outcomes and timeout_s > 0:
            await asyncio.wait(outcomes, timeout=timeout_s)

    async def _commit(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        assigned = consumer.assignment()
        positions = {tp: pos for tp, pos in self._offsets.committable().items() if tp in assigned}
        if not positions:
            return
        try:
            await consumer.commit({tp: OffsetAndMetadata(pos, "") for tp, pos in positions.items()})
        except Exception as exc:  # noqa: BLE001 - e.g. a rebalance in progress: the next commit (or the new owner) covers it
            self.stats.commits_failed += 1
            log.warning("%s: offset commit failed (%s); will retry", self.group_id, exc)
            return
        self._offsets.mark_committed(positions)
        self.stats.commits += 1
        for tp, pos in positions.items():
            self.stats.committed[f"{tp.topic}/{tp.partition}"] = pos

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.commit_interval_s)
            await self._commit()
