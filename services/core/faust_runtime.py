"""Guard rails for every faust-streaming app of llmops-stream (stream worker, canary judge).

faust-streaming 0.15.3 loses data in three ways unless an app is written a certain way (measured on the local
broker and documented in the README, "The stream worker", under "Ack discipline"):

* ``Stream.take()`` acks its buffer in a ``finally``: a batch whose side effect failed or was cancelled is acked
  anyway. So agents consume with ``Stream.noack_take(n, within)`` and ack each event with ``await
  stream.ack(event)`` only after every side effect of its batch was acknowledged (the ClickHouse insert
  returned, the producer's send was acked). Nothing is acked in a ``finally``.
* An exception that escapes an agent makes Faust commit and restart the agent, and its gap check then skips the
  unacked offsets of a failed first batch on a fresh partition or of a single failed message. So **an agent never
  raises**: :class:`BatchGuard` retries transient failures inside the agent (backoff, forever), splits a batch
  that fails for another reason down to the records that fail and hands each of those to the caller's poison
  handler (which dead-letters it), and exits the process hard (``os._exit``, like a SIGKILL: nothing more is
  committed, the uncommitted records are replayed by the next process) when something fatal happens, e.g. the
  poison handler itself fails.
* ``stream_wait_empty=True`` (Faust's default) blocks shutdown and rebalances while unacked events exist. The
  app settings here turn it off (a stopped worker commits what was acked; the rest is replayed).

So every app comes from :func:`make_app` (those settings, agent concurrency 1 by :func:`batch_agent`, web server
off unless asked for, then bound to 127.0.0.1), every agent is a :func:`batch_agent` running a
:class:`BatchGuard`, every periodic job is a :func:`guarded_timer` and every long-running background job (following a
compacted topic) a :func:`guarded_task`. Delivery is at-least-once, so every
side effect must be idempotent (ClickHouse ReplacingMergeTree keys, deterministic event ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, cast

import faust
from faust.streams import Stream
from faust.types import AgentT, EventT, StreamT, TopicT

from services.core.errors import is_transient
from services.core.settings import Settings

log = logging.getLogger(__name__)

EXIT_FATAL = 70
"""Exit status of a hard exit (EX_SOFTWARE): a supervisor restarts the process, which replays what was not committed."""


class Fatal(RuntimeError):
    """A failure no retry or dead letter can fix: the process exits hard (see :func:`hard_exit`)."""


def hard_exit(reason: str, code: int = EXIT_FATAL) -> NoReturn:
    """Log ``reason`` and end the process at once, like a SIGKILL: no commit, no cleanup, no Faust shutdown."""
    log.critical("exiting hard (status %d): %s", code, reason)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # exiting anyway
            handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def app_settings(
    settings: Settings,
    app_id: str,
    *,
    web_port: int | None = None,
    commit_interval_s: float = 1.0,
    **overrides: Any,
) -> dict[str, Any]:
    """The keyword arguments of a ``faust.App`` with the guard-rail settings, from the one settings object."""
    session_s = settings.kafka_session_timeout_ms / 1000
    conf: dict[str, Any] = {
        "broker": [f"kafka://{host.strip()}" for host in settings.bootstrap_servers.split(",") if host.strip()],
        "broker_client_id": settings.kafka_client_id,
        "broker_session_timeout": session_s,
        "broker_heartbeat_interval": max(0.5, session_s / 3),
        "broker_commit_interval": commit_interval_s,
        "consumer_auto_offset_reset": "earliest",  # the local broker's 'latest' is wrong; committed offsets rule
        "stream_wait_empty": False,
        "stream_ack_exceptions": False,
        "stream_ack_cancelled_tasks": False,
        "processing_guarantee": "at_least_once",  # exactly_once crashes on the local broker
        "producer_acks": -1,
        "producer_linger_ms": 5,
        "topic_allow_declare": False,  # topics come from the catalog (services.core.kafka.admin.ensure_topics)
        "topic_disable_leader": True,
        "store": "memory://",  # tables are never the only copy of anything (ClickHouse is the durable store)
        "table_standby_replicas": 0,
        "datadir": str(Path(settings.data_dir) / "faust" / app_id),
        "autodiscover": False,
        "web_enabled": web_port is not None,
        "web_bind": "127.0.0.1",
        "web_host": "127.0.0.1",
        "web_port": web_port or 6066,
    }
    conf.update(overrides)
    return conf


def make_app(app_id: str, settings: Settings, *, web_port: int | None = None, commit_interval_s: float = 1.0,
             **overrides: Any) -> faust.App:
    """A ``faust.App`` (consumer group ``app_id``) with the guard-rail settings; see :func:`app_settings`."""
    conf = app_settings(settings, app_id, web_port=web_port, commit_interval_s=commit_interval_s, **overrides)
    Path(conf["datadir"]).mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    return faust.App(app_id, **conf)


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record, as bytes (no Faust serializer runs on it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]

    @classmethod
    def of(cls, event: EventT[Any]) -> Record:
        m = event.message
        raw: Any = m.headers or []
        headers: list[tuple[str, bytes | None]] = list(raw.items() if isinstance(raw, Mapping) else raw)
        return cls(m.topic, m.partition, m.offset, m.key, m.value, headers)

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True, slots=True)
class OutMessage:
    """A message to produce: bytes, as the codec encoded them."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)


async def publish(app: faust.App, messages: Sequence[OutMessage]) -> None:
    """Produce every message with the app's producer and return once the broker acknowledged all of them."""
    futures = [await app.producer.send(m.topic, m.key, m.value, None, None, m.headers) for m in messages]
    for future in futures:
        await future


BatchHandler = Callable[[list[Record]], Awaitable[None]]
PoisonHandler = Callable[[Record, BaseException], Awaitable[None]]


@dataclass
class GuardStats:
    """What a guard did (for logs, tests and benchmarks)."""

    batches: int = 0
    records: int = 0
    retries: int = 0
    splits: int = 0
    poisoned: int = 0
    last_batch_at: float = 0.0
    partitions: set[tuple[str, int]] = field(default_factory=set)


class BatchGuard:
    """Runs a batch handler so that it never raises: retry transient failures, dead-letter poison records.

    ``handler(records)`` performs every side effect of a batch and returns only once they were acknowledged;
    it must be idempotent (it may run again on the same records). When it raises:

    * a transient failure (:func:`is_transient`, or the ``transient`` predicate): wait with exponential backoff
      (``retry_initial_s`` doubling up to ``retry_max_s``) and run the batch again, for as long as it takes;
    * :class:`Fatal`: :func:`hard_exit`;
    * anything else: split the batch in halves and run each; a single record that still fails goes to
      ``on_poison(record, exc)`` (which dead-letters it; it is retried when its failure is transient, and a
      non-transient failure there is fatal).

    ``asyncio.CancelledError`` (shutdown, rebalance) passes through untouched: the batch stays unacked.
    """

    def __init__(
        self,
        name: str,
        handler: BatchHandler,
        on_poison: PoisonHandler,
        *,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
        transient: Callable[[BaseException], bool] = is_transient,
    ) -> None:
        self.name = name
        self.handler = handler
        self.on_poison = on_poison
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.transient = transient
        self.stats = GuardStats()

    async def run(self, records: list[Record]) -> None:
        """Process a batch; returns once every record was handled or dead-lettered. Never raises (but cancels)."""
        if not records:
            return
        await self._run(records)
        self.stats.batches += 1
        self.stats.records += len(records)
        self.stats.last_batch_at = time.monotonic()
        self.stats.partitions.update((r.topic, r.partition) for r in records)

    async def _run(self, records: list[Record]) -> None:
        delay = self.retry_initial_s
        while True:
            try:
                await self.handler(records)
                return
            except asyncio.CancelledError:
                raise
            except Fatal as exc:
                hard_exit(f"{self.name}: {exc}")
            except Exception as exc:  # noqa: BLE001 - classified below; nothing escapes the agent
                if self.transient(exc):
                    self.stats.retries += 1
                    log.warning("%s: transient failure on %d record(s) from %s (%s); retrying in %.1fs",
                                self.name, len(records), records[0].position, _brief(exc), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                if len(records) > 1:
                    self.stats.splits += 1
                    log.warning("%s: %d record(s) from %s failed (%s); splitting the batch to find the poison",
                                self.name, len(records), records[0].position, _brief(exc))
                    mid = len(records) // 2
                    await self._run(records[:mid])
                    await self._run(records[mid:])
                    return
                await self._poison(records[0], exc)
                return

    async def _poison(self, record: Record, exc: BaseException) -> None:
        log.error("%s: %s is poison (%s); dead-lettering it", self.name, record.position, _brief(exc))
        delay = self.retry_initial_s
        while True:
            try:
                await self.on_poison(record, exc)
                self.stats.poisoned += 1
                return
            except asyncio.CancelledError:
                raise
            except Exception as failure:  # noqa: BLE001
                if not self.transient(failure):
                    hard_exit(f"{self.name}: cannot dead-letter {record.position}: {_brief(failure)}")
                self.stats.retries += 1
                log.warning("%s: dead-lettering %s failed (%s); retrying in %.1fs", self.name, record.position,
                            _brief(failure), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)


def _brief(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 300 else text[:297] + "..."


def raw_topic(app: faust.App, topics: Sequence[str]) -> TopicT:
    """A Faust channel over ``topics`` that hands records on as bytes (no Faust serializer)."""
    return app.topic(*topics, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def batch_agent(
    app: faust.App,
    topics: Sequence[str],
    guard: BatchGuard,
    *,
    batch_size: int,
    within_s: float,
    name: str | None = None,
) -> AgentT[Any]:
    """Register an agent (concurrency 1) that runs ``guard`` over batches of ``topics`` and acks after it returned.

    Batches hold up to ``batch_size`` records or what arrived within ``within_s``. Each event is acked
    (``await stream.ack(event)``) only after ``guard.run`` returned, i.e. after every side effect of its batch was
    acknowledged or its record dead-lettered; a cancelled batch (shutdown, rebalance) stays unacked and is replayed.
    Anything escaping the loop itself exits the process hard rather than letting Faust commit past it.
    """

    async def process(channel_stream: StreamT[Any]) -> None:
        stream = cast(Stream[Any], channel_stream)  # noack_take is on the class, not on the StreamT protocol
        try:
            async for events in stream.noack_take(batch_size, within_s):
                await guard.run([Record.of(event) for event in events])
                for event in events:
                    await stream.ack(event)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - never let Faust see an agent error (it would commit past it)
            hard_exit(f"agent {guard.name} failed outside its guard: {_brief(exc)}")

    agent_name = name or guard.name
    process.__name__ = process.__qualname__ = agent_name.replace(".", "_").replace("-", "_")
    return app.agent(raw_topic(app, topics), name=agent_name, concurrency=1)(process)


async def _guarded(job: Callable[[], Awaitable[None]], what: str, again_s: float) -> bool:
    """Await ``job()``: True when it returned, False when it failed (logged); a :class:`Fatal` exits hard."""
    try:
        await job()
        return True
    except asyncio.CancelledError:
        raise
    except Fatal as exc:
        hard_exit(f"{what}: {exc}")
    except Exception:  # a background job never takes the worker down
        log.exception("%s failed; it runs again in %.1fs", what, again_s)
    return False


def guarded_timer(app: faust.App, interval_s: float, job: Callable[[], Awaitable[None]], name: str) -> None:
    """Run ``job`` every ``interval_s`` on every worker; a failure is logged and the next tick runs as usual."""

    async def tick() -> None:
        await _guarded(job, f"timer {name}", interval_s)

    tick.__name__ = tick.__qualname__ = name.replace(".", "_").replace("-", "_")
    app.timer(interval_s, name=name)(tick)


def guarded_task(app: faust.App, job: Callable[[], Awaitable[None]], name: str, retry_s: float = 5.0) -> None:
    """Run the long-running ``job`` on every worker from start until it returns (it was stopped); a failure is
    logged and ``job`` starts again after ``retry_s``."""

    async def supervise() -> None:
        while True:
            if await _guarded(job, f"task {name}", retry_s):
                return
            await asyncio.sleep(retry_s)

    supervise.__name__ = supervise.__qualname__ = name.replace(".", "_").replace("-", "_")
    app.task(supervise)
