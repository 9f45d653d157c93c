"""Which failures are worth retrying as they are: one answer for the Kafka services' runtime and the Faust agents."""

from __future__ import annotations

from aiokafka.errors import KafkaError, KafkaTimeoutError


class Transient(RuntimeError):
    """A failure worth retrying as it is: the server is unreachable, busy or timed out."""


def is_transient(exc: BaseException) -> bool:
    """Whether the same work may succeed later as it is: the broker unreachable or slow, a timeout, a retriable
    Kafka error, or a :class:`Transient` raised by our own code."""
    if isinstance(exc, Transient | KafkaTimeoutError | ConnectionError | TimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(exc.retriable)
