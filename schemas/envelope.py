"""The envelope every event travels in: identity, type, version, time, origin, tenant and trace.

The payload is one of the models registered in :mod:`schemas.registry`; the codec checks that
``event_type`` and the payload's model agree.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

P = TypeVar("P", bound=BaseModel)


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("occurred_at must be timezone-aware (UTC)")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Envelope(BaseModel, Generic[P]):
    """One event: metadata plus a typed payload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique id; consumers dedup on it.")
    event_type: str = Field(min_length=1, description="Registered event type, e.g. 'inference.request'.")
    schema_version: int = Field(ge=1, description="Version of the payload contract.")
    occurred_at: UtcDatetime = Field(default_factory=utc_now, description="When the event happened (UTC).")
    source: str = Field(min_length=1, max_length=200, description="Service or component that emitted it.")
    tenant_id: str = Field(min_length=1, max_length=200)
    trace_id: str | None = Field(default=None, max_length=200, description="Distributed trace id, if any.")
    payload: P
