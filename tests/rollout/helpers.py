"""Helpers for the judge tests on the real broker: the judge app as a process, topics of its own, reading topics
with a deadline."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from schemas import DeploymentWindow, decode, make_event
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import aiokafka_consumer_kwargs
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings
from services.rollout.judge_app import JudgeConfig
from services.rollout.topics import RolloutTopics


def judge_config(settings: Settings, unique: str, windows_partitions: int = 3) -> JudgeConfig:
    """A config with topics and a consumer group of its own (the topics are created)."""
    config = JudgeConfig(group_id=f"judge.{unique}", windows_topic=f"t.win.{unique}", rollouts_topic=f"t.roll.{unique}",
                         specs_topic=f"t.spec.{unique}", alerts_topic=f"t.alert.{unique}",
                         deadletter_topic=f"t.dl.{unique}", batch_within_s=0.1)
    ensure_topics(settings, config.topics.specs_for_creation(windows_partitions))
    return config


def topics_of(config: JudgeConfig) -> RolloutTopics:
    return config.topics


class JudgeProcess:
    """``python -m services.rollout.judge_app`` with a config of its own, its output in a log file."""

    def __init__(self, settings: Settings, config: JudgeConfig, tmp: Path) -> None:
        self.settings = settings
        self.config = config
        self.tmp = tmp
        self.log_path = tmp / f"judge-{config.group_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout_s: float = 90.0) -> JudgeProcess:
        cfg = self.tmp / f"judge-{self.config.group_id}.json"
        cfg.write_text(self.config.model_dump_json())
        readies = self.log().count("judge ready")
        out = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "services.rollout.judge_app", "--config", str(cfg)],
                                     env={**os.environ, **self.settings.to_env()}, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while self.log().count("judge ready") <= readies:
            assert self.proc.poll() is None, f"the judge exited ({self.proc.returncode}):\n{self.log()[-3000:]}"
            assert time.monotonic() < deadline, f"the judge was not ready within {timeout_s}s:\n{self.log()[-3000:]}"
            time.sleep(0.2)
        return self

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Send ``sig`` and return the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(
                f"the judge did not stop within {timeout_s}s after {sig.name}:\n{self.log()[-3000:]}") from None

    def __enter__(self) -> JudgeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


def publish_windows(settings: Settings, topic: str, windows: list[DeploymentWindow], alias: str) -> None:
    """Windows keyed by alias, as the stream worker publishes them (both sides on one partition)."""
    producer = EventProducer(settings)
    for w in windows:
        producer.send(topic, make_event(w, source="test", tenant_id="t"), key=alias)
    producer.flush()


async def collect(settings: Settings, topic: str, done: Callable[[list[Any]], bool], timeout_s: float = 60.0,
                  what: str = "") -> list[Any]:
    """Every payload on ``topic`` from the beginning, read until ``done(payloads)`` or the deadline."""
    consumer = AIOKafkaConsumer(topic, **aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not done(out):
            assert time.monotonic() < deadline, \
                f"timed out on {topic} waiting for {what or 'the condition'}; got {[getattr(e, 'action', e) for e in out]}"
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out += [decode(r.value, r.headers).payload for r in records]
    finally:
        await consumer.stop()
    return out


async def eventually(condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Wait until ``condition()`` holds, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        await asyncio.sleep(0.1)
