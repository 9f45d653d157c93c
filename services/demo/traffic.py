"""Synthetic users and a synthetic grader for the demo, speaking to the gateway with the official ``openai`` client.

Users send chat requests for one alias at a steady rate through ``llmops gateway`` (sticky user ids, so routing is
per user; a shared system prompt, so the replicas' prefix cache has something to reuse). Some prompts carry personal
data on purpose, so the safety agents have something to find and redact. Each request names its id
(``x-request-id``), so this run's rows are easy to find in ClickHouse. The grader scores every answer the gateway
returns and publishes one ``Feedback`` per request on ``llm.feedback``, by a fixed, documented rule that prefers
concise answers: 0.95 up to 32 generated tokens, then 0.0125 less per extra token (floor 0.1), zero for an error;
plus small seeded noise.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field

import openai

from schemas.codec import make_event
from schemas.feedback import Feedback
from schemas.topics import FEEDBACK
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings

SOURCE = "llmops.demo"
TENANT = "demo-tenant"
"""The tenant of the demo's API key (the gateway takes the tenant from the key)."""
SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly and politely, in plain words."
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


def grade(completion_tokens: int, failed: bool, rng: random.Random) -> float:
    """The grader's score in [0, 1] (see the module docstring)."""
    if failed:
        return 0.0
    base = max(0.1, 0.95 - max(0, completion_tokens - 32) * 0.0125)
    return min(1.0, max(0.0, base + rng.uniform(-0.05, 0.05)))


@dataclass
class TrafficStats:
    sent: int = 0
    completed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    feedback: int = 0
    first_answer_at: dict[str, float] = field(default_factory=dict)
    """Monotonic time of each deployment's first answer."""

    def total_completed(self) -> int:
        return sum(self.completed.values())


class TrafficDriver:
    """Send requests at ``rate_per_s`` through the gateway and grade the answers, until ``stop()``."""

    def __init__(self, settings: Settings, run_id: str, alias: str, *, base_url: str, api_key: str, rate_per_s: float,
                 users: int = 40, max_in_flight: int = 24, deadline_s: float = 90.0, seed: int = 7) -> None:
        self.settings = settings
        self.run_id = run_id
        self.alias = alias
        self.rate_per_s = rate_per_s
        self.users = users
        self.max_in_flight = max_in_flight
        self.deadline_s = deadline_s
        self.rng = random.Random(seed)
        self.stats = TrafficStats()
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0,
                                         timeout=deadline_s + 30)
        self._stopping = asyncio.Event()
        self._producer = EventProducer(settings)
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def prefix(self) -> str:
        return f"demo-{self.run_id}-"

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Send until stopped (a closed loop: at most ``max_in_flight`` requests wait for their answer)."""
        interval = 1.0 / self.rate_per_s
        next_at = time.monotonic()
        i = 0
        try:
            while not self._stopping.is_set():
                if len(self._in_flight) < self.max_in_flight:
                    task = asyncio.create_task(self._one(f"{self.prefix}{i:06d}"))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
                    self.stats.sent += 1
                    i += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            for task in list(self._in_flight):
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            await self.client.close()

    async def _one(self, request_id: str) -> None:
        user = f"user-{self.rng.randrange(self.users)}"
        question = self.rng.choice(QUESTIONS)
        headers = {"x-request-id": request_id, "x-llmops-application": "demo-chat",
                   "x-llmops-deadline-ms": str(int(self.deadline_s * 1000))}
        try:
            raw = await self.client.chat.completions.with_raw_response.create(
                model=self.alias, user=user, extra_headers=headers,
                messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}],
            )
            answer = raw.parse()
            deployment = raw.headers.get("x-llmops-deployment", "unknown")
            tokens = answer.usage.completion_tokens if answer.usage else 0
            failed = False
        except openai.APIStatusError as exc:
            deployment = exc.response.headers.get("x-llmops-deployment", "error")
            tokens, failed = 0, True
            self.stats.errors[deployment] += 1
        except openai.APIConnectionError:
            self.stats.errors["connection"] += 1
            return  # the gateway never answered: nothing to grade
        self.stats.completed[deployment] += 1
        self.stats.first_answer_at.setdefault(deployment, time.monotonic())
        feedback = Feedback(request_id=request_id, score=grade(tokens, failed, self.rng), source="grader",
                            label="error" if failed else "answered")
        self._producer.send(FEEDBACK.name, make_event(feedback, source=SOURCE, tenant_id=TENANT), key=request_id)
        await asyncio.to_thread(self._producer.flush)
        self.stats.feedback += 1
