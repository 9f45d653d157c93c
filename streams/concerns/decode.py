"""Decoding: Kafka records to typed events, or to dead letters with the exact reason. Never raises on input.

Each input topic has one expected payload model; anything else on it (not JSON, unknown type, unsupported version,
invalid payload, empty value, a valid event of the wrong type, anything the codec rejects) becomes a
:class:`~schemas.deadletter.DeadLetter` carrying the reason, the original bytes and the source position.
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
from services.core.clickhouse.raw_tables import SourcePosition
from services.core.faust_runtime import Record


def position(record: Record) -> SourcePosition:
    return SourcePosition(record.topic, record.partition, record.offset)


@dataclass
class DecodedBatch:
    """A batch split by payload type (each with its record); dead letters keep the batch's order."""

    requests: list[tuple[Envelope[InferenceRequest], Record]] = field(default_factory=list)
    completions: list[tuple[Envelope[Completion], Record]] = field(default_factory=list)
    feedback: list[tuple[Envelope[Feedback], Record]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def dead_letter(record: Record, kind: str, error: str, consumer: str) -> DeadLetter:
    """The dead letter of a record that could not be decoded or processed."""
    return DeadLetter.from_bytes(topic=record.topic, partition=record.partition, offset=record.offset,
                                 error_kind=kind, error=error, value=record.value, key=record.key, consumer=consumer)


def decode_batch(records: list[Record], expected: dict[str, type[BaseModel]], consumer: str) -> DecodedBatch:
    """Decode every record against its topic's expected model."""
    out = DecodedBatch()
    for rec in records:
        try:
            event: Envelope[Any] = decode(rec.value, rec.headers, expect=expected.get(rec.topic))
        except DecodeError as exc:
            out.dead_letters.append(dead_letter(rec, exc.kind.value, str(exc), consumer))
            continue
        except Exception as exc:  # noqa: BLE001 - the codec should classify everything; never crash on input
            out.dead_letters.append(dead_letter(rec, "undecodable", f"{type(exc).__name__}: {exc}"[:2000], consumer))
            continue
        payload = event.payload
        if isinstance(payload, Completion):
            out.completions.append((event, rec))
        elif isinstance(payload, InferenceRequest):
            out.requests.append((event, rec))
        elif isinstance(payload, Feedback):
            out.feedback.append((event, rec))
        else:  # only reachable for a topic with no expected model
            out.dead_letters.append(dead_letter(rec, "wrong_type", f"wrong_type: no agent reads {event.event_type} "
                                                f"from {rec.topic}", consumer))
    return out
