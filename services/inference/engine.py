"""The continuous-batching engine: an iteration-level scheduler over one causal LM with a per-sequence KV cache.

Every :meth:`Engine.step` (1) takes newly submitted requests into a waiting queue ordered by priority (higher
first) then arrival, (2) drops requests whose deadline passed (error ``deadline_exceeded``), (3) admits waiting
requests while the batch has room (``max_batch_size``) and the KV token budget allows (each admitted sequence
reserves ``prompt + max_tokens`` tokens, so admitted work never has to be preempted), (4) prefills the newcomers
(together, left-padded) and samples each one's first token, then (5) runs ONE batched decode step for every
running sequence.

The running sequences share a left-padded KV cache (one ``[batch, heads, time, dim]`` tensor pair per layer)
with a 2-D attention mask and per-row position ids, so each row computes what it would compute alone (the
same math; float results can differ in the last bits because matmul shapes differ, which the greedy-equality
test bounds in practice).
A row's cache is spliced in after its prefill and cut out (and the common left padding trimmed) when it finishes.

Callbacks (``on_delta``, ``on_finish``) run on the engine's thread; :mod:`services.inference.replica` hands
them to its asyncio loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers.cache_utils import DynamicCache

from services.inference.model_loader import LoadedModel

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


DeltaCallback = Callable[[str, int, str], None]
"""(request_id, chunk index, text delta)."""
FinishCallback = Callable[[EngineResult], None]


@dataclass(frozen=True)
class EngineLimits:
    max_batch_size: int = 8
    token_budget: int = 4096
    prefill_tokens_per_step: int = 512


@dataclass
class _Seq:
    req: EngineRequest
    on_delta: DeltaCallback | None
    on_finish: FinishCallback | None
    arrival: float
    reserve: int
    generator: torch.Generator | None = None
    admitted_at: float | None = None
    first_token_at: float | None = None
    generated: list[int] = field(default_factory=list)
    pending: int | None = None
    """The last sampled token, not yet in the KV cache."""
    cache_len: int = 0
    """Real (non-padding) tokens of this sequence in the KV cache."""
    emitted: str = ""
    chunks: int = 0


class Engine:
    """Continuous batching over one loaded model. ``submit`` is thread-safe; ``step`` runs on one thread."""

    def __init__(self, loaded: LoadedModel, limits: EngineLimits | None = None) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.limits = limits or EngineLimits()
        self._inbox: list[_Seq] = []
        self._cancels: list[tuple[set[str], threading.Event]] = []
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._waiting: list[tuple[int, int, _Seq]] = []
        self._order = itertools.count()
        self._rows: list[_Seq] = []
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._mask: torch.Tensor | None = None
        self._reserved = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.steps = 0

    # ---- submission (any thread) -------------------------------------------------------------------------

    def submit(
        self,
        req: EngineRequest,
        on_delta: DeltaCallback | None = None,
        on_finish: FinishCallback | None = None,
    ) -> None:
        arrival = req.arrival if req.arrival is not None else time.monotonic()
        reserve = len(req.prompt_ids) + req.sampling.max_tokens
        seq = _Seq(req=req, on_delta=on_delta, on_finish=on_finish, arrival=arrival, reserve=reserve)
        with self._wakeup:
            self._inbox.append(seq)
            self._wakeup.notify()

    def cancel(self, request_ids: set[str], timeout_s: float = 30.0) -> bool:
        """Drop these requests (queued or running) without callbacks; blocks until the engine thread has done so.

        After it returns, no callback for them runs any more. Without a running engine thread, call ``step``.
        """
        done = threading.Event()
        with self._wakeup:
            self._cancels.append((set(request_ids), done))
            self._wakeup.notify()
        if self._thread is None or threading.current_thread() is self._thread:
            return False
        return done.wait(timeout_s)

    @property
    def num_running(self) -> int:
        return len(self._rows)

    def num_unfinished(self) -> int:
        """Submitted requests that have not finished yet (inbox + waiting + running)."""
        with self._lock:
            return len(self._inbox) + len(self._waiting) + len(self._rows)

    def has_work(self) -> bool:
        return self.num_unfinished() > 0

    # ---- the scheduler ------------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> bool:
        """One iteration: intake, deadline drops, admission + prefill, one batched decode. False if idle."""
        with self._lock:
            inbox, self._inbox = self._inbox, []
            cancels, self._cancels = self._cancels, []
        for seq in inbox:
            self._intake(seq)
        for ids, done in cancels:
            self._cancel(ids)
            done.set()
        now_wall = time.time()
        self._drop_expired(now_wall)
        newcomers = self._admit()
        if newcomers:
            self._prefill(newcomers)
        if not self._rows:
            return bool(inbox or newcomers)
        self._decode()
        self.steps += 1
        return True

    def _intake(self, seq: _Seq) -> None:
        n = len(seq.req.prompt_ids)
        limit = min(self.loaded.max_context, self.limits.token_budget)
        if n == 0:
            self._fail(seq, "invalid_params", "the prompt is empty")
            return
        if n >= limit:
            self._fail(
                seq, "prompt_too_long",
                f"the prompt has {n} tokens; this deployment accepts at most {limit - 1} "
                f"(context {self.loaded.max_context}, token budget {self.limits.token_budget})",
            )
            return
        seq.reserve = min(seq.reserve, self.loaded.max_context)
        heapq.heappush(self._waiting, (-seq.req.priority, next(self._order), seq))

    def _cancel(self, ids: set[str]) -> None:
        if any(item[2].req.request_id in ids for item in self._waiting):
            self._waiting = [item for item in self._waiting if item[2].req.request_id not in ids]
            heapq.heapify(self._waiting)
        gone = [i for i, s in enumerate(self._rows) if s.req.request_id in ids]
        if gone:
            self._remove_rows(gone)

    def _drop_expired(self, now_wall: float) -> None:
        if any(s.req.deadline is not None and now_wall >= s.req.deadline for _, _, s in self._waiting):
            keep = []
            for item in self._waiting:
                s = item[2]
                if s.req.deadline is not None and now_wall >= s.req.deadline:
                    self._fail(s, "deadline_exceeded", "the deadline passed before generation started",
                               reason="deadline")
                else:
                    keep.append(item)
            heapq.heapify(keep)
            self._waiting = keep
        expired = [i for i, s in enumerate(self._rows) if s.req.deadline is not None and now_wall >= s.req.deadline]
        if expired:
            for i in expired:
                s = self._rows[i]
                self._finish(s, "deadline", error=("deadline_exceeded",
                             f"the deadline passed after {len(s.generated)} generated tokens"))
            self._remove_rows(expired)

    def _admit(self) -> list[_Seq]:
        admitted: list[_Seq] = []
        prefill = 0
        while self._waiting:
            seq = self._waiting[0][2]
            n = len(seq.req.prompt_ids)
            if len(self._rows) + len(admitted) >= self.limits.max_batch_size:
                break
            idle = not self._rows and not admitted
            if not idle and (
                self._reserved + seq.reserve > self.limits.token_budget
                or prefill + n > self.limits.prefill_tokens_per_step
            ):
                break  # strict priority order: never skip the head for a smaller request behind it
            heapq.heappop(self._waiting)
            seq.admitted_at = time.monotonic()
            self._reserved += seq.reserve
            prefill += n
            admitted.append(seq)
        return admitted

    def _prefill(self, seqs: list[_Seq]) -> None:
        """Prefill the newcomers together (left-padded), sample each one's first token, splice in the survivors."""
        lens = [len(s.req.prompt_ids) for s in seqs]
        width = max(lens)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - lens[i]:] = torch.tensor(s.req.prompt_ids, dtype=torch.long)
            mask[i, width - lens[i]:] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        for seq in seqs:
            sp = seq.req.sampling
            if sp.temperature > 0:
                seq.generator = torch.Generator(device=self.device)
                if sp.seed is not None:
                    seq.generator.manual_seed(sp.seed)
                else:
                    seq.generator.seed()
        tokens = self._sample(out.logits[:, -1, :], seqs)
        now = time.monotonic()
        keep: list[int] = []
        for i, (seq, token) in enumerate(zip(seqs, tokens, strict=True)):
            seq.first_token_at = now
            seq.cache_len = lens[i]
            if self._accept_token(seq, token):
                self._reserved -= seq.reserve
            else:
                keep.append(i)
        if not keep:
            return
        lead = min(width - lens[i] for i in keep)
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        kv = [(layer.keys.index_select(0, idx)[:, :, lead:, :], layer.values.index_select(0, idx)[:, :, lead:, :])
              for layer in cache.layers]
        self._splice_in([seqs[i] for i in keep], kv, mask.index_select(0, idx)[:, lead:])

    def _splice_in(self, seqs: list[_Seq], kv: list[tuple[torch.Tensor, torch.Tensor]], mask: torch.Tensor) -> None:
        if not self._rows:
            self._kv, self._mask = kv, mask
        else:
            assert self._mask is not None
            width = max(self._mask.shape[1], mask.shape[1])
            merged = []
            for (k, v), (nk, nv) in zip(self._kv, kv, strict=True):
                merged.append((torch.cat([_lpad(k, width), _lpad(nk, width)], 0),
                               torch.cat([_lpad(v, width), _lpad(nv, width)], 0)))
            self._kv = merged
            self._mask = torch.cat([_lpad_mask(self._mask, width), _lpad_mask(mask, width)], 0)
        self._rows.extend(seqs)

    def _remove_rows(self, indices: list[int]) -> None:
        drop = set(indices)
        keep = [i for i in range(len(self._rows)) if i not in drop]
        for i in indices:
            self._reserved -= self._rows[i].reserve
        self._rows = [self._rows[i] for i in keep]
        if not self._rows:
            self._kv, self._mask = [], None
            return
        assert self._mask is not None
        t = self._mask.shape[1]
        lead = min(t - s.cache_len for s in self._rows)
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        self._kv = [(k.index_select(0, idx)[:, :, lead:, :], v.index_select(0, idx)[:, :, lead:, :])
                    for k, v in self._kv]
        self._mask = self._mask.index_select(0, idx)[:, lead:]

    def _decode(self) -> None:
        assert self._mask is not None
        rows = self._rows
        ids = torch.tensor([[s.pending] for s in rows], dtype=torch.long, device=self.device)
        pos = torch.tensor([[s.cache_len] for s in rows], dtype=torch.long, device=self.device)
        mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=torch.long, device=self.device)], 1)
        cache = _cache_of(self._kv)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                         use_cache=True)
        self._kv = [(layer.keys, layer.values) for layer in cache.layers]
        self._mask = mask
        tokens = self._sample(out.logits[:, -1, :], rows)
        finished = []
        for i, (seq, tok) in enumerate(zip(rows, tokens, strict=True)):
            seq.cache_len += 1
            if self._accept_token(seq, tok):
                finished.append(i)
        if finished:
            self._remove_rows(finished)

    def _sample(self, logits: torch.Tensor, seqs: list[_Seq]) -> list[int]:
        logits = logits.float()
        greedy = logits.argmax(-1).tolist()
        out: list[int] = []
        for i, seq in enumerate(seqs):
            sp = seq.req.sampling
            if sp.temperature <= 0:
                out.append(int(greedy[i]))
                continue
            probs = torch.softmax(logits[i] / sp.temperature, dim=-1)
            if sp.top_p < 1.0:
                sorted_p, order = probs.sort(descending=True)
                cum = sorted_p.cumsum(-1)
                cut = (cum - sorted_p) >= sp.top_p  # keep the smallest prefix whose mass reaches top_p
                sorted_p[cut] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_p)
            out.append(int(torch.multinomial(probs, 1, generator=seq.generator).item()))
        return out

    # ---- per-token bookkeeping, streaming and finishing ------------------------------------------------

    def _accept_token(self, seq: _Seq, token: int) -> bool:
        """Record a sampled token, stream any safe text; True if the sequence finished."""
        seq.generated.append(token)
        sp = seq.req.sampling
        if token in self.loaded.eos_token_ids:
            self._finish(seq, "eos", drop_last=True)
            return True
        text = self.tokenizer.decode(seq.generated, skip_special_tokens=True)
        if sp.stop:
            hits = [i for i in (text.find(s) for s in sp.stop) if i >= 0]
            if hits:
                self._finish(seq, "stop", text=text[: min(hits)])
                return True
        if len(seq.generated) >= sp.max_tokens or seq.cache_len + 1 >= self.loaded.max_context:
            self._finish(seq, "length", text=text)
            return True
        seq.pending = token
        safe = len(text)
        if text.endswith("\ufffd"):
            safe -= 1  # an incomplete UTF-8 sequence; wait for the next token
        for s in sp.stop:  # hold back a suffix that could become a stop string
            for k in range(min(len(s) - 1, safe), 0, -1):
                if text[:safe].endswith(s[:k]):
                    safe -= k
                    break
        self._emit(seq, text[:safe])
        return False

    def _emit(self, seq: _Seq, upto: str) -> None:
        if len(upto) > len(seq.emitted) and upto.startswith(seq.emitted):
            delta = upto[len(seq.emitted):]
            seq.emitted = upto
            if seq.on_delta is not None:
                seq.on_delta(seq.req.request_id, seq.chunks, delta)
            seq.chunks += 1

    def _finish(
        self,
        seq: _Seq,
        reason: FinishReason,
        *,
        text: str | None = None,
        drop_last: bool = False,
        error: tuple[ErrorKind, str] | None = None,
    ) -> None:
        if text is None:
            ids = seq.generated[:-1] if drop_last else seq.generated
            text = self.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""
        if text.startswith(seq.emitted):
            self._emit(seq, text)
        else:  # a tokenizer whose decode is not prefix-stable: the streamed text is what the client saw
            text = seq.emitted
        now = time.monotonic()
        admitted = seq.admitted_at if seq.admitted_at is not None else now
        result = EngineResult(
            request_id=seq.req.request_id,
            text=text,
            finish_reason=reason,
            prompt_tokens=len(seq.req.prompt_ids),
            completion_tokens=len(seq.generated),
            token_ids=list(seq.generated),
            queue_ms=(admitted - seq.arrival) * 1000.0,
            ttft_ms=None if seq.first_token_at is None else (seq.first_token_at - seq.arrival) * 1000.0,
            total_ms=(now - seq.arrival) * 1000.0,
            error_kind=error[0] if error else None,
            error_message=error[1] if error else None,
        )
        if seq.on_finish is not None:
            seq.on_finish(result)

    def _fail(self, seq: _Seq, kind: ErrorKind, message: str, reason: FinishReason = "error") -> None:
        self._finish(seq, reason, text="", error=(kind, message))

    # ---- the engine thread ----------------------------------------------------------------------------

    def start(self) -> None:
        """Run ``step`` on a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="inference-engine", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping:
            try:
                busy = self.step()
            except Exception as exc:  # noqa: BLE001 - fail every running request, keep serving
                self._fail_all(f"engine step failed: {type(exc).__name__}: {exc}")
                busy = False
            if not busy:
                with self._wakeup:
                    if not self._inbox and not self._cancels and not self._stopping:
                        self._wakeup.wait(timeout=0.05)

    def _fail_all(self, message: str) -> None:
        rows, self._rows = self._rows, []
        self._kv, self._mask, self._reserved = [], None, 0
        for seq in rows:
            self._finish(seq, "error", text=seq.emitted, error=("internal", message))

    def stop(self) -> list[str]:
        """Stop the thread; unfinished requests are abandoned (their ids returned) without callbacks."""
        self._stopping = True
        with self._wakeup:
            self._wakeup.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with self._lock:
            abandoned = [s.req.request_id for s in self._inbox]
            self._inbox = []
        abandoned += [item[2].req.request_id for item in self._waiting] + [s.req.request_id for s in self._rows]
        self._waiting, self._rows, self._kv, self._mask, self._reserved = [], [], [], None, 0
        return abandoned


def _cache_of(kv: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    """A DynamicCache holding these tensors as they are (no copy; the forward appends one step to each)."""
    cache = DynamicCache(ddp_cache_data=[(None, None)] * len(kv))
    for layer, (k, v) in zip(cache.layers, kv, strict=True):
        layer.lazy_initialization(k, v)
        layer.keys, layer.values = k, v
    return cache


def _lpad(x: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad a ``[b, h, t, d]`` cache tensor with zeros along time to ``width``."""
    t = x.shape[-2]
    if t == width:
        return x
    pad = torch.zeros((*x.shape[:-2], width - t, x.shape[-1]), dtype=x.dtype, device=x.device)
    return torch.cat([pad, x], dim=-2)


def _lpad_mask(m: torch.Tensor, width: int) -> torch.Tensor:
    t = m.shape[1]
    if t == width:
        return m
    return torch.cat([torch.zeros((m.shape[0], width - t), dtype=m.dtype, device=m.device), m], dim=1)
