"""A gateway test stack in a background event loop: the real router, fake replicas and gateway servers on free ports."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer

from schemas.codec import decode
from schemas.completions import Completion
from schemas.requests import InferenceRequest
from services.core.clickhouse import raw_tables
from services.core.clickhouse.client import connect
from services.core.kafka.config import aiokafka_consumer_kwargs
from services.core.kafka.from_beginning import assign_from_beginning
from services.core.settings import Settings
from services.gateway.config import GatewayConfig, ModelEntry
from services.gateway.pricing import Pricer
from services.gateway.safety import Scanner
from services.gateway.server import GatewayServer
from tests.client.fake_replica import Answer, echo
from tests.client.stack import ServingPath, serving

T = TypeVar("T")


def scripted(request: InferenceRequest) -> Answer:
    """Echo, except: 'FAIL' fails (internal), 'SILENT' never answers, 'SLOW' answers after 1.5 s, 'PII' leaks an email."""
    assert request.messages is not None
    last = request.messages[-1].content
    if last.startswith("FAIL"):
        return Answer(error_kind="internal")
    if last.startswith("SILENT"):
        return Answer(silent=True)
    if last.startswith("SLOW"):
        return Answer(text="slow answer", delay_s=1.5)
    if last.startswith("PII"):
        return Answer(text="Sure, write to jane.doe@example.com or call +1 415 555 0134 today.")
    return echo(request)


async def store_completion(settings: Settings, topic: str, request_id: str, count: int = 1) -> Completion:
    """Write the request's ``count`` completion events (a failed try and its fallback are two) into raw_completions, as
    the stream worker's sink does; returns the last one."""
    consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    rows: list[list[Any]] = []
    found: list[Completion] = []
    try:
        await assign_from_beginning(consumer, [topic])
        for _ in range(100):
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                for rec in records:
                    event = decode(rec.value, rec.headers, expect=Completion)
                    if event.payload.request_id == request_id:
                        rows.append(raw_tables.completion_row(event, raw_tables.SourcePosition(tp.topic, tp.partition,
                                                                                               rec.offset)))
                        found.append(event.payload)
            if len(found) >= count:
                connect(settings).insert("raw_completions", rows, column_names=raw_tables.COMPLETION_COLUMNS)
                return found[-1]
    finally:
        await consumer.stop()
    raise AssertionError(f"{count} completion(s) of {request_id} not found on {topic} ({len(found)} found)")


class BackgroundLoop:
    """An event loop in a daemon thread; ``run`` executes a coroutine there and returns its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class GatewayStack:
    """Router + replicas (``dep-<u>`` for alias chat, fallback ``fb-<u>``) and gateways started on demand."""

    def __init__(self, settings: Settings, unique: str) -> None:
        self.settings = settings
        self.unique = unique
        self.primary, self.fallback = f"dep-{unique}", f"fb-{unique}"
        self.bg = BackgroundLoop()
        self.stack = AsyncExitStack()
        self.path: ServingPath = self.bg.run(self._enter())
        self.servers: list[tuple[GatewayServer, asyncio.Task[None]]] = []

    async def _enter(self) -> ServingPath:
        return await self.stack.enter_async_context(serving(
            self.settings, self.unique, {"chat": self.primary}, {self.primary: scripted, self.fallback: echo}))

    def config(self, instance: str, **overrides: object) -> GatewayConfig:
        data: dict[str, object] = dict(
            port=0, instance_id=instance, models={"chat": ModelEntry(fallback=self.fallback), "other": ModelEntry()},
            requests_topic=self.path.topics.requests, completions_topic=self.path.topics.completions,
            keys_reload_s=0.3, usage_reload_s=0.5, attempt_timeout_s=3.0, drain_timeout_s=10,
        )
        data.update(overrides)
        return GatewayConfig.model_validate(data)

    def start_gateway(
        self, instance: str, scanner: Scanner | None = None, pricer: Pricer | None = None, **overrides: object,
    ) -> GatewayServer:
        server = GatewayServer(self.settings, self.config(instance, **overrides), scanner=scanner, pricer=pricer)

        async def start() -> asyncio.Task[None]:
            task = asyncio.create_task(server.serve())
            for _ in range(600):
                if server.started or task.done():
                    break
                await asyncio.sleep(0.05)
            if task.done():
                task.result()
            return task

        self.servers.append((server, self.bg.run(start())))
        return server

    def stop_gateway(self, server: GatewayServer) -> None:
        for s, task in list(self.servers):
            if s is server:
                server.stop()
                self.bg.run(asyncio.wait_for(task, 60))
                self.servers.remove((s, task))

    def close(self) -> None:
        for server, _ in list(self.servers):
            self.stop_gateway(server)
        self.bg.run(self.stack.aclose())
        self.bg.close()
