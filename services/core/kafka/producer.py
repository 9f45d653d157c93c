"""A typed event producer (confluent-kafka): encodes with the one codec and reports delivery failures."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from schemas.codec import encode
from schemas.envelope import Envelope
from services.core.kafka.config import confluent_producer_config
from services.core.settings import Settings


class DeliveryError(RuntimeError):
    """At least one message was not acknowledged by the broker."""


class EventProducer:
    """Produce envelopes to topics; ``flush`` waits for every acknowledgement and raises on any failure."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._producer = Producer(confluent_producer_config(settings, **overrides))
        self._errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err.str()}")

    def send(self, topic: str, event: Envelope[Any], key: str | bytes | None = None) -> None:
        value, encoded_headers = encode(event)
        headers: list[tuple[str, str | bytes | None]] = list(encoded_headers)
        key_bytes = key.encode() if isinstance(key, str) else key
        while True:
            try:
                self._producer.produce(topic, value=value, key=key_bytes, headers=headers, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
        self._producer.poll(0)

    def send_raw(self, topic: str, value: bytes | None, key: bytes | None = None) -> None:
        """Produce bytes as they are (for tools and tests that need malformed input)."""
        self._producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(f"{remaining} message(s) not acknowledged within {timeout_s}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryError(f"{len(errors)} delivery failure(s), first: {errors[0]}")
