"""The one wire codec: JSON bytes of the envelope, with the event type and schema version also in headers.

``decode`` raises :class:`DecodeError` whose ``kind`` says what was wrong, so consumers can send the
message to the dead-letter topic with a precise reason instead of crashing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ValidationError

from schemas.envelope import Envelope
from schemas.registry import EVENT_TYPES, event_type_for

CONTENT_TYPE = "application/json"
HEADER_EVENT_TYPE = "event-type"
HEADER_SCHEMA_VERSION = "schema-version"
HEADER_CONTENT_TYPE = "content-type"

Headers = list[tuple[str, bytes]]


class DecodeErrorKind(StrEnum):
    """Why bytes could not become an event."""

    EMPTY = "empty"
    """No value at all (null or zero bytes)."""
    NOT_JSON = "not_json"
    """Not UTF-8 JSON."""
    NOT_AN_OBJECT = "not_an_object"
    """JSON, but not an object with the envelope's fields."""
    UNKNOWN_TYPE = "unknown_type"
    """``event_type`` missing or not registered."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """``schema_version`` missing, not an integer, or not one this build reads."""
    HEADER_MISMATCH = "header_mismatch"
    """The headers say one type or version and the body another."""
    INVALID = "invalid"
    """The envelope or payload failed validation."""
    WRONG_TYPE = "wrong_type"
    """A valid event, but not of the type the caller expects on this topic."""


class DecodeError(ValueError):
    """Bytes that are not a valid event. ``kind`` is machine-readable; ``str(err)`` is for humans."""

    def __init__(self, kind: DecodeErrorKind, message: str) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.message = message


def make_event(
    payload: BaseModel,
    *,
    source: str,
    tenant_id: str,
    trace_id: str | None = None,
    **envelope_fields: Any,
) -> Envelope[Any]:
    """Wrap a payload in an envelope with its registered type and current version."""
    et = event_type_for(type(payload))
    return Envelope[type(payload)](  # type: ignore[misc]
        event_type=et.name,
        schema_version=et.version,
        source=source,
        tenant_id=tenant_id,
        trace_id=trace_id,
        payload=payload,
        **envelope_fields,
    )


def encode(event: Envelope[Any]) -> tuple[bytes, Headers]:
    """The event as (value bytes, headers)."""
    et = EVENT_TYPES.get(event.event_type)
    if et is None or not isinstance(event.payload, et.model):
        raise ValueError(f"event_type {event.event_type!r} does not match payload {type(event.payload).__name__}")
    value = event.model_dump_json().encode("utf-8")
    headers: Headers = [
        (HEADER_EVENT_TYPE, event.event_type.encode()),
        (HEADER_SCHEMA_VERSION, str(event.schema_version).encode()),
        (HEADER_CONTENT_TYPE, CONTENT_TYPE.encode()),
    ]
    return value, headers


def _header(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> str | None:
    for key, val in headers or ():
        if key == name and val is not None:
            return val.decode("utf-8", errors="replace")
    return None


def decode(
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]] | None = None,
    *,
    expect: type[BaseModel] | tuple[type[BaseModel], ...] | None = None,
) -> Envelope[Any]:
    """Bytes (and optional headers) to a validated event, or :class:`DecodeError`."""
    if not value:
        raise DecodeError(DecodeErrorKind.EMPTY, "message has no value")
    try:
        raw = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(DecodeErrorKind.NOT_JSON, f"value is not UTF-8 JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise DecodeError(DecodeErrorKind.NOT_AN_OBJECT, f"expected a JSON object, got {type(raw).__name__}")

    type_name = raw.get("event_type")
    if not isinstance(type_name, str) or type_name not in EVENT_TYPES:
        raise DecodeError(
            DecodeErrorKind.UNKNOWN_TYPE,
            f"event_type {type_name!r} is not one of {sorted(EVENT_TYPES)}",
        )
    et = EVENT_TYPES[type_name]
    version = raw.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in et.accepts:
        raise DecodeError(
            DecodeErrorKind.UNSUPPORTED_VERSION,
            f"{type_name} schema_version {version!r} is not supported (this build reads {sorted(et.accepts)})",
        )

    header_type = _header(headers, HEADER_EVENT_TYPE)
    header_version = _header(headers, HEADER_SCHEMA_VERSION)
    if header_type is not None and header_type != type_name:
        raise DecodeError(DecodeErrorKind.HEADER_MISMATCH, f"header says {header_type!r}, body says {type_name!r}")
    if header_version is not None and header_version != str(version):
        raise DecodeError(
            DecodeErrorKind.HEADER_MISMATCH, f"header says version {header_version!r}, body says {version!r}"
        )

    if expect is not None:
        expected = expect if isinstance(expect, tuple) else (expect,)
        if et.model not in expected:
            names = ", ".join(event_type_for(m).name for m in expected)
            raise DecodeError(DecodeErrorKind.WRONG_TYPE, f"got {type_name}, expected {names}")

    try:
        return Envelope[et.model].model_validate(raw)  # type: ignore[name-defined]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:10]
        )
        raise DecodeError(DecodeErrorKind.INVALID, f"{type_name} v{version} failed validation: {problems}") from None
