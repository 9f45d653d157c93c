"""Helpers for the stream worker tests: per-test topics and config, the worker as a process, events, polling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, TopicPartition

from schemas import Completion, DeploymentWindow, Feedback, InferenceRequest, Message, decode, make_event
from services.core.clickhouse.client import connect
from services.core.kafka.config import confluent_consumer_config
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings
from streams.app import prepare
from streams.config import StreamsConfig

T = TypeVar("T")
READY = "streams: ready; assigned"


def make_config(unique: str, tmp: Path, **overrides: Any) -> StreamsConfig:
    """A config with topics and group of its own, quick batches and quick aggregation."""
    base: dict[str, Any] = dict(
        group_id=f"streams-{unique}",
        requests_topic=f"t-{unique}.requests", completions_topic=f"t-{unique}.completions",
        feedback_topic=f"t-{unique}.feedback", safety_topic=f"t-{unique}.safety",
        alerts_topic=f"t-{unique}.alerts", deadletter_topic=f"t-{unique}.deadletter",
        windows_topic=f"t-{unique}.windows", batch_size=200, batch_interval_s=0.2, commit_interval_s=0.5,
        aggregate_interval_s=0.5, retry_initial_s=0.2, retry_max_s=2.0,
        policies_path=None, budgets_path=None, drift_enabled=False,
    )
    base.update(overrides)
    return StreamsConfig(**base)


class WorkerProcess:
    """The stream worker (``python -m streams.worker``) as a child process, with its log in a file."""

    def __init__(self, settings: Settings, config: StreamsConfig, workdir: Path, name: str = "worker") -> None:
        self.settings = settings
        self.config = config
        self.config_file = workdir / f"{name}.json"
        self.log_file = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    def start(self, timeout_s: float = 60.0, wait_ready: bool = True) -> WorkerProcess:
        prepare(self.settings, self.config)
        self.config_file.write_text(self.config.model_dump_json())
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.worker", "--config", str(self.config_file)],
                env={**os.environ, **self.settings.to_env()}, stdout=out, stderr=subprocess.STDOUT)
        if wait_ready:
            self.wait_ready(timeout_s)
        return self

    def log(self) -> str:
        """What this run of the process logged so far."""
        if not self.log_file.exists():
            return ""
        with self.log_file.open("rb") as f:
            f.seek(self._log_start)
            return f.read().decode("utf-8", errors="replace")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until the worker logged an assignment that includes the completions topic."""
        topic = self.config.completions_topic
        wait_until(lambda: self.exited() or any(READY in line and f"{topic}/" in line for line in self.log().splitlines()),
                   timeout_s, "the worker was assigned its partitions")
        assert not self.exited(), f"the worker exited: {self.log()[-3000:]}"

    def wait_until(self, cond: Callable[[], T], timeout_s: float, what: str) -> T:
        """:func:`wait_until`, with this worker's state and the tail of its log in the failure message."""
        try:
            return wait_until(cond, timeout_s, what)
        except AssertionError as exc:
            state = f"exited with {self.proc.returncode}" if self.exited() and self.proc else "running"
            raise AssertionError(f"{exc}; the worker is {state}; its log ends: {self.log()[-4000:]}") from None

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit status (a worker that does not stop in time is killed: an error)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"the worker did not stop within {timeout_s}s: {self.log()[-3000:]}") from None
        return self.proc.returncode


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


def committed(settings: Settings, group: str, topics: list[str], partitions: int = 6) -> int:
    """The sum of the group's committed offsets over these topics (0 for a partition never committed)."""
    consumer = Consumer(confluent_consumer_config(settings, group))
    try:
        tps = consumer.committed([TopicPartition(t, p) for t in topics for p in range(partitions)], timeout=10)
        return sum(tp.offset for tp in tps if tp.offset >= 0)
    finally:
        consumer.close()


class TopicReader:
    """Reads a topic from the beginning (its own group), accumulating every message seen."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = Consumer(confluent_consumer_config(settings, f"check-{uuid.uuid4().hex[:8]}"))
        self.consumer.subscribe([topic])
        self.values: list[bytes] = []

    def poll(self) -> list[bytes]:
        for m in self.consumer.consume(1000, 0.3):
            if m.error() is None:
                value = m.value()
                assert value is not None, f"a message without a value on {m.topic()}"  # these topics carry events only
                self.values.append(value)
        return self.values

    def until(self, cond: Callable[[list[bytes]], bool], timeout_s: float, what: str) -> list[bytes]:
        wait_until(lambda: cond(self.poll()), timeout_s, what)
        return self.values

    def close(self) -> None:
        self.consumer.close()


FragmentKey = tuple[str, datetime, int | None, str | None, str | None]


def latest_fragments(values: list[bytes]) -> dict[FragmentKey, DeploymentWindow]:
    """The latest copy of each published fragment: (deployment, window start, source partition, prompt id and version)."""
    out: dict[FragmentKey, DeploymentWindow] = {}
    for value in values:
        w = decode(value, expect=DeploymentWindow).payload
        out[(w.deployment_id, w.window_start, w.source_partition, w.prompt_id, w.prompt_version)] = w
    return out


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
