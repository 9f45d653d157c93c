"""Test helpers on the real broker: publish requests to a dispatch topic, read completions and chunks back."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka import Message as KafkaMessage

from schemas.codec import decode, make_event
from schemas.completions import Completion, CompletionChunk
from schemas.deadletter import DeadLetter
from schemas.envelope import Envelope
from schemas.requests import GenerationParams, InferenceRequest, Message
from schemas.topics import COMPLETION_CHUNKS, COMPLETIONS, DEADLETTER
from services.core.kafka.config import confluent_consumer_config
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings


def make_request(request_id: str, deployment_id: str, text: str, **params: object) -> InferenceRequest:
    return InferenceRequest(
        request_id=request_id, tenant="t1", application="tests", model_alias="tiny", deployment_id=deployment_id,
        messages=[Message(role="user", content=text)], params=GenerationParams.model_validate(params),
    )


def decode_message(msg: KafkaMessage) -> Envelope[Any]:
    """The event in a message consumed with confluent_kafka (its headers come back as a list of (str, bytes) pairs)."""
    headers = cast(list[tuple[str, bytes | None]] | None, msg.headers())  # the stub's HeadersType also covers produce()'s
    return decode(msg.value(), headers)


def publish(settings: Settings, topic: str, requests: list[InferenceRequest]) -> None:
    producer = EventProducer(settings)
    for req in requests:
        producer.send(topic, make_event(req, source="tests", tenant_id=req.tenant), key=req.request_id)
    producer.flush()


@dataclass
class Collected:
    completions: dict[str, list[Completion]] = field(default_factory=lambda: defaultdict(list))
    chunks: dict[str, list[CompletionChunk]] = field(default_factory=lambda: defaultdict(list))
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def streamed_text(self, request_id: str) -> str:
        """The text of the LAST attempt's chunks: a redelivered request restarts its stream at index 0.

        A request's chunks share one partition (key = request_id), so arrival order is production order.
        """
        attempt: list[CompletionChunk] = []
        for c in self.chunks.get(request_id, []):
            if c.index == 0:
                attempt = []
            attempt.append(c)
        assert [c.index for c in attempt] == list(range(len(attempt))), f"chunks out of order for {request_id}"
        return "".join(c.text for c in attempt)

    def attempts(self, request_id: str) -> int:
        return sum(1 for c in self.chunks.get(request_id, []) if c.index == 0)


class Reader:
    """Reads completions, chunks and dead letters from the beginning (partition assignment, no group join)."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(confluent_consumer_config(settings, f"tests-reader-{uuid.uuid4().hex[:8]}"))
        tps = []
        for spec in (COMPLETIONS, COMPLETION_CHUNKS, DEADLETTER):
            tps += [TopicPartition(spec.name, p, OFFSET_BEGINNING) for p in range(spec.partitions)]
        self.consumer.assign(tps)
        self.data = Collected()

    def _poll(self) -> None:
        for msg in self.consumer.consume(500, timeout=0.2):
            if msg.error():
                continue
            p = decode_message(msg).payload
            if isinstance(p, Completion):
                self.data.completions[p.request_id].append(p)
            elif isinstance(p, CompletionChunk):
                self.data.chunks[p.request_id].append(p)
            elif isinstance(p, DeadLetter):
                self.data.dead_letters.append(p)

    def read_until(self, request_ids: set[str], timeout_s: float, dead_letter_topic: str | None = None,
                   dead_letters: int = 0) -> Collected:
        """Poll until every id has a completion (and enough dead letters from that topic arrived) or timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dl = [d for d in self.data.dead_letters if d.topic == dead_letter_topic]
            if request_ids <= set(self.data.completions) and len(dl) >= dead_letters:
                break
            self._poll()
        return self.data

    def drain(self, seconds: float) -> Collected:
        """Keep reading for ``seconds`` (to catch duplicates or late messages)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._poll()
        return self.data

    def close(self) -> None:
        self.consumer.close()


def committed_total(settings: Settings, group: str, topic: str, partitions: int) -> int:
    """Sum of the group's committed offsets over the topic's partitions (= messages done, topic starting at 0)."""
    consumer = Consumer(confluent_consumer_config(settings, group))
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in got)
    finally:
        consumer.close()
