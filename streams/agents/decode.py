"""Decode agent: Kafka records to typed events, or to dead letters with the exact reason. Never raises on input.

Each topic has one expected payload model; anything else on it (not JSON, unknown type, unsupported
version, invalid payload, empty value, a valid event of the wrong type) becomes a
:class:`~schemas.deadletter.DeadLetter` carrying the original bytes, key and source position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from schemas.codec import DecodeError, decode
from schemas.completions import Completion
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope
from schemas.feedback import Feedback
from schemas.requests import InferenceRequest
from services.clickhouse.raw_tables import SourcePosition


@dataclass(frozen=True)
class Record:
    """One consumed Kafka record (client-independent)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]

    @property
    def position(self) -> SourcePosition:
        return SourcePosition(self.topic, self.partition, self.offset)


@dataclass
class DecodedBatch:
    """A batch split by payload type; dead letters keep the batch's order."""

    requests: list[tuple[Envelope[InferenceRequest], SourcePosition]] = field(default_factory=list)
    completions: list[tuple[Envelope[Completion], SourcePosition]] = field(default_factory=list)
    feedback: list[tuple[Envelope[Feedback], SourcePosition]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def decode_batch(records: list[Record], expected: dict[str, type[BaseModel]], consumer: str) -> DecodedBatch:
    """Decode every record against its topic's expected model."""
    out = DecodedBatch()
    for rec in records:
        model = expected.get(rec.topic)
        try:
            event: Envelope[Any] = decode(rec.value, rec.headers, expect=model)
        except DecodeError as exc:
            out.dead_letters.append(DeadLetter.from_bytes(
                topic=rec.topic, partition=rec.partition, offset=rec.offset, error_kind=exc.kind.value,
                error=str(exc), value=rec.value, key=rec.key, consumer=consumer,
            ))
            continue
        payload = event.payload
        if isinstance(payload, Completion):
            out.completions.append((event, rec.position))
        elif isinstance(payload, InferenceRequest):
            out.requests.append((event, rec.position))
        elif isinstance(payload, Feedback):
            out.feedback.append((event, rec.position))
        else:  # only reachable for a topic with no expected model
            out.dead_letters.append(DeadLetter.from_bytes(
                topic=rec.topic, partition=rec.partition, offset=rec.offset, error_kind="wrong_type",
                error=f"wrong_type: no agent reads {event.event_type} from {rec.topic}", value=rec.value,
                key=rec.key, consumer=consumer,
            ))
    return out
