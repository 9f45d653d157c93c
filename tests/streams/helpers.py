"""Helpers for the stream worker tests: per-test topics and config, a worker in a thread, events, polling."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from schemas import Completion, Feedback, InferenceRequest, Message, make_event
from services.clickhouse.client import connect
from services.kafka.producer import EventProducer
from services.settings import Settings
from streams.app import StreamsApp
from streams.config import StreamsConfig
from streams.worker import prepare

T = TypeVar("T")


def make_config(unique: str, tmp: Path, **overrides: Any) -> StreamsConfig:
    """A config with topics and group of its own, quick batches and quick aggregation."""
    base: dict[str, Any] = dict(
        group_id=f"streams-{unique}",
        requests_topic=f"t-{unique}.requests", completions_topic=f"t-{unique}.completions",
        feedback_topic=f"t-{unique}.feedback", safety_topic=f"t-{unique}.safety",
        alerts_topic=f"t-{unique}.alerts", deadletter_topic=f"t-{unique}.deadletter",
        windows_topic=f"t-{unique}.windows", window_seconds=60, window_grace_s=1.0,
        batch_size=200, batch_interval_s=0.3, aggregate_interval_s=0.5, retry_initial_s=0.2, retry_max_s=2.0,
        policies_path=None, budgets_path=None, drift_enabled=False,
    )
    base.update(overrides)
    return StreamsConfig(**base)


class WorkerThread:
    """A StreamsApp running in its own thread and event loop; ``stop`` ends it cleanly."""

    def __init__(self, settings: Settings, config: StreamsConfig) -> None:
        self.settings = settings
        self.config = config
        self.app: StreamsApp | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._started = threading.Event()

    def _main(self) -> None:
        async def go() -> None:
            self.loop = asyncio.get_running_loop()
            self.app = StreamsApp(self.settings, self.config)
            self._started.set()
            await self.app.run()

        try:
            asyncio.run(go())
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
            self._started.set()

    def start(self, timeout_s: float = 30.0) -> WorkerThread:
        prepare(self.settings, self.config)
        self._thread.start()
        self._started.wait(timeout_s)
        wait_until(lambda: self.error is not None or (self.app is not None and self.app.ready.is_set()), timeout_s,
                   "worker joined its group")
        if self.error:
            raise self.error
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.loop is not None and self.app is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.app.stop)
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "worker did not stop"
        if self.error:
            raise self.error


def wait_until(cond: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.25) -> T:
    """Poll until ``cond()`` is truthy; its value, or AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: T = cond()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {what} (last: {last!r})")
        time.sleep(interval_s)
        last = cond()
    return last


def scalar(settings: Settings, sql: str, **params: Any) -> Any:
    return connect(settings).query(sql, parameters=params).result_rows[0][0]


def rows(settings: Settings, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in connect(settings).query(sql, parameters=params).result_rows]


def request_event(tenant: str, rid: str, text: str = "hello", deployment: str = "dep-a") -> Any:
    return make_event(InferenceRequest(
        request_id=rid, tenant=tenant, application="app", model_alias="chat", deployment_id=deployment,
        messages=[Message(role="user", content=text)],
    ), source="test", tenant_id=tenant)


def completion_event(tenant: str, rid: str, **fields: Any) -> Any:
    data: dict[str, Any] = dict(
        request_id=rid, tenant=tenant, deployment_id="dep-a", model_name="gpt-4o-mini", prompt_version="1",
        text="fine, thanks", finish_reason="stop", prompt_tokens=10, completion_tokens=5, ttft_ms=20.0, total_ms=100.0,
    )
    data.update(fields)
    return make_event(Completion(**data), source="test", tenant_id=tenant)


def feedback_event(tenant: str, rid: str, score: float) -> Any:
    return make_event(Feedback(request_id=rid, score=score), source="test", tenant_id=tenant)


def producer(settings: Settings) -> EventProducer:
    return EventProducer(settings)
