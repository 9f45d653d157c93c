"""Synthetic users and a synthetic grader for the demo.

Users send chat requests for one alias at a steady rate (sticky user ids, so routing is per user). Some
prompts carry personal data on purpose, so the safety agent has something to find and redact. The
grader reads the completions of this run and publishes one ``Feedback`` per completion, scored by a
fixed, documented rule that prefers concise answers: 0.95 up to 32 generated tokens, then 0.0125 less
per extra token (floor 0.1), zero for an error; plus small seeded noise.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from aiokafka import AIOKafkaConsumer

from schemas.codec import DecodeError, decode, make_event
from schemas.completions import Completion
from schemas.envelope import utc_now
from schemas.feedback import Feedback
from schemas.requests import InferenceRequest, Message
from schemas.topics import COMPLETIONS, FEEDBACK, REQUESTS
from services.kafka.config import aiokafka_consumer_kwargs
from services.kafka.producer import EventProducer
from services.settings import Settings

SOURCE = "llmops.demo"
QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Give me one tip for writing clear emails.",
    "What is 12 times 12?",
    "Say hello in Spanish.",
    "What does a CPU do, in one sentence?",
    "Suggest a name for a grey cat.",
    "Summarize why sleep matters, briefly.",
    "My email is jane.doe@example.com, please confirm you got it.",
    "Call me back at +1 415 555 0132 about my order.",
]


def grade(completion: Completion, rng: random.Random) -> float:
    """The grader's score in [0, 1] (see the module docstring)."""
    if completion.error is not None or completion.finish_reason in ("error", "deadline"):
        return 0.0
    base = max(0.1, 0.95 - max(0, completion.completion_tokens - 32) * 0.0125)
    return min(1.0, max(0.0, base + rng.uniform(-0.05, 0.05)))


@dataclass
class TrafficStats:
    sent: int = 0
    completed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    feedback: int = 0

    def total_completed(self) -> int:
        return sum(self.completed.values())


class TrafficDriver:
    """Send requests at ``rate_per_s`` and grade completions, until ``stop()``."""

    def __init__(self, settings: Settings, run_id: str, alias: str, *, rate_per_s: float, users: int = 40,
                 tenant: str = "demo-tenant", max_in_flight: int = 40, seed: int = 7) -> None:
        self.settings = settings
        self.run_id = run_id
        self.alias = alias
        self.rate_per_s = rate_per_s
        self.users = users
        self.tenant = tenant
        self.max_in_flight = max_in_flight
        self.rng = random.Random(seed)
        self.stats = TrafficStats()
        self._stopping = asyncio.Event()
        self._producer = EventProducer(settings)

    @property
    def prefix(self) -> str:
        return f"demo-{self.run_id}-"

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        await asyncio.gather(self._send_requests(), self._grade_completions())

    async def _send_requests(self) -> None:
        interval = 1.0 / self.rate_per_s
        next_at = time.monotonic()
        i = 0
        while not self._stopping.is_set():
            in_flight = self.stats.sent - self.stats.total_completed()
            if in_flight < self.max_in_flight:  # a closed loop: never bury the replicas in a backlog
                user = f"user-{self.rng.randrange(self.users)}"
                request = InferenceRequest(
                    request_id=f"{self.prefix}{i:06d}", tenant=self.tenant, application="demo-chat",
                    model_alias=self.alias, messages=[Message(role="user", content=self.rng.choice(QUESTIONS))],
                    user_id=user, deadline=utc_now() + timedelta(seconds=90),
                )
                self._producer.send(REQUESTS.name, make_event(request, source=SOURCE, tenant_id=self.tenant),
                                    key=request.request_id)
                await asyncio.to_thread(self._producer.flush)
                self.stats.sent += 1
                i += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _grade_completions(self) -> None:
        consumer = AIOKafkaConsumer(COMPLETIONS.name, **aiokafka_consumer_kwargs(self.settings, f"llmops.demo.{self.run_id}"))
        await consumer.start()
        try:
            while not self._stopping.is_set():
                batches = await consumer.getmany(timeout_ms=300)
                graded = 0
                for records in batches.values():
                    for rec in records:
                        try:
                            completion = decode(rec.value, rec.headers, expect=Completion).payload
                        except DecodeError:
                            continue
                        if not completion.request_id.startswith(self.prefix):
                            continue
                        self.stats.completed[completion.deployment_id] += 1
                        if completion.error is not None:
                            self.stats.errors[completion.deployment_id] += 1
                        feedback = Feedback(request_id=completion.request_id, score=grade(completion, self.rng),
                                            source="grader", label=completion.finish_reason)
                        self._producer.send(FEEDBACK.name, make_event(feedback, source=SOURCE, tenant_id=self.tenant),
                                            key=completion.request_id)
                        graded += 1
                if graded:
                    await asyncio.to_thread(self._producer.flush)
                    self.stats.feedback += graded
                if batches:
                    await consumer.commit()
        finally:
            await consumer.stop()
