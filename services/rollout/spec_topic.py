"""The specs of started rollouts on the compacted topic ``llm.rollout-specs`` (key: alias), for the judge.

``llmops rollout start SPEC`` publishes the spec here (with the rollout id and the start time, the origin of
the analysis intervals) before the 'start' event on ``llm.rollouts``; the judge reads this topic from the
beginning, so a restarted judge has the spec of every running rollout without being given files.

The record travels in the usual envelope (event_type ``rollout.spec``, schema_version 1). Until that type
is registered in ``schemas/registry.py`` (and the topic in the catalog), this module encodes and decodes it
itself, with the same JSON shape and headers as ``schemas.codec``.
"""

from __future__ import annotations

import json
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.codec import (
    CONTENT_TYPE,
    HEADER_CONTENT_TYPE,
    HEADER_EVENT_TYPE,
    HEADER_SCHEMA_VERSION,
    DecodeError,
    DecodeErrorKind,
    Headers,
)
from schemas.envelope import Envelope, UtcDatetime
from schemas.topics import TopicSpec
from services.rollout.spec import RolloutSpec

EVENT_TYPE = "rollout.spec"
VERSION = 1


class RolloutSpecRecord(BaseModel):
    """The spec of one started rollout."""

    model_config = ConfigDict(extra="forbid")

    rollout_id: str = Field(min_length=1, max_length=200)
    started_at: UtcDatetime = Field(description="Origin of the analysis intervals (event time).")
    spec: RolloutSpec


ROLLOUT_SPECS = TopicSpec(
    "llm.rollout-specs", RolloutSpecRecord, "alias", 1, cleanup_policy="compact", retention_ms=None,
    description="The spec of each alias's latest rollout (payload: rollout.spec); compacted.",
)
"""The topic; to be added to the catalog in schemas/topics.py."""


def encode_record(record: RolloutSpecRecord, *, source: str, occurred_at: datetime | None = None) -> tuple[bytes, Headers]:
    extra = {"occurred_at": occurred_at} if occurred_at is not None else {}
    env = Envelope[RolloutSpecRecord](event_type=EVENT_TYPE, schema_version=VERSION, source=source, tenant_id="_system",
                                      payload=record, **extra)
    headers: Headers = [
        (HEADER_EVENT_TYPE, EVENT_TYPE.encode()),
        (HEADER_SCHEMA_VERSION, str(VERSION).encode()),
        (HEADER_CONTENT_TYPE, CONTENT_TYPE.encode()),
    ]
    return env.model_dump_json().encode(), headers


def decode_record(value: bytes | None) -> RolloutSpecRecord:
    """The record, or :class:`DecodeError` (same kinds as the codec's)."""
    if not value:
        raise DecodeError(DecodeErrorKind.EMPTY, "message has no value")
    try:
        raw = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(DecodeErrorKind.NOT_JSON, f"value is not UTF-8 JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise DecodeError(DecodeErrorKind.NOT_AN_OBJECT, "expected a JSON object")
    if raw.get("event_type") != EVENT_TYPE:
        raise DecodeError(DecodeErrorKind.WRONG_TYPE, f"got {raw.get('event_type')!r}, expected {EVENT_TYPE}")
    if raw.get("schema_version") != VERSION:
        raise DecodeError(DecodeErrorKind.UNSUPPORTED_VERSION, f"{EVENT_TYPE} version {raw.get('schema_version')!r}")
    try:
        return Envelope[RolloutSpecRecord].model_validate(raw).payload
    except ValidationError as exc:
        raise DecodeError(DecodeErrorKind.INVALID, f"{EVENT_TYPE} failed validation: {exc.errors()[:3]}") from None
