"""The one way to build and publish a dead letter from a consumed record.

Every service that gives up on a record (undecodable, the wrong type, a failure its handler did not expect)
publishes a :class:`~schemas.deadletter.DeadLetter` to ``llm.deadletter``, keyed by the record's source position
``topic/partition/offset``. Its envelope's ``event_id`` is derived from that position and the consumer's name, so
a record dead-lettered again after a restart (at-least-once) carries the same id and the dead-letter sink
collapses the copies.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from schemas.codec import Headers, encode, make_event
from schemas.deadletter import DeadLetter
from schemas.topics import DEADLETTER

DEAD_LETTER_NAMESPACE = uuid.UUID("5b0e6a39-3f0c-4e54-9d0b-3f6f3c1e2a71")
"""uuid5 namespace of dead-letter event ids (the notifier's, whose ids stay as they were)."""


class SourcePosition(Protocol):
    """Where a record was (a consumed record, or the dead letter of one)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


class SourceRecord(SourcePosition, Protocol):
    """What a dead letter needs of a consumed record (aiokafka's ConsumerRecord and the Faust runtime's Record have it)."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def position(record: SourcePosition) -> str:
    """``topic/partition/offset``: the dead letter's key and the root of its event id."""
    return f"{record.topic}/{record.partition}/{record.offset}"


def dead_letter_id(record: SourcePosition, consumer: str) -> uuid.UUID:
    """The same id every time ``consumer`` dead-letters this record."""
    return uuid.uuid5(DEAD_LETTER_NAMESPACE, f"{position(record)}/{consumer}")


def encode_dead_letter(letter: DeadLetter, *, source: str, tenant_id: str = "unknown") -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of ``letter``, ready for any producer: keyed by its source position, with the event id
    :func:`dead_letter_id` gives its record and consumer."""
    event = make_event(letter, source=source, tenant_id=tenant_id, event_id=dead_letter_id(letter, letter.consumer))
    value, headers = encode(event)
    return position(letter).encode(), value, headers


def dead_letter_message(
    record: SourceRecord, error_kind: str, error: str, *, consumer: str, source: str, tenant_id: str = "unknown",
) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) of the dead letter for ``record``, ready for any producer."""
    letter = DeadLetter.from_bytes(
        topic=record.topic, partition=record.partition, offset=record.offset, error_kind=error_kind, error=error,
        value=record.value, key=record.key, consumer=consumer,
    )
    return encode_dead_letter(letter, source=source, tenant_id=tenant_id)


async def send_dead_letter(
    producer: AIOKafkaProducer, record: SourceRecord, error_kind: str, error: str, *, consumer: str, source: str,
    topic: str = DEADLETTER.name,
) -> asyncio.Future[Any]:
    """Publish the dead letter of ``record``; returns the broker's acknowledgement to await."""
    key, value, headers = dead_letter_message(record, error_kind, error, consumer=consumer, source=source)
    ack: asyncio.Future[Any] = await producer.send(topic, value, key=key, headers=headers)
    return ack
