"""One replica's Kafka loop: consume ``llm.dispatch.<deployment>``, feed the engine, publish chunks and completions.

* Consumer group ``inference.<deployment>``; offsets are committed only after a request's Completion (and its
  chunks) were acknowledged by the broker, per partition up to the first offset still in flight (at-least-once:
  a crash or a revoked partition means redelivery, never loss; completions may be duplicated, consumers dedup on
  ``request_id``).
* Undecodable messages go to ``llm.deadletter`` (then their offset counts as done); bad requests get an error
  Completion; the loop keeps serving.
* Backpressure: when the engine holds ``max_queued_requests`` + ``max_batch_size`` unfinished requests, every
  assigned partition is paused until there is room again, so nothing is buffered without bound.
* ``stop()`` stops fetching, lets in-flight requests finish within the grace period, commits what was acknowledged,
  and releases the rest (left uncommitted, so the group redelivers them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.structs import OffsetAndMetadata
from pydantic import BaseModel

from schemas.codec import DecodeError, decode, encode, make_event
from schemas.completions import Completion
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope
from schemas.requests import InferenceRequest
from schemas.topics import COMPLETION_CHUNKS, COMPLETIONS, DEADLETTER
from services.inference.adapter import Rejected, chunk, completion_from_result, error_completion, to_engine_request
from services.inference.engine import Engine, EngineResult
from services.inference.spec import DeploymentSpec
from services.kafka.config import aiokafka_consumer_kwargs, aiokafka_producer_kwargs
from services.settings import Settings

log = logging.getLogger(__name__)


class OffsetTracker:
    """Per partition: offsets read but not yet done; the committable position is the first one not done."""

    def __init__(self) -> None:
        self._open: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def started(self, tp: TopicPartition, offset: int) -> None:
        self._open.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def done(self, tp: TopicPartition, offset: int) -> None:
        if tp in self._open:
            self._open[tp].discard(offset)

    def forget(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self._open.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    def committable(self) -> dict[TopicPartition, int]:
        """Positions that advanced since the last :meth:`mark_committed`."""
        out: dict[TopicPartition, int] = {}
        for tp, nxt in self._next.items():
            pos = min(self._open[tp]) if self._open.get(tp) else nxt
            if pos > self._committed.get(tp, -1):
                out[tp] = pos
        return out

    def mark_committed(self, positions: dict[TopicPartition, int]) -> None:
        for tp, pos in positions.items():
            if tp in self._next:
                self._committed[tp] = max(self._committed.get(tp, -1), pos)

    def in_flight(self) -> int:
        return sum(len(s) for s in self._open.values())


@dataclass
class _Job:
    record: ConsumerRecord[bytes, bytes]
    request: InferenceRequest
    envelope: Envelope[Any]
    prompt_text: str
    chunk_sends: list[asyncio.Future[Any]] = field(default_factory=list)


@dataclass
class ReplicaStats:
    consumed: int = 0
    completed: int = 0
    errors: int = 0
    dead_lettered: int = 0
    paused_times: int = 0
    released: int = 0
    max_in_flight: int = 0


class _Revoke(ConsumerRebalanceListener):
    def __init__(self, replica: KafkaReplica) -> None:
        self.replica = replica

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:  # type: ignore[override]
        if self.replica._tasks:  # completions being acknowledged: let them land so their offsets commit
            await asyncio.wait(set(self.replica._tasks), timeout=5)
        await self.replica._commit()
        await self.replica._release(set(revoked))
        self.replica._offsets.forget(set(revoked))
        self.replica._paused.difference_update(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:  # type: ignore[override]
        if self.replica._is_full():
            self.replica._consumer.pause(*assigned)  # type: ignore[union-attr]
            self.replica._paused.update(assigned)


class KafkaReplica:
    """Runs one replica's consumer loop around an already started :class:`Engine`."""

    def __init__(self, spec: DeploymentSpec, settings: Settings, engine: Engine, replica_id: str = "") -> None:
        self.spec = spec
        self.settings = settings
        self.engine = engine
        self.source = f"inference.{spec.deployment_id}"
        self.replica_id = replica_id
        self.stats = ReplicaStats()
        self._offsets = OffsetTracker()
        self._jobs: dict[tuple[str, int, int], _Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused: set[TopicPartition] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._stopped = asyncio.Event()
        self.ready = asyncio.Event()

    # ---- lifecycle -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until :meth:`stop`. Raises if Kafka fails in a way the clients cannot recover from."""
        self._loop = asyncio.get_running_loop()
        self._producer = AIOKafkaProducer(**aiokafka_producer_kwargs(self.settings))
        self._consumer = AIOKafkaConsumer(
            **aiokafka_consumer_kwargs(
                self.settings, self.spec.consumer_group, max_poll_records=self.capacity(),
                fetch_max_wait_ms=self.spec.fetch_max_wait_ms,
                client_id=f"{self.settings.kafka_client_id}-{self.source}-{self.replica_id}",
            )
        )
        await self._producer.start()
        try:
            await self._consumer.start()
            self._consumer.subscribe([self.spec.dispatch_topic], listener=_Revoke(self))
            pump = asyncio.create_task(self._pump_events())
            committer = asyncio.create_task(self._commit_periodically())
            self.ready.set()
            try:
                await self._consume()
                await self._drain(self.spec.shutdown_grace_s)
            finally:
                pump.cancel()
                committer.cancel()
                await asyncio.gather(pump, committer, return_exceptions=True)
                await self._commit()
        finally:
            self.stats.released += len(self.engine.stop())
            if self._consumer is not None:
                await self._consumer.stop()
            await self._producer.stop()
            self._stopped.set()

    async def stop(self) -> None:
        """Stop fetching, finish in-flight work within the grace period, commit, release the rest."""
        self._stop.set()
        await self._stopped.wait()

    def capacity(self) -> int:
        return self.spec.max_queued_requests + self.spec.max_batch_size

    def _is_full(self) -> bool:
        return self._offsets.in_flight() >= self.capacity()

    # ---- consuming -----------------------------------------------------------------------------------------

    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self._stop.is_set():
            self._apply_backpressure()
            room = self.capacity() - self._offsets.in_flight()
            if room <= 0:
                await asyncio.sleep(0.02)
                continue
            batches = await consumer.getmany(timeout_ms=100, max_records=room)
            for tp, records in batches.items():
                for record in records:
                    if self._stop.is_set():
                        # not handed to the engine: rewind so this replica never skips it
                        consumer.seek(tp, record.offset)
                        break
                    await self._handle(tp, record)

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

    async def _handle(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        self.stats.consumed += 1
        self._offsets.started(tp, record.offset)
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._offsets.in_flight())
        arrival = time.monotonic()
        try:
            envelope = decode(record.value, record.headers, expect=InferenceRequest)
        except DecodeError as exc:
            await self._dead_letter(tp, record, exc.kind.value, str(exc))
            return
        req: InferenceRequest = envelope.payload
        job_or_rejection = to_engine_request(req, self.spec, self.engine.loaded, arrival=arrival)
        if isinstance(job_or_rejection, Rejected):
            self.stats.errors += 1
            self._spawn(self._publish_completion(tp, record, envelope, job_or_rejection.completion, []))
            return
        engine_req, prompt_text = job_or_rejection
        key = (tp.topic, tp.partition, record.offset)
        engine_req.request_id = req.request_id
        self._jobs[key] = _Job(record=record, request=req, envelope=envelope, prompt_text=prompt_text)
        loop = self._loop
        assert loop is not None

        def on_delta(_rid: str, index: int, text: str) -> None:
            loop.call_soon_threadsafe(self._events.put_nowait, ("delta", (key, index, text)))

        def on_finish(result: EngineResult) -> None:
            loop.call_soon_threadsafe(self._events.put_nowait, ("finish", (key, result)))

        self.engine.submit(engine_req, on_delta if req.params.stream else None, on_finish)

    async def _pump_events(self) -> None:
        producer = self._producer
        assert producer is not None
        while True:
            kind, data = await self._events.get()
            if kind == "delta":
                key, index, text = data
                job = self._jobs.get(key)
                if job is None:
                    continue
                payload = chunk(job.request, self.spec, index, text)
                job.chunk_sends.append(await self._send(COMPLETION_CHUNKS.name, job, payload))
            else:
                key, result = data
                job = self._jobs.pop(key, None)
                if job is None:
                    continue
                completion = completion_from_result(job.request, self.spec, result, job.prompt_text)
                if result.error_kind is not None:
                    self.stats.errors += 1
                tp = TopicPartition(key[0], key[1])
                self._spawn(self._publish_completion(tp, job.record, job.envelope, completion, job.chunk_sends))

    async def _send(self, topic: str, job: _Job, payload: BaseModel) -> asyncio.Future[Any]:
        producer = self._producer
        assert producer is not None
        event = make_event(payload, source=self.source, tenant_id=job.envelope.tenant_id,
                           trace_id=job.envelope.trace_id)
        value, headers = encode(event)
        return await producer.send(topic, value=value, key=job.request.request_id.encode(), headers=headers)

    async def _publish_completion(
        self,
        tp: TopicPartition,
        record: ConsumerRecord[bytes, bytes],
        envelope: Envelope[Any],
        completion: Completion,
        chunk_sends: list[asyncio.Future[Any]],
    ) -> None:
        producer = self._producer
        assert producer is not None
        event = make_event(completion, source=self.source, tenant_id=envelope.tenant_id, trace_id=envelope.trace_id)
        value, headers = encode(event)
        ack = await producer.send(COMPLETIONS.name, value=value, key=completion.request_id.encode(), headers=headers)
        await asyncio.gather(ack, *chunk_sends)  # raises if any was not acknowledged: the offset stays open
        self.stats.completed += 1
        self._offsets.done(tp, record.offset)

    async def _dead_letter(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], kind: str, error: str
    ) -> None:
        producer = self._producer
        assert producer is not None
        letter = DeadLetter.from_bytes(
            topic=tp.topic, partition=tp.partition, offset=record.offset, error_kind=kind, error=error,
            value=record.value, key=record.key, consumer=self.spec.consumer_group,
        )
        value, headers = encode(make_event(letter, source=self.source, tenant_id="unknown"))
        ack = await producer.send(DEADLETTER.name, value=value, key=f"{tp.topic}/{tp.partition}/{record.offset}".encode(),
                                  headers=headers)
        await ack
        self.stats.dead_lettered += 1
        self._offsets.done(tp, record.offset)

    async def _release(self, partitions: set[TopicPartition]) -> None:
        """Stop working on requests from partitions this replica no longer owns: their new owner redoes them.

        Without this, two replicas would stream the same request at once; with it, a request's chunk stream
        restarts at index 0 only after the previous owner stopped sending.
        """
        keys = [k for k in self._jobs if TopicPartition(k[0], k[1]) in partitions]
        if not keys:
            return
        ids = {self._jobs[k].request.request_id for k in keys}
        await asyncio.to_thread(self.engine.cancel, ids)
        for k in keys:
            self._jobs.pop(k, None)
        self.stats.released += len(keys)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def _done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("publishing a completion failed; its offset stays uncommitted", exc_info=t.exception())

        task.add_done_callback(_done)

    # ---- committing and draining ------------------------------------------------------------------------

    async def _commit(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        positions = self._offsets.committable()
        assigned = consumer.assignment()
        positions = {tp: pos for tp, pos in positions.items() if tp in assigned}
        if not positions:
            return
        try:
            await consumer.commit({tp: OffsetAndMetadata(pos, "") for tp, pos in positions.items()})
        except Exception as exc:  # noqa: BLE001 - e.g. a rebalance in progress: the next commit retries
            log.warning("offset commit failed (%s); will retry", exc)
            return
        self._offsets.mark_committed(positions)

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await self._commit()

    async def _drain(self, grace_s: float) -> None:
        """Let the engine finish what it holds and the completions be acknowledged, up to ``grace_s``."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (self.engine.has_work() or self._jobs or self._tasks
                                               or not self._events.empty()):
            await asyncio.sleep(0.05)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=max(0.1, deadline - time.monotonic()))
