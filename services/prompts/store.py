"""The registry on Kafka: follow ``llm.prompts`` into a local :class:`PromptRegistry`, push versions, move labels.

Every reader follows the topic from the beginning (no consumer group), so every gateway, router and CLI
converges on the same registry; :class:`PromptFollower` keeps a live cache current within one poll.

Pushing a version: read the topic to its end, take the next number (or return the latest version unchanged
when its content is identical), publish it under a key unique to this push (``version/<name>/<n>/<push_id>``:
compaction never merges two pushes), then read back: if another push took the number first, publish a
tombstone for ours and try the next number. Labels are keyed ``label/<name>/<label>`` (compaction keeps
the latest move).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord

from schemas.codec import encode, make_event
from schemas.envelope import Envelope, utc_now
from schemas.prompts import PromptLabel, PromptVersion
from schemas.topics import PROMPTS
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import aiokafka_producer_kwargs
from services.core.kafka.follower import CompactedFollower
from services.core.settings import Settings
from services.prompts.definition import PromptDefinition
from services.prompts.registry import PromptRegistry, UnknownPrompt

SOURCE = "llmops.prompts"

OnAccepted = Callable[[PromptVersion | PromptLabel, int], None]
"""Called with each accepted event and its offset (the ClickHouse mirror uses it)."""


class PromptFollower:
    """Follows the prompts topic into ``registry`` (on the core :class:`CompactedFollower`); ``ready`` once read to the end."""

    def __init__(
        self, settings: Settings, *, topic: str = PROMPTS.name, poll_ms: int = 200, on_accepted: OnAccepted | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.on_accepted = on_accepted
        self.registry = PromptRegistry()
        self.follower = CompactedFollower(settings, [topic], self._apply, expect=(PromptVersion, PromptLabel),
                                          poll_ms=poll_ms, name=f"prompts ({topic})")

    @property
    def ready(self) -> asyncio.Event:
        return self.follower.ready

    def stop(self) -> None:
        self.follower.stop()

    async def run(self) -> None:
        await asyncio.to_thread(ensure_topics, self.settings, [PROMPTS.renamed(self.topic)])  # so it has partitions
        await self.follower.run()

    def _apply(self, event: Envelope[Any], record: ConsumerRecord[bytes, bytes]) -> None:
        if self.registry.apply(event.payload) and self.on_accepted is not None:
            self.on_accepted(event.payload, record.offset)


async def read_registry(settings: Settings, topic: str = PROMPTS.name, timeout_s: float = 30.0) -> PromptRegistry:
    """The registry as of now: the topic read to its end."""
    follower = PromptFollower(settings, topic=topic, poll_ms=50)
    task = asyncio.create_task(follower.run())
    try:
        await wait_ready(follower, task, timeout_s)
        return follower.registry
    finally:
        follower.stop()
        await task


async def wait_ready(follower: PromptFollower, task: asyncio.Task[None], timeout_s: float) -> None:
    """Wait until the follower caught up; its error if it failed first; TimeoutError after ``timeout_s``."""
    await follower.follower.wait_ready(task, timeout_s)


@dataclass(frozen=True)
class PushResult:
    version: PromptVersion
    created: bool
    """False when the latest version already had this content (nothing was published)."""


async def _publish(settings: Settings, topic: str, key: str, payload: PromptVersion | PromptLabel | None) -> None:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    try:
        if payload is None:
            await (await producer.send(topic, None, key=key.encode()))
        else:
            value, headers = encode(make_event(payload, source=SOURCE, tenant_id="_system"))
            await (await producer.send(topic, value, key=key.encode(), headers=headers))
    finally:
        await producer.stop()


async def push(
    settings: Settings, definition: PromptDefinition, *, created_by: str = "", topic: str = PROMPTS.name,
    attempts: int = 5, timeout_s: float = 30.0,
) -> PushResult:
    """Publish ``definition`` as the prompt's next version (or return the latest one if its content is equal)."""
    definition.check()
    push_id = uuid.uuid4().hex
    for _ in range(attempts):
        registry = await read_registry(settings, topic, timeout_s)
        latest = registry.latest(definition.name)
        if latest is not None and latest.content_hash == definition.content_hash():
            return PushResult(latest, created=False)
        number = (latest.version if latest else 0) + 1
        version = definition.to_version(number, push_id, created_by)
        key = f"version/{version.name}/{number}/{push_id}"
        await _publish(settings, topic, key, version)
        deadline = time.monotonic() + timeout_s
        while True:  # read back until our record (or the winner of the number) is visible
            registry = await read_registry(settings, topic, timeout_s)
            winner = registry.versions.get(version.name, {}).get(number)
            if winner is not None:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"pushed {key} but did not read it back within {timeout_s}s")
            await asyncio.sleep(0.1)
        if winner.push_id == push_id:
            return PushResult(winner, created=True)
        await _publish(settings, topic, key, None)  # lost the race: retract ours, take the next number
    raise RuntimeError(f"could not get a version number for {definition.name!r} after {attempts} attempts (concurrent pushes)")


async def move_label(
    settings: Settings, name: str, label: str, version: int, *, moved_by: str = "", topic: str = PROMPTS.name,
) -> PromptLabel:
    """Point ``label`` of prompt ``name`` at an existing ``version``."""
    registry = await read_registry(settings, topic)
    registry.get(name, version)  # UnknownPrompt when the version does not exist
    event = PromptLabel(name=name, label=label, version=version, moved_by=moved_by, moved_at=utc_now())
    await _publish(settings, topic, f"label/{name}/{label}", event)
    return event


__all__ = ["PromptFollower", "PushResult", "UnknownPrompt", "move_label", "push", "read_registry", "wait_ready"]
