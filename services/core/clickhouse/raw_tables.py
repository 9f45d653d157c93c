"""Rows for the raw ClickHouse tables (migrations 0001-0004, 0030-0031, 0035): one function per table, one column list.

The raw sink (streams) and tests use these, so the mapping from event to row exists once. Each row
carries the source position (topic, partition, offset) so any batch can be traced and replayed.
``redact`` is applied to every free-text column; the default keeps text as it is. A dead letter's row holds the
original as *redacted text* (the caller passes the safety scanners' redaction): the original bytes stay only on
the dead-letter topic, so raw personal data never reaches ClickHouse through a malformed event.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.completions import Completion
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope, utc_now
from schemas.feedback import Feedback
from schemas.requests import InferenceRequest

Redactor = Callable[[str], str]


def _keep(text: str) -> str:
    return text


@dataclass(frozen=True)
class SourcePosition:
    topic: str
    partition: int
    offset: int


REQUEST_COLUMNS = [
    "tenant_id", "occurred_at", "request_id", "event_id", "application", "model_alias", "deployment_id",
    "prompt_id", "prompt_version", "messages", "params", "priority", "deadline", "user_id", "session_id",
    "source", "trace_id", "src_topic", "src_partition", "src_offset",
]

COMPLETION_COLUMNS = [
    "tenant_id", "occurred_at", "request_id", "event_id", "application", "model_alias", "deployment_id",
    "model_name", "model_version", "prompt_id", "prompt_version", "prompt_text", "text", "finish_reason",
    "prompt_tokens", "completion_tokens", "cached_tokens", "queue_ms", "ttft_ms", "total_ms", "error_kind",
    "error_message", "source", "trace_id", "src_topic", "src_partition", "src_offset", "routing_weight", "cached",
    "fallback_from_deployment", "fallback_reason",
]

FEEDBACK_COLUMNS = [
    "tenant_id", "occurred_at", "request_id", "event_id", "score", "label", "comment", "feedback_source",
    "source", "trace_id", "src_topic", "src_partition", "src_offset",
]

DEAD_LETTER_COLUMNS = [
    "occurred_at", "src_topic", "src_partition", "src_offset", "consumer", "error_kind", "error", "original",
    "original_key", "original_size", "original_sha256",
]


def request_row(event: Envelope[InferenceRequest], pos: SourcePosition, redact: Redactor = _keep) -> list[Any]:
    r = event.payload
    messages = [{"role": m.role, "content": redact(m.content)} for m in r.messages or []]
    return [
        event.tenant_id, event.occurred_at, r.request_id, event.event_id, r.application, r.model_alias,
        r.deployment_id or "", r.prompt.prompt_id if r.prompt else "", r.prompt.version if r.prompt else "",
        json.dumps(messages, ensure_ascii=False), r.params.model_dump_json(), r.priority, r.deadline,
        r.user_id or "", r.session_id or "", event.source, event.trace_id or "", pos.topic, pos.partition, pos.offset,
    ]


def completion_row(event: Envelope[Completion], pos: SourcePosition, redact: Redactor = _keep) -> list[Any]:
    c = event.payload
    return [
        event.tenant_id, event.occurred_at, c.request_id, event.event_id, c.application, c.model_alias,
        c.deployment_id, c.model_name, c.model_version, c.prompt_id or "", c.prompt_version or "",
        redact(c.prompt_text), redact(c.text), c.finish_reason, c.prompt_tokens, c.completion_tokens,
        c.cached_tokens, c.queue_ms, c.ttft_ms, c.total_ms, c.error.kind if c.error else "",
        c.error.message if c.error else "", event.source, event.trace_id or "", pos.topic, pos.partition, pos.offset,
        c.routing_weight, int(c.cached), c.fallback.from_deployment if c.fallback else "",
        c.fallback.reason if c.fallback else "",
    ]


def feedback_row(event: Envelope[Feedback], pos: SourcePosition, redact: Redactor = _keep) -> list[Any]:
    f = event.payload
    return [
        event.tenant_id, event.occurred_at, f.request_id, event.event_id, f.score, f.label or "",
        redact(f.comment or ""), f.source, event.source, event.trace_id or "", pos.topic, pos.partition, pos.offset,
    ]


def as_text(data: bytes) -> str:
    """Bytes as text for a String column: UTF-8, with anything undecodable replaced (U+FFFD)."""
    return data.decode("utf-8", errors="replace")


DEAD_LETTER_TEXT_MAX = 8 * 1024
"""A dead letter's row holds at most this many bytes of its original, as redacted text (size and hash cover all)."""


def dead_letter_row(letter: DeadLetter, redact: Redactor, occurred_at: datetime | None = None) -> list[Any]:
    """The ``dead_letters`` row of a dead letter: its reason, the first ``DEAD_LETTER_TEXT_MAX`` bytes of its original
    and its key as redacted text (a reason may quote the refused value), with the whole original's size and SHA-256."""
    original = letter.original()
    key = None if letter.original_key_b64 is None else base64.b64decode(letter.original_key_b64)
    size = letter.original_size if letter.original_size is not None else len(original)
    digest = letter.original_sha256 or hashlib.sha256(original).hexdigest()
    return [
        occurred_at or utc_now(), letter.topic, letter.partition, letter.offset, letter.consumer, letter.error_kind,
        redact(as_text(letter.error.encode("utf-8", errors="replace"))), redact(as_text(original[:DEAD_LETTER_TEXT_MAX])),
        None if key is None else redact(as_text(key)), size, digest,
    ]
