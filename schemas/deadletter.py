"""Dead letters: an input that could not be decoded or processed, with where it came from and why."""

from __future__ import annotations

import base64

from pydantic import BaseModel, ConfigDict, Field


class DeadLetter(BaseModel):
    """The original bytes (base64) and the error; nothing is dropped silently."""

    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=300)
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    error_kind: str = Field(min_length=1, max_length=100)
    error: str = Field(max_length=20_000)
    original_b64: str = Field(description="The original message value, base64-encoded.")
    original_key_b64: str | None = None
    consumer: str = Field(default="", max_length=200, description="Which agent or service gave up on it.")

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
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            error_kind=error_kind,
            error=error[:20_000],
            original_b64=base64.b64encode(value or b"").decode("ascii"),
            original_key_b64=base64.b64encode(key).decode("ascii") if key is not None else None,
            consumer=consumer,
        )

    def original(self) -> bytes:
        return base64.b64decode(self.original_b64)
