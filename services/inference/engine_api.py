"""The engine interface: what a replica needs from an inference backend, whichever one runs it.

A replica renders each request's prompt with the engine's ``tokenizer``, submits an :class:`EngineRequest`
(token ids, :class:`SamplingParams`, priority, deadline) with two callbacks, and gets text deltas
(``on_delta``) and exactly one :class:`EngineResult` (``on_finish``) per request, success or error. Callbacks
run on the engine's own thread. ``abort`` drops requests without callbacks (their partition was revoked);
``stats`` reports load; ``check_health`` raises when the engine can no longer serve, so Ray Serve replaces the
replica.

Two backends implement it: the builtin continuous-batching engine (:mod:`services.inference.engine`, the CPU
default) and vLLM (:mod:`services.inference.vllm_engine`, for GPU fleets, in the separate serving environment).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

log = logging.getLogger(__name__)

UNHEALTHY_AFTER_FAILED_STEPS = 3
"""Consecutive failed engine steps after which an engine reports itself unhealthy (the replica is replaced)."""

FinishReason = Literal["stop", "length", "eos", "error", "deadline"]
ErrorKind = Literal["deadline_exceeded", "prompt_too_long", "invalid_params", "internal"]


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling. ``temperature == 0`` is greedy; ``seed`` makes sampling reproducible."""

    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class EngineRequest:
    """One generation job: already-tokenized prompt plus sampling and scheduling attributes."""

    request_id: str
    prompt_ids: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    priority: int = 0
    """Higher runs first."""
    deadline: float | None = None
    """Wall-clock (``time.time()``) instant after which the request is dropped with an error."""
    arrival: float | None = None
    """``time.monotonic()`` when the request arrived (e.g. was read from Kafka); default: at submit."""


@dataclass
class EngineResult:
    """The outcome of one request, success or error, with its timings."""

    request_id: str
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    token_ids: list[int]
    queue_ms: float
    ttft_ms: float | None
    total_ms: float
    error_kind: ErrorKind | None = None
    error_message: str | None = None
    cached_tokens: int = 0
    """Prompt tokens whose KV cache was reused from an earlier request (prefix caching)."""
    draft_tokens: int = 0
    """Speculative tokens proposed for this request."""
    accepted_tokens: int = 0
    """Speculative tokens the model confirmed (and so generated without a decode step of their own)."""


DeltaCallback = Callable[[str, int, str], None]
"""(request_id, chunk index, text delta)."""
FinishCallback = Callable[[EngineResult], None]


@dataclass
class EngineStats:
    """A snapshot of an engine's load."""

    running: int
    """Sequences being generated."""
    waiting: int
    """Submitted, not yet admitted."""
    kv_used_tokens: int
    """Tokens the KV cache holds or has reserved (running sequences, plus cached prefixes where kept)."""
    kv_capacity_tokens: int
    steps: int
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend-specific counters (prefix-cache hits, speculative acceptance, ...)."""


def call_back(callback: Callable[..., None], *args: Any) -> None:
    """Run a caller's callback on the engine thread; its failure is logged, never allowed to break a step."""
    try:
        callback(*args)
    except Exception:  # the other requests of the step must not fail with it
        log.exception("an engine callback raised")


class EngineUnhealthy(RuntimeError):
    """The engine cannot serve any more (its thread died, or every step fails): the replica must be replaced."""


Item = TypeVar("Item")


class EngineThread(Generic[Item]):
    """The thread plumbing every engine shares; a backend implements ``step`` and the three hooks below.

    Other threads append submissions (``Item``s) and cancellations to ``_inbox`` and ``_cancels`` under ``_lock``;
    ``step`` takes them on the engine thread. That thread runs :meth:`run_step` until :meth:`stop_thread`: a
    failing step fails every request it held (``_fail_held``, each gets its ``on_finish``) and counts towards
    :meth:`check_health` until a step makes progress again (``_progress`` grew); the engine keeps serving.
    """

    name = "engine"
    """How the engine is named in log lines and health errors."""
    thread_name = "inference-engine"

    def __init__(self) -> None:
        self._inbox: list[Item] = []
        self._cancels: list[tuple[set[str], threading.Event]] = []
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._failed_steps = 0
        self._last_error: str | None = None

    # ---- what a backend implements ----

    def step(self) -> bool:
        """One scheduling step on the engine thread; False when there was nothing to do."""
        raise NotImplementedError

    def _progress(self) -> int:
        """A counter that grows when a step did real work on the model (a failure streak ends there)."""
        raise NotImplementedError

    def _fail_held(self, message: str) -> None:
        """Finish every request the failed step held with an ``internal`` error (each exactly once)."""
        raise NotImplementedError

    # ---- shared ----

    def _submit(self, item: Item) -> None:
        with self._wakeup:
            self._inbox.append(item)
            self._wakeup.notify()

    def abort(self, request_ids: set[str], timeout_s: float = 30.0) -> bool:
        """Drop these requests (queued or running) without callbacks; blocks until the engine thread has done so.

        After it returns True, no callback for them runs any more. Without a running engine thread, call ``step``.
        """
        done = threading.Event()
        with self._wakeup:
            self._cancels.append((set(request_ids), done))
            self._wakeup.notify()
        if self._thread is None or threading.current_thread() is self._thread:
            return False
        return done.wait(timeout_s)

    def check_health(self) -> None:
        if self._thread is not None and not self._thread.is_alive() and not self._stopping:
            raise EngineUnhealthy(f"the {self.name} thread died: {self._last_error}")
        if self._failed_steps >= UNHEALTHY_AFTER_FAILED_STEPS:
            raise EngineUnhealthy(f"{self._failed_steps} {self.name} steps failed in a row; last: {self._last_error}")

    def start(self) -> None:
        """Run ``run_step`` on a daemon thread until :meth:`stop_thread`."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            while not self._stopping:
                if not self.run_step():
                    with self._wakeup:
                        if not self._inbox and not self._cancels and not self._stopping:
                            self._wakeup.wait(timeout=0.05)
        except BaseException as exc:
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.exception("the %s thread died", self.name)
            raise

    def run_step(self) -> bool:
        """``step``, except that a failing step fails every request it held and counts towards
        :meth:`check_health` until a step makes progress again; the engine keeps serving. False if idle."""
        progress = self._progress()
        try:
            busy = self.step()
        except Exception as exc:  # fail what the step held, keep serving
            self._failed_steps += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.exception("%s step failed (%d in a row)", self.name, self._failed_steps)
            self._fail_held(f"{self.name} step failed: {self._last_error}")
            return False
        if self._progress() > progress:
            self._failed_steps = 0
        return busy

    def stop_thread(self) -> None:
        """Stop the engine thread (it finishes its current step); what is left is the backend's to abandon."""
        self._stopping = True
        with self._wakeup:
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None


class InferenceEngine(Protocol):
    """What a replica calls. ``submit``, ``abort`` and ``stats`` are thread-safe."""

    @property
    def tokenizer(self) -> Any:
        """A Hugging Face tokenizer (chat template included) that produces the ids ``submit`` expects."""

    @property
    def max_context(self) -> int:
        """Most tokens (prompt + generated) one sequence may hold."""

    def start(self) -> None:
        """Start the engine's thread."""

    def submit(self, req: EngineRequest, on_delta: DeltaCallback | None = None,
               on_finish: FinishCallback | None = None) -> None:
        """Queue a request; ``on_finish`` is called exactly once unless it is aborted first."""

    def abort(self, request_ids: set[str], timeout_s: float = 30.0) -> bool:
        """Drop these requests (queued or running) without callbacks; True once no callback for them can run."""

    def has_work(self) -> bool:
        """Whether any submitted request has not finished yet."""

    def stats(self) -> EngineStats:
        """The current load."""

    def check_health(self) -> None:
        """Raise :class:`EngineUnhealthy` if the engine can no longer serve."""

    def stop(self) -> list[str]:
        """Stop the thread; the ids of unfinished requests (abandoned without callbacks) are returned."""
