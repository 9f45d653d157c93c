"""One replica's Kafka side: ``llm.dispatch.<deployment>`` in, the engine in between, chunks and completions out.

It runs on the consumer runtime (:class:`~services.core.kafka.consumer.GroupConsumer`, group
``inference.<deployment>``), which decodes, dead-letters undecodable messages, applies backpressure and commits:

* Each request is handed to the engine; its offset is done once its Completion (and its chunks) were
  acknowledged by the broker. Requests finish out of order; the runtime commits per partition up to the first
  request still open (at-least-once: a crash or a revoked partition means redelivery, never loss; completions may
  be duplicated, consumers dedup on ``request_id``).
* A request the engine cannot take gets an error Completion at once; the loop keeps serving.
* Publishing retries transient broker failures with backoff until it succeeds or the replica stops (then the
  request stays uncommitted and is redelivered); any other publishing failure dead-letters the request, so no
  offset stays in flight for good.
* A request that names ``reply_to`` (a gateway, an SDK client) gets its chunks on that topic instead of
  ``llm.completion-chunks``, and its completion there as well as on ``llm.completions``. The completion copies
  the request's ``routing_weight`` and ``fallback``.
* Backpressure: at most ``max_queued_requests`` + ``max_batch_size`` requests are open; beyond that every assigned
  partition is paused, so nothing is buffered without bound.
* A revoked partition's requests are aborted in the engine (their new owner redoes them); ``stop()`` stops
  fetching, lets in-flight requests finish within the grace period, commits what was acknowledged, and releases
  the rest (left uncommitted, so the group redelivers them).
* Liveness: the engine is any :class:`~services.inference.engine_api.InferenceEngine` (builtin or vLLM); it
  finishes every request it accepted, even when a step fails. The event pump that turns engine callbacks into
  messages survives a failing event (a completion it cannot build becomes an error completion; a chunk it cannot
  send is skipped, the completion carries the whole text). :meth:`KafkaReplica.check_health` raises when the pump
  or the consumer loop died or the engine is unhealthy, so Ray Serve replaces the replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition
from pydantic import BaseModel

from schemas.codec import make_event
from schemas.completions import Completion
from schemas.envelope import Envelope
from schemas.requests import InferenceRequest
from schemas.topics import COMPLETION_CHUNKS, COMPLETIONS
from services.core.errors import is_transient
from services.core.kafka.consumer import GroupConsumer, Record, Work
from services.core.settings import Settings
from services.inference.adapter import Rejected, chunk, completion_from_result, error_completion, to_engine_request
from services.inference.engine_api import EngineResult, InferenceEngine
from services.inference.spec import DeploymentSpec

log = logging.getLogger(__name__)

JobKey = tuple[str, int, int]


@dataclass
class _Job:
    record: Record
    request: InferenceRequest
    envelope: Envelope[Any]
    prompt_text: str
    finished: asyncio.Future[bool]
    """True once the completion is acknowledged; False when released (revoked, stopped)."""
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


class ReplicaUnhealthy(RuntimeError):
    """The replica cannot serve any more; Ray Serve's health check replaces it."""


class KafkaReplica:
    """Runs one replica's consumer loop around an already started engine."""

    def __init__(self, spec: DeploymentSpec, settings: Settings, engine: InferenceEngine, replica_id: str = "") -> None:
        self.spec = spec
        self.settings = settings
        self.engine = engine
        self.source = f"inference.{spec.deployment_id}"
        self.replica_id = replica_id
        self.consumer = GroupConsumer(
            settings, topics=[spec.dispatch_topic], group_id=spec.consumer_group, handler=self._handle,
            expect=InferenceRequest, source=self.source, max_in_flight=self.capacity(),
            shutdown_grace_s=spec.shutdown_grace_s, on_revoked=self._release, on_stopping=self._release_all,
            consumer_overrides={
                "max_poll_records": self.capacity(), "fetch_max_wait_ms": spec.fetch_max_wait_ms,
                "client_id": f"{settings.kafka_client_id}-{self.source}-{replica_id}",
            },
        )
        self.ready = self.consumer.started
        self._jobs: dict[JobKey, _Job] = {}
        self._publishing: set[asyncio.Future[None]] = set()
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump: asyncio.Task[None] | None = None
        self._run_error: BaseException | None = None
        self._stopped = asyncio.Event()
        self._engine_stopped = False
        self._completed = 0
        self._errors = 0
        self._released = 0
        self.on_completion: Callable[[Completion], None] | None = None
        """Called with each completion the replica built (its metrics, see serve_app)."""

    @property
    def stats(self) -> ReplicaStats:
        c = self.consumer.stats
        return ReplicaStats(consumed=c.consumed, completed=self._completed, errors=self._errors,
                            dead_lettered=c.dead_lettered, paused_times=c.paused_times, released=self._released,
                            max_in_flight=c.max_in_flight)

    # ---- lifecycle -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until :meth:`stop`. Raises if Kafka fails in a way the clients cannot recover from."""
        self._loop = asyncio.get_running_loop()
        pump = self._pump = asyncio.create_task(self._pump_events())
        try:
            await self.consumer.run()
        except BaseException as exc:
            self._run_error = exc
            raise
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            await self._stop_engine()
            self._stopped.set()

    async def stop(self) -> None:
        """Stop fetching, finish in-flight work within the grace period, commit, release the rest."""
        self.consumer.stop()
        await self._stopped.wait()

    def capacity(self) -> int:
        return self.spec.max_queued_requests + self.spec.max_batch_size

    def check_health(self) -> None:
        """Raise :class:`ReplicaUnhealthy` (or the engine's ``EngineUnhealthy``) if this replica cannot serve:
        its consumer loop ended, its event pump died (completions would never be published), or its engine is
        unhealthy. Called by Ray Serve's health check every few seconds."""
        if self._stopped.is_set() and not self.consumer.stopping:
            raise ReplicaUnhealthy(f"{self.source}: the consumer loop ended: {self._run_error!r}")
        pump = self._pump
        if pump is not None and pump.done() and not self.consumer.stopping:
            error = None if pump.cancelled() else pump.exception()
            raise ReplicaUnhealthy(f"{self.source}: the engine event pump died: {error!r}")
        self.engine.check_health()

    # ---- one request -------------------------------------------------------------------------------------

    async def _handle(self, envelope: Envelope[InferenceRequest], record: Record) -> Work:
        arrival = time.monotonic()
        req = envelope.payload
        job_or_rejection = to_engine_request(req, self.spec, self.engine.tokenizer, arrival=arrival)
        if isinstance(job_or_rejection, Rejected):
            self._errors += 1
            return self._publish_completion(req, envelope, job_or_rejection.completion, [])
        engine_req, prompt_text = job_or_rejection
        key = (record.topic, record.partition, record.offset)
        engine_req.request_id = req.request_id
        loop = self._loop
        assert loop is not None
        job = _Job(record=record, request=req, envelope=envelope, prompt_text=prompt_text, finished=loop.create_future())
        self._jobs[key] = job

        def on_delta(_rid: str, index: int, text: str) -> None:
            loop.call_soon_threadsafe(self._events.put_nowait, ("delta", (key, index, text)))

        def on_finish(result: EngineResult) -> None:
            loop.call_soon_threadsafe(self._events.put_nowait, ("finish", (key, result)))

        self.engine.submit(engine_req, on_delta if req.params.stream else None, on_finish)
        return job.finished

    async def _pump_events(self) -> None:
        while True:
            kind, data = await self._events.get()
            try:
                if kind == "delta":
                    await self._on_delta(*data)
                else:
                    self._on_finish(*data)
            except Exception:  # one event must not stop every later completion
                log.exception("%s: handling an engine %s event failed", self.source, kind)

    async def _on_delta(self, key: JobKey, index: int, text: str) -> None:
        job = self._jobs.get(key)
        if job is None:
            return
        # a waiting producer (gateway, SDK) reads its own reply topic; others read the shared chunks topic
        topic = job.request.reply_to or COMPLETION_CHUNKS.name
        payload = chunk(job.request, self.spec, index, text)
        job.chunk_sends.append(await self._send(topic, job.envelope, payload, job.request.request_id))

    def _on_finish(self, key: JobKey, result: EngineResult) -> None:
        job = self._jobs.pop(key, None)
        if job is None:
            return
        try:
            completion = completion_from_result(job.request, self.spec, result, job.prompt_text)
        except Exception as exc:  # e.g. a result the contract refuses: the request still gets its answer
            log.exception("%s: cannot build the completion of %s", self.source, job.request.request_id)
            completion = error_completion(job.request, self.spec, "internal",
                                          f"the replica could not build the completion: {type(exc).__name__}: {exc}")
        if completion.error is not None:
            self._errors += 1
        if self.on_completion is not None:
            self.on_completion(completion)
        publishing = asyncio.ensure_future(self._settle(job, completion))
        self._publishing.add(publishing)
        publishing.add_done_callback(self._publishing.discard)

    async def _settle(self, job: _Job, completion: Completion) -> None:
        try:
            done = await self._publish_completion(job.request, job.envelope, completion, job.chunk_sends)
        except Exception as exc:  # noqa: BLE001 - handed to the runtime, which dead-letters the request
            if not job.finished.done():
                job.finished.set_exception(exc)
            return
        if not job.finished.done():
            job.finished.set_result(done)

    async def _send(self, topic: str, envelope: Envelope[Any], payload: BaseModel, key: str) -> asyncio.Future[Any]:
        event = make_event(payload, source=self.source, tenant_id=envelope.tenant_id, trace_id=envelope.trace_id)
        return await self.consumer.send(topic, event, key=key)

    async def _publish_completion(
        self, req: InferenceRequest, envelope: Envelope[Any], completion: Completion,
        chunk_sends: list[asyncio.Future[Any]],
    ) -> bool:
        """Publish the completion (and wait for its chunks); transient failures are retried until the replica stops.

        True once everything is acknowledged; False if stopped first (the request stays uncommitted).
        """
        delay = 0.2
        while True:
            try:
                acks = [await self._send(COMPLETIONS.name, envelope, completion, req.request_id)]
                if req.reply_to:  # the producer waiting for this answer reads only its reply topic
                    acks.append(await self._send(req.reply_to, envelope, completion, req.request_id))
                await asyncio.gather(*acks, *chunk_sends)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("%s: publishing the completion of %s failed (%s); retrying in %.1fs", self.source,
                            req.request_id, exc, delay)
                if self.consumer.stopping:
                    return False
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                chunk_sends = []  # their failures are reported; the completion carries the whole text
                continue
            self._completed += 1
            return True

    # ---- releasing work ------------------------------------------------------------------------------------

    async def _release(self, partitions: set[TopicPartition]) -> None:
        """Stop working on requests from partitions this replica no longer owns: their new owner redoes them.

        Without this, two replicas would stream the same request at once; with it, a request's chunk stream
        restarts at index 0 only after the previous owner stopped sending.
        """
        keys = [k for k in self._jobs if TopicPartition(k[0], k[1]) in partitions]
        if not keys:
            return
        await asyncio.to_thread(self.engine.abort, {self._jobs[k].request.request_id for k in keys})
        self._drop(keys)

    async def _release_all(self) -> None:
        """At stop, after the grace period: abandon what the engine still holds (left uncommitted)."""
        await self._stop_engine()
        self._drop(list(self._jobs))

    def _drop(self, keys: list[JobKey]) -> None:
        for key in keys:
            job = self._jobs.pop(key, None)
            if job is not None and not job.finished.done():
                job.finished.set_result(False)
                self._released += 1

    async def _stop_engine(self) -> None:
        if not self._engine_stopped:
            self._engine_stopped = True
            abandoned = await asyncio.to_thread(self.engine.stop)
            log.info("%s: engine stopped, %d request(s) abandoned", self.source, len(abandoned))
