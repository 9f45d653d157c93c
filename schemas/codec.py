"""The one wire codec: JSON bytes of the envelope, with the event type and schema version also in headers.

``decode`` raises :class:`DecodeError` whose ``kind`` says what was wrong, so consumers can send the
message to the dead-letter topic with a precise reason instead of crashing. It raises nothing else, whatever
the bytes: hostile input is bounded before it is parsed (size, then nesting depth, both configurable per call),
the text must be strict UTF-8, numbers must fit 64 bits (integers) or be finite (floats), ``NaN``/``Infinity``
are not JSON, and no string may hold a lone UTF-16 surrogate (``"\\udc80"``: not a Unicode character, so no
UTF-8 store such as ClickHouse accepts it).
"""

from __future__ import annotations

import json
import math
import re
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

MAX_VALUE_BYTES = 8 * 1024 * 1024
"""Default largest value ``decode`` parses: far above Kafka's default 1 MB message limit; a guard, not a contract."""
MAX_DEPTH = 64
"""Default deepest nesting of JSON arrays/objects ``decode`` parses (events nest about 5 deep)."""
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
"""Integers outside [INT_MIN, INT_MAX] fit no 64-bit column: ``out_of_range``."""


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
    TOO_LARGE = "too_large"
    """The value is larger than the decoder's size limit (checked before parsing)."""
    TOO_DEEP = "too_deep"
    """JSON arrays/objects nested deeper than the decoder's depth limit (checked before parsing)."""
    OUT_OF_RANGE = "out_of_range"
    """A number that fits no 64-bit column: an integer outside [-2**63, 2**64-1] or a float that overflows."""
    INVALID_TEXT = "invalid_text"
    """A string (or object key) holds a lone UTF-16 surrogate escape, which is not a Unicode character."""


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
    envelope_model: type[Envelope[Any]] = Envelope[type(payload)]  # type: ignore[misc, assignment]  # a run-time type argument
    return envelope_model(
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


def _show(value: object, limit: int = 80) -> str:
    """A short repr of hostile input for an error message (repr escapes surrogates and control characters)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_SQUARE_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _check_nesting(value: bytes, text: str, max_depth: int) -> None:
    """Raise ``too_deep`` if arrays/objects nest deeper than ``max_depth``, without recursing.

    Strings are cut out, braces become brackets, then innermost ``[]`` pairs are removed once per level:
    a balanced skeleton empties after exactly its depth in rounds, each a C-speed bytes.replace.
    """
    if text.count("[") + text.count("{") <= max_depth:  # the common case: too few brackets to nest deeper
        return
    skeleton = _JSON_STRING.sub(b"", value).translate(_SQUARE_BRACKETS, _NOT_BRACKETS)
    for _ in range(max_depth):
        if not skeleton:
            return
        reduced = skeleton.replace(b"[]", b"")
        if len(reduced) == len(skeleton):
            raise DecodeError(DecodeErrorKind.NOT_JSON, "value is not JSON (unbalanced brackets)")
        skeleton = reduced
    if skeleton:
        raise DecodeError(DecodeErrorKind.TOO_DEEP, f"JSON nested deeper than {max_depth} levels")


class _OutOfRange(ValueError):
    pass


class _NotJsonConstant(ValueError):
    pass


def _parse_int(text: str) -> int:
    # Reject before int() converts it: a 10-million-digit integer takes seconds to convert.
    if len(text) > 21:
        raise _OutOfRange(f"integer with {len(text)} digits")
    number = int(text)
    if not INT_MIN <= number <= INT_MAX:
        raise _OutOfRange(f"integer {number}")
    return number


def _parse_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _OutOfRange(f"float {_show(text)} overflows")
    return number


def _reject_constant(name: str) -> float:
    raise _NotJsonConstant(name)


# The hooks cost about 0.2 us per number (events hold a dozen); a pre-scan for long digit runs cost more.
_STRICT_JSON = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float, parse_constant=_reject_constant)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _find_surrogate(node: object, path: str) -> str | None:
    """The path of the first string or key holding a lone surrogate, or None."""
    if isinstance(node, str):
        return (path or "<root>") if _SURROGATE.search(node) else None
    if isinstance(node, dict):
        for key, child in node.items():
            if _SURROGATE.search(key):
                return f"{path}.<key>" if path else "<key>"
            found = _find_surrogate(child, f"{path}.{key}" if path else key)
            if found:
                return found
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found = _find_surrogate(child, f"{path}.{i}" if path else str(i))
            if found:
                return found
    return None


def _parse(value: bytes, max_bytes: int, max_depth: int) -> Any:
    """Bounded, strict JSON parsing: the value as Python objects, or :class:`DecodeError`."""
    if len(value) > max_bytes:
        raise DecodeError(DecodeErrorKind.TOO_LARGE, f"value has {len(value):,} bytes, the limit is {max_bytes:,}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(DecodeErrorKind.NOT_JSON, f"value is not UTF-8 ({exc})") from None
    _check_nesting(value, text, max_depth)
    try:
        raw = _STRICT_JSON.decode(text)
    except _OutOfRange as exc:
        raise DecodeError(DecodeErrorKind.OUT_OF_RANGE, f"number out of range: {exc}") from None
    except _NotJsonConstant as exc:
        raise DecodeError(DecodeErrorKind.NOT_JSON, f"value is not JSON ({exc} is not a JSON value)") from None
    except RecursionError:  # not reachable after _check_nesting with a sane max_depth; kept as the last line
        raise DecodeError(DecodeErrorKind.TOO_DEEP, "JSON nested too deep to parse") from None
    except (ValueError, MemoryError) as exc:
        raise DecodeError(DecodeErrorKind.NOT_JSON, f"value is not JSON ({_show(str(exc), 200)})") from None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):  # the substring test is the cheap, common "no"
        where = _find_surrogate(raw, "")
        if where is not None:
            raise DecodeError(DecodeErrorKind.INVALID_TEXT, f"{where}: lone UTF-16 surrogate (not a Unicode character)")
    return raw


def decode(
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]] | None = None,
    *,
    expect: type[BaseModel] | tuple[type[BaseModel], ...] | None = None,
    max_bytes: int = MAX_VALUE_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Envelope[Any]:
    """Bytes (and optional headers) to a validated event, or :class:`DecodeError` (and never anything else)."""
    if not value:
        raise DecodeError(DecodeErrorKind.EMPTY, "message has no value")
    raw = _parse(value if isinstance(value, bytes) else bytes(value), max_bytes, max_depth)
    if not isinstance(raw, dict):
        raise DecodeError(DecodeErrorKind.NOT_AN_OBJECT, f"expected a JSON object, got {type(raw).__name__}")

    type_name = raw.get("event_type")
    if not isinstance(type_name, str) or type_name not in EVENT_TYPES:
        raise DecodeError(
            DecodeErrorKind.UNKNOWN_TYPE,
            f"event_type {_show(type_name)} is not one of {sorted(EVENT_TYPES)}",
        )
    et = EVENT_TYPES[type_name]
    version = raw.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in et.accepts:
        raise DecodeError(
            DecodeErrorKind.UNSUPPORTED_VERSION,
            f"{type_name} schema_version {_show(version)} is not supported (this build reads {sorted(et.accepts)})",
        )

    header_type = _header(headers, HEADER_EVENT_TYPE)
    header_version = _header(headers, HEADER_SCHEMA_VERSION)
    if header_type is not None and header_type != type_name:
        raise DecodeError(DecodeErrorKind.HEADER_MISMATCH, f"header says {_show(header_type)}, body says {type_name!r}")
    if header_version is not None and header_version != str(version):
        raise DecodeError(
            DecodeErrorKind.HEADER_MISMATCH, f"header says version {_show(header_version)}, body says {version!r}"
        )

    if expect is not None:
        expected = expect if isinstance(expect, tuple) else (expect,)
        if et.model not in expected:
            names = ", ".join(event_type_for(m).name for m in expected)
            raise DecodeError(DecodeErrorKind.WRONG_TYPE, f"got {type_name}, expected {names}")

    try:
        return Envelope[et.model].model_validate(raw)  # type: ignore[name-defined]  # a run-time type argument
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:10]
        )
        raise DecodeError(DecodeErrorKind.INVALID, f"{type_name} v{version} failed validation: {problems}") from None
    except Exception as exc:  # noqa: BLE001 - a validator's own bug must not crash the consumer either
        raise DecodeError(
            DecodeErrorKind.INVALID, f"{type_name} v{version} failed validation: {type(exc).__name__}: {_show(str(exc), 200)}"
        ) from None
