"""Dead letters: an input that could not be decoded or processed, with where it came from and why.

A dead letter always fits on the dead-letter topic, whatever the input: :meth:`DeadLetter.from_bytes` keeps
at most :data:`ORIGINAL_MAX_BYTES` of the original value (and :data:`KEY_MAX_BYTES` of its key), and records
the whole original's size and SHA-256, so a truncated original can still be matched to its source message.
The encoded letter stays under :data:`MAX_MESSAGE_BYTES`, the smallest default message limit of the
clients and brokers we run on (confluent-kafka's ``message.max.bytes`` is 1,000,000; Kafka brokers and
aiokafka accept 1,048,576 and more). The error text is truncated and made valid UTF-8 (a lone surrogate in
it would make the letter itself unencodable).
"""

from __future__ import annotations

import base64
import hashlib

from pydantic import BaseModel, ConfigDict, Field

MAX_MESSAGE_BYTES = 1_000_000
"""An encoded dead letter (envelope included) never exceeds this."""
ORIGINAL_MAX_BYTES = 256 * 1024
"""The most bytes of the original value a dead letter carries (base64 makes them 4/3 larger)."""
KEY_MAX_BYTES = 1024
"""The most bytes of the original key a dead letter carries."""
ERROR_MAX_CHARS = 20_000


def _printable(text: str, limit: int) -> str:
    """``text`` as valid UTF-8 (lone surrogates as ``\\udc80`` escapes), at most ``limit`` characters."""
    safe = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return safe if len(safe) <= limit else safe[: limit - 3] + "..."


class DeadLetter(BaseModel):
    """The original bytes (base64, possibly truncated) and the error; nothing is dropped silently."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=300)
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    error_kind: str = Field(min_length=1, max_length=100)
    error: str = Field(max_length=ERROR_MAX_CHARS)
    original_b64: str = Field(
        description="The original message value, base64-encoded; only its first bytes if original_truncated."
    )
    original_key_b64: str | None = None
    consumer: str = Field(default="", max_length=200, description="Which agent or service gave up on it.")
    original_size: int | None = Field(
        default=None, ge=0, description="Size in bytes of the whole original value (absent in older letters)."
    )
    original_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="SHA-256 (hex) of the whole original value."
    )
    original_truncated: bool = Field(
        default=False, description="original_b64 holds only the first ORIGINAL_MAX_BYTES of the value."
    )
    original_key_truncated: bool = Field(
        default=False, description="original_key_b64 holds only the first KEY_MAX_BYTES of the key."
    )

    @classmethod
    def from_bytes(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        error_kind: str,
        error: str,
        value: bytes | None,
        key: bytes | None = None,
        consumer: str = "",
    ) -> DeadLetter:
        """The dead letter of one message; it fits on the topic however large or malformed the message was."""
        original = value or b""
        return cls(
            topic=_printable(topic, 300),
            partition=partition,
            offset=offset,
            error_kind=_printable(error_kind, 100),
            error=_printable(error, ERROR_MAX_CHARS),
            original_b64=base64.b64encode(original[:ORIGINAL_MAX_BYTES]).decode("ascii"),
            original_key_b64=base64.b64encode(key[:KEY_MAX_BYTES]).decode("ascii") if key is not None else None,
            consumer=_printable(consumer, 200),
            original_size=len(original),
            original_sha256=hashlib.sha256(original).hexdigest(),
            original_truncated=len(original) > ORIGINAL_MAX_BYTES,
            original_key_truncated=key is not None and len(key) > KEY_MAX_BYTES,
        )

    def original(self) -> bytes:
        """The original value as carried: all of it, or its first bytes if ``original_truncated``."""
        return base64.b64decode(self.original_b64)
