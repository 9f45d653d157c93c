"""The producer SDK: ask a model alias for a completion over Kafka and wait for the answer, or stream it.

```python
async with Client(settings, tenant="acme", application="support") as client:
    done = await client.complete("chat", messages=[Message(role="user", content="Hi")])
    print(done.text, done.deployment_id)
    async with client.stream("chat", messages=[...]) as stream:
        async for piece in stream:
            print(piece.text, end="")
    print(stream.completion.finish_reason)
```

Each request is published to ``llm.requests`` with ``reply_to`` naming this client's reply topic, so the
client reads only its own answers (:mod:`services.client.replies`). Deadlines travel on the request
(replicas drop expired work) and bound the wait. An attempt that gets no answer within
``attempt_timeout_s`` is published again with the SAME request_id (downstream tables dedup on it, so a
retry is idempotent); an attempt that failed with a server-side error (``internal``, ``overloaded``) or
timed out is retried once on the alias's fallback deployment when ``fallbacks`` names one, and the retry
carries a :class:`FallbackRecord` that the completion repeats. A streamed request falls back only before
its first chunk reached the caller.

Results are the event contracts themselves (:class:`Completion`, :class:`CompletionChunk`); a failed
request raises :class:`RequestFailed` (with the error completion) or :class:`DeadlineExceeded`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, ConfigDict, Field

from schemas.codec import encode, make_event
from schemas.completions import Completion, CompletionChunk
from schemas.envelope import utc_now
from schemas.requests import FallbackRecord, GenerationParams, InferenceRequest, Message, PromptRef
from schemas.topics import COMPLETIONS, REQUESTS
from services.client.replies import Reply, ReplyListener
from services.core.kafka.config import aiokafka_producer_kwargs
from services.core.settings import Settings

log = logging.getLogger(__name__)

FALLBACK_ERRORS = frozenset({"internal", "overloaded"})
"""Error kinds that are the deployment's fault (worth retrying elsewhere); the others are the request's."""


class ClientConfig(BaseModel):
    """How a client publishes, waits and retries."""

    model_config = ConfigDict(extra="forbid")

    instance_id: str | None = Field(
        default=None, description="Names the reply topic llm.replies.<instance_id>; unset: an ephemeral topic "
        "(client-<random>) deleted on close. A long-running producer should set a stable id.",
    )
    source: str = Field(default="llmops.client", description="The envelope's source.")
    requests_topic: str = REQUESTS.name
    completions_topic: str = COMPLETIONS.name
    attempt_timeout_s: float = Field(default=60.0, gt=0, description="How long one attempt waits for its answer.")
    max_attempts: int = Field(default=2, ge=1, le=10, description="Attempts per request (same request_id), fallback included.")
    default_deadline_s: float | None = Field(default=None, gt=0, description="Deadline of requests that set none.")
    fallbacks: dict[str, str] = Field(default_factory=dict, description="alias -> fallback deployment.")
    reply_poll_ms: int = Field(default=20, ge=1, le=5000, description="Longest wait of one fetch on the reply topic.")
    linger_ms: int = Field(default=1, ge=0, le=1000, description="Producer batching delay (adds to latency).")


class RequestFailed(RuntimeError):
    """The request ended with an error completion (``completion.error`` says why)."""

    def __init__(self, completion: Completion) -> None:
        error = completion.error
        super().__init__(f"{error.kind}: {error.message}" if error else f"finished with {completion.finish_reason}")
        self.completion = completion


class DeadlineExceeded(TimeoutError):
    """No answer before the request's deadline (or after every attempt timed out)."""

    def __init__(self, request_id: str, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


def _retryable(completion: Completion) -> bool:
    return completion.error is not None and completion.error.kind in FALLBACK_ERRORS


class Client:
    """An async request/reply client over Kafka. Use as ``async with Client(...)`` or call start/close."""

    def __init__(
        self, settings: Settings, *, tenant: str, application: str = "default", config: ClientConfig | None = None,
    ) -> None:
        self.settings = settings
        self.tenant = tenant
        self.application = application
        self.config = config or ClientConfig()
        self._ephemeral = self.config.instance_id is None
        self.instance_id = self.config.instance_id or f"client-{uuid.uuid4().hex[:12]}"
        self.replies = ReplyListener(settings, self.instance_id, poll_ms=self.config.reply_poll_ms)
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(**aiokafka_producer_kwargs(self.settings, linger_ms=self.config.linger_ms))
        await self._producer.start()
        await self.replies.start()

    async def close(self) -> None:
        await self.replies.stop(delete_topic=self._ephemeral)
        if self._producer is not None:
            await self._producer.stop()

    # ---- building and publishing ----------------------------------------------------------------------------

    def request(
        self, model: str, *, messages: list[Message] | None = None, prompt: PromptRef | None = None,
        params: GenerationParams | None = None, request_id: str | None = None, deadline_s: float | None = None,
        priority: int = 0, user_id: str | None = None, session_id: str | None = None, deployment_id: str | None = None,
        tenant: str | None = None, application: str | None = None,
    ) -> InferenceRequest:
        """The InferenceRequest these arguments describe, with this client's reply topic."""
        deadline_s = deadline_s if deadline_s is not None else self.config.default_deadline_s
        return InferenceRequest(
            request_id=request_id or uuid.uuid4().hex, tenant=tenant or self.tenant,
            application=application or self.application, model_alias=model, deployment_id=deployment_id,
            messages=messages, prompt=prompt, params=params or GenerationParams(), priority=priority,
            deadline=utc_now() + timedelta(seconds=deadline_s) if deadline_s else None,
            user_id=user_id, session_id=session_id, reply_to=self.replies.topic,
        )

    async def publish(self, topic: str, payload: BaseModel, *, key: str, tenant: str, trace_id: str | None = None) -> None:
        """Publish one event and wait for the broker's acknowledgement."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("client not started: use `async with Client(...)` or `await client.start()`")
        value, headers = encode(make_event(payload, source=self.config.source, tenant_id=tenant, trace_id=trace_id))
        await (await producer.send(topic, value, key=key.encode(), headers=headers))

    async def _send(self, request: InferenceRequest, trace_id: str | None) -> None:
        await self.publish(self.config.requests_topic, request, key=request.request_id, tenant=request.tenant,
                           trace_id=trace_id)

    # ---- complete ---------------------------------------------------------------------------------------------

    async def complete(self, model: str, *, trace_id: str | None = None, **kwargs: Any) -> Completion:
        """Send a request (keyword arguments as :meth:`request`) and return its successful completion.

        The request asks for no streamed chunks (``params.stream`` false): only the completion travels back.
        """
        request = self.request(model, **kwargs)
        request = request.model_copy(update={"params": request.params.model_copy(update={"stream": False})})
        return await self.complete_request(request, trace_id=trace_id)

    async def complete_request(self, request: InferenceRequest, *, trace_id: str | None = None) -> Completion:
        """Send a built request and wait for its completion; RequestFailed / DeadlineExceeded otherwise."""
        async with self.stream_request(request, trace_id=trace_id) as stream:
            async for _ in stream:
                pass
        assert stream.completion is not None
        return stream.completion

    # ---- stream -------------------------------------------------------------------------------------------------

    def stream(self, model: str, *, trace_id: str | None = None, **kwargs: Any) -> Stream:
        """A :class:`Stream` of the request's chunks (keyword arguments as :meth:`request`)."""
        return self.stream_request(self.request(model, **kwargs), trace_id=trace_id)

    def stream_request(self, request: InferenceRequest, *, trace_id: str | None = None) -> Stream:
        return Stream(self, request.model_copy(update={"reply_to": self.replies.topic}), trace_id)


class Stream:
    """Chunks of one request as they arrive (duplicates and restarts removed), then ``completion``.

    ``async with`` it and iterate; iteration ends after the final completion arrived (``completion``), or raises
    RequestFailed / DeadlineExceeded. ``first_chunk_at`` (monotonic) is when the first chunk arrived.
    """

    def __init__(self, client: Client, request: InferenceRequest, trace_id: str | None) -> None:
        self.client = client
        self.request = request
        self.trace_id = trace_id
        self.completion: Completion | None = None
        self.first_chunk_at: float | None = None
        self._queue: asyncio.Queue[Reply] | None = None
        self._streamed = ""
        self._next_index = 0

    async def __aenter__(self) -> Stream:
        self._queue = self.client.replies.register(self.request.request_id)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.client.replies.unregister(self.request.request_id)

    def __aiter__(self) -> AsyncIterator[CompletionChunk]:
        return self._run()

    def _deadline(self) -> float | None:
        if self.request.deadline is None:
            return None
        return time.monotonic() + (self.request.deadline - utc_now()).total_seconds()

    async def _run(self) -> AsyncIterator[CompletionChunk]:
        queue = self._queue
        if queue is None:
            raise RuntimeError("use `async with client.stream(...) as stream:` before iterating")
        config = self.client.config
        request = self.request
        deadline = self._deadline()
        fallback = config.fallbacks.get(request.model_alias)
        for attempt in range(config.max_attempts):
            await self.client._send(request, self.trace_id)
            attempt_end = time.monotonic() + config.attempt_timeout_s
            if deadline is not None:
                attempt_end = min(attempt_end, deadline + 1.0)  # a grace second for the replica's deadline error
            outcome: Completion | None = None
            while outcome is None:
                remaining = attempt_end - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    reply = await asyncio.wait_for(queue.get(), timeout=remaining)
                except TimeoutError:
                    break
                if isinstance(reply, CompletionChunk):
                    piece = self._accept_chunk(reply)
                    if piece is not None:
                        yield piece
                    continue
                if reply.error is not None and request.fallback is not None and reply.deployment_id != request.deployment_id:
                    continue  # the failed first attempt answering late, after the fallback was sent
                outcome = reply
            last = attempt == config.max_attempts - 1
            if outcome is not None and outcome.error is None:
                rest = self._rest_of(outcome)
                if rest is not None:
                    yield rest
                self.completion = outcome
                return
            if outcome is not None and outcome.finish_reason == "deadline":
                raise RequestFailed(outcome)
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded(request.request_id, f"request {request.request_id} got no answer before its deadline")
            can_fall_back = fallback is not None and request.fallback is None and self._next_index == 0 and (
                outcome is None or _retryable(outcome))
            if not last and can_fall_back:
                assert fallback is not None
                record = FallbackRecord(
                    from_deployment=(outcome.deployment_id if outcome else request.deployment_id) or request.model_alias,
                    reason="timeout" if outcome is None else "error",
                    error_kind=outcome.error.kind if outcome and outcome.error else None,
                    message=outcome.error.message[:2000] if outcome and outcome.error else "",
                )
                log.info("request %s: falling back to %s (%s)", request.request_id, fallback, record.reason)
                request = request.model_copy(update={"deployment_id": fallback, "fallback": record})
                continue
            if outcome is not None:
                raise RequestFailed(outcome)
            if last or self._next_index > 0:
                raise DeadlineExceeded(
                    request.request_id, f"request {request.request_id} got no answer after {attempt + 1} attempt(s) "
                    f"of {config.attempt_timeout_s:g}s",
                )
            log.info("request %s: no answer within %.1fs, publishing it again", request.request_id, config.attempt_timeout_s)
        raise AssertionError("unreachable")  # pragma: no cover

    def _accept_chunk(self, chunk: CompletionChunk) -> CompletionChunk | None:
        if chunk.index != self._next_index:
            return None  # a duplicate (redelivery, restarted stream) or one after a gap the completion fills
        if self.first_chunk_at is None:
            self.first_chunk_at = time.monotonic()
        self._next_index += 1
        self._streamed += chunk.text
        return chunk

    def _rest_of(self, completion: Completion) -> CompletionChunk | None:
        """The text of the completion the chunks did not deliver (none were streamed, or some were lost)."""
        if completion.text.startswith(self._streamed) and len(completion.text) > len(self._streamed):
            piece = CompletionChunk(request_id=completion.request_id, deployment_id=completion.deployment_id,
                                    index=self._next_index, text=completion.text[len(self._streamed):])
            return self._accept_chunk(piece)
        return None
