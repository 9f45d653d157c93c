"""The builtin continuous-batching engine: an iteration-level scheduler over one causal LM with a per-sequence KV
cache; the CPU default behind :class:`services.inference.engine_api.InferenceEngine`.

Every :meth:`Engine.step` (1) takes newly submitted requests into a waiting queue ordered by priority (higher
first) then arrival, (2) drops requests whose deadline passed (error ``deadline_exceeded``), (3) admits waiting
requests while the batch has room (``max_batch_size``) and the KV token budget allows (each admitted sequence
reserves ``prompt + max_tokens`` tokens, so admitted work never has to be preempted; cached prefixes count in the
budget too and are evicted, least recently used first, when admission needs room), (4) prefills the newcomers
(together, left-padded; with prefix caching only the part of each prompt after its longest cached prefix, see
:mod:`services.inference.prefix_cache`) and samples each one's first token, then (5) runs ONE batched forward for
every running sequence: a plain decode step, or with speculative decoding the verification of each row's
prompt-lookup drafts (:mod:`services.inference.speculation`), which commits 1 to ``k + 1`` tokens per row.

The running sequences share a left-padded KV cache (one ``[batch, heads, time, dim]`` tensor pair per layer)
with a 2-D attention mask and per-row position ids (real-token counts), so each row computes what it would
compute alone (the same math; float results can differ in the last bits because matmul shapes differ, which
the greedy-equality tests bound in practice). Rejected draft positions stay in the cache as masked holes until
:func:`_right_align` packs the rows again. A row's cache is spliced in after its prefill and cut out (and the
common left padding trimmed) when it finishes.

Liveness: a step that raises fails every request it holds (running and being admitted) with an ``internal``
error, so each submitted request gets exactly one ``on_finish``; callbacks that raise are logged, never allowed
to break a step; :meth:`Engine.check_health` reports a dead engine thread or repeated step failures.

Callbacks (``on_delta``, ``on_finish``) run on the engine's thread; the replica hands them to its asyncio loop
with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from services.inference.engine_api import (
    DeltaCallback,
    EngineRequest,
    EngineResult,
    EngineStats,
    EngineThread,
    ErrorKind,
    FinishCallback,
    FinishReason,
    SamplingParams,
    call_back,
)
from services.inference.model_loader import LoadedModel
from services.inference.prefix_cache import PrefixCache
from services.inference.speculation import PromptLookup, verify

__all__ = ["Engine", "EngineLimits", "EngineRequest", "EngineResult", "SamplingParams"]

log = logging.getLogger(__name__)

HOLE_SLACK = 16
"""Masked positions per row tolerated in the batch cache before the rows are packed again."""

KVList = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer, the keys and values of the batch cache ``[batch, heads, time, dim]``."""


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
    finished: bool = False
    cached_tokens: int = 0
    lookup: PromptLookup | None = None
    drafted: int = 0
    accepted: int = 0


class Engine(EngineThread[_Seq]):
    """Continuous batching over one loaded model. ``submit``/``abort``/``stats`` are thread-safe; ``step`` runs on
    one thread (the engine's own after :meth:`start`, or the caller's in tests and benchmarks).

    ``speculative_tokens > 0`` turns on prompt-lookup speculative decoding with up to that many draft tokens per
    row and step; ``prefix_caching`` reuses the KV cache of prompt prefixes in blocks of ``prefix_block_tokens``.
    """

    hole_slack = HOLE_SLACK

    def __init__(
        self,
        loaded: LoadedModel,
        limits: EngineLimits | None = None,
        *,
        speculative_tokens: int = 0,
        prefix_caching: bool = False,
        prefix_block_tokens: int = 16,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        self.limits = limits or EngineLimits()
        self.speculative_tokens = speculative_tokens
        self.prefix_cache = PrefixCache(prefix_block_tokens) if prefix_caching else None
        super().__init__()
        self._waiting: list[tuple[int, int, _Seq]] = []
        self._order = itertools.count()
        self._rows: list[_Seq] = []
        self._admitting: list[_Seq] = []
        self._kv: KVList = []
        self._mask: torch.Tensor | None = None
        self._reserved = 0
        self.steps = 0
        self.forwards = 0
        """Successful model forwards (prefills and decode/verify steps)."""
        self.drafted = 0
        self.accepted = 0
        self.compactions = 0

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def max_context(self) -> int:
        return self.loaded.max_context

    # ---- submission (any thread) -------------------------------------------------------------------------

    def submit(
        self,
        req: EngineRequest,
        on_delta: DeltaCallback | None = None,
        on_finish: FinishCallback | None = None,
    ) -> None:
        arrival = req.arrival if req.arrival is not None else time.monotonic()
        reserve = len(req.prompt_ids) + req.sampling.max_tokens
        self._submit(_Seq(req=req, on_delta=on_delta, on_finish=on_finish, arrival=arrival, reserve=reserve))

    @property
    def num_running(self) -> int:
        return len(self._rows)

    def num_unfinished(self) -> int:
        """Submitted requests that have not finished yet (inbox + waiting + running)."""
        with self._lock:
            return len(self._inbox) + len(self._waiting) + len(self._rows) + len(self._admitting)

    def has_work(self) -> bool:
        return self.num_unfinished() > 0

    def stats(self) -> EngineStats:
        with self._lock:
            waiting = len(self._inbox) + len(self._waiting)
        extra: dict[str, Any] = {"failed_steps": self._failed_steps}
        if self.speculative_tokens:
            extra.update(drafted=self.drafted, accepted=self.accepted, compactions=self.compactions,
                         acceptance=self.accepted / self.drafted if self.drafted else None)
        if self.prefix_cache is not None:
            pc = self.prefix_cache
            extra.update(prefix_lookups=pc.lookups, prefix_hits=pc.hits, prefix_hit_tokens=pc.hit_tokens,
                         prefix_cached_tokens=pc.tokens, prefix_evicted_blocks=pc.evicted_blocks)
        return EngineStats(
            running=len(self._rows), waiting=waiting, kv_used_tokens=self._reserved + self._cached_tokens(),
            kv_capacity_tokens=self.limits.token_budget, steps=self.steps, extra=extra,
        )


    # ---- the scheduler ------------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> bool:
        """One iteration: intake, deadline drops, admission + prefill, one batched forward. False if idle."""
        with self._lock:
            inbox, self._inbox = self._inbox, []
            cancels, self._cancels = self._cancels, []
        for seq in inbox:
            self._intake(seq)
        for ids, done in cancels:
            self._cancel(ids)
            done.set()
        self._drop_expired(time.time())
        newcomers = self._admit()
        if newcomers:
            self._prefill(newcomers)
            self._admitting = []
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

    def _cached_tokens(self) -> int:
        return self.prefix_cache.tokens if self.prefix_cache is not None else 0

    def _admit(self) -> list[_Seq]:
        admitted: list[_Seq] = []
        prefill = 0
        while self._waiting:
            seq = self._waiting[0][2]
            n = len(seq.req.prompt_ids)
            if len(self._rows) + len(admitted) >= self.limits.max_batch_size:
                break
            idle = not self._rows and not admitted
            over = self._reserved + self._cached_tokens() + seq.reserve - self.limits.token_budget
            if over > 0 and self.prefix_cache is not None:
                over -= self.prefix_cache.evict(over)
            if not idle and (over > 0 or prefill + n > self.limits.prefill_tokens_per_step):
                break  # strict priority order: never skip the head for a smaller request behind it
            heapq.heappop(self._waiting)
            seq.admitted_at = time.monotonic()
            self._reserved += seq.reserve
            prefill += n
            admitted.append(seq)
        self._admitting = admitted
        return admitted

    def _prefill(self, seqs: list[_Seq]) -> None:
        """Prefill the newcomers together (left-padded; after their cached prefixes, if any), sample each one's
        first token, splice in the survivors."""
        pc = self.prefix_cache
        matches = [pc.match(s.req.prompt_ids) for s in seqs] if pc is not None else []
        cached = [m.tokens for m in matches] if matches else [0] * len(seqs)
        lens = [len(s.req.prompt_ids) - c for s, c in zip(seqs, cached, strict=True)]
        width, pwidth = max(lens), max(cached)
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), pwidth + width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - lens[i]:] = torch.tensor(s.req.prompt_ids[cached[i]:], dtype=torch.long)
            mask[i, pwidth - cached[i]:pwidth] = 1
            mask[i, pwidth + width - lens[i]:] = 1
            s.cached_tokens = cached[i]
        ids, mask = ids.to(self.device), mask.to(self.device)
        offsets = torch.tensor(cached, dtype=torch.long, device=self.device).unsqueeze(1)
        pos = (mask[:, pwidth:].cumsum(-1) - 1).clamp(min=0) + offsets
        cache = DynamicCache()
        if pwidth and pc is not None:
            prefixes = [pc.gather(m) if m.tokens else None for m in matches]
            cache = _cache_of(_stack_prefixes(prefixes, pwidth, self._kv_shape_like(prefixes)))
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        self.forwards += 1
        kv = _kv_of(cache)
        if pwidth:
            kv, mask = _right_align(kv, mask)  # close the gap between each cached prefix and its new part
        full = [len(s.req.prompt_ids) for s in seqs]
        if pc is not None:
            t = mask.shape[1]
            for i, s in enumerate(seqs):
                pc.insert(s.req.prompt_ids, [(k[i, :, t - full[i]:], v[i, :, t - full[i]:]) for k, v in kv])
        for seq in seqs:
            sp = seq.req.sampling
            if sp.temperature > 0:
                seq.generator = torch.Generator(device=self.device)
                if sp.seed is not None:
                    seq.generator.manual_seed(sp.seed)
                else:
                    seq.generator.seed()
            if self.speculative_tokens:
                seq.lookup = PromptLookup(seq.req.prompt_ids)
        tokens = self._sample(out.logits[:, -1, :], seqs)
        now = time.monotonic()
        keep: list[int] = []
        for i, (seq, token) in enumerate(zip(seqs, tokens, strict=True)):
            seq.first_token_at = now
            seq.cache_len = full[i]
            if self._accept_token(seq, token):
                self._reserved -= seq.reserve
            else:
                keep.append(i)
        self._fit_prefix_cache()
        if not keep:
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        kv = [(k.index_select(0, idx), v.index_select(0, idx)) for k, v in kv]
        sub = mask.index_select(0, idx)
        lead = int(_leading_pad(sub).min())
        self._splice_in([seqs[i] for i in keep], [(k[:, :, lead:], v[:, :, lead:]) for k, v in kv], sub[:, lead:])

    def _kv_shape_like(self, prefixes: list[KVList | None]) -> tuple[int, int, int]:
        """(layers, heads, dim) of the model's KV cache, read from any gathered prefix."""
        sample = next(p for p in prefixes if p is not None)
        return len(sample), sample[0][0].shape[0], sample[0][0].shape[-1]

    def _fit_prefix_cache(self) -> None:
        """Keep cached prefixes within what the token budget leaves after the running sequences' reservations."""
        if self.prefix_cache is not None:
            over = self._reserved + self.prefix_cache.tokens - self.limits.token_budget
            if over > 0:
                self.prefix_cache.evict(over)

    def _splice_in(self, seqs: list[_Seq], kv: KVList, mask: torch.Tensor) -> None:
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
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        mask = self._mask.index_select(0, idx)
        lead = int(_leading_pad(mask).min())
        self._kv = [(k.index_select(0, idx)[:, :, lead:, :], v.index_select(0, idx)[:, :, lead:, :])
                    for k, v in self._kv]
        self._mask = mask[:, lead:]

    def _drafts(self, seq: _Seq) -> list[int]:
        if seq.lookup is None:
            return []
        room = min(self.speculative_tokens, seq.req.sampling.max_tokens - len(seq.generated) - 1,
                   self.loaded.max_context - seq.cache_len - 2)
        return seq.lookup.propose(room) if room > 0 else []

    def _decode(self) -> None:
        """One batched forward over every running row: its pending token plus its drafts (if speculating)."""
        assert self._mask is not None
        rows = self._rows
        drafts = [self._drafts(s) for s in rows] if self.speculative_tokens else [[] for _ in rows]
        width = 1 + max(len(d) for d in drafts)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        step_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (s, d) in enumerate(zip(rows, drafts, strict=True)):
            assert s.pending is not None
            ids[i, :1 + len(d)] = torch.tensor([s.pending, *d], dtype=torch.long)
            step_mask[i, :1 + len(d)] = 1
        ids, step_mask = ids.to(self.device), step_mask.to(self.device)
        base = torch.tensor([[s.cache_len] for s in rows], dtype=torch.long, device=self.device)
        pos = base + torch.arange(width, device=self.device).unsqueeze(0)
        mask = torch.cat([self._mask, step_mask], 1)
        cache = _cache_of(self._kv)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                         use_cache=True, logits_to_keep=width)
        self.forwards += 1
        kv = _kv_of(cache)
        logits = out.logits.float()
        finished: list[int] = []
        kept_per_row: list[int] = []
        for i, (seq, d) in enumerate(zip(rows, drafts, strict=True)):
            kept, token = self._verify(seq, logits[i, :1 + len(d)], d)
            seq.drafted += len(d)
            seq.accepted += kept
            self.drafted += len(d)
            self.accepted += kept
            kept_per_row.append(kept)
            start = seq.cache_len
            for j, tok in enumerate([*d[:kept], token]):
                seq.cache_len = start + 1 + j
                if self._accept_token(seq, tok):
                    finished.append(i)
                    break
        t = self._mask.shape[1]
        keep_width = 1 + max(kept_per_row)
        for i, kept in enumerate(kept_per_row):
            mask[i, t + 1 + kept:] = 0  # rejected drafts (and padding) become masked holes
        self._kv = [(k[:, :, :t + keep_width], v[:, :, :t + keep_width]) for k, v in kv]
        self._mask = mask[:, :t + keep_width]
        if finished:
            self._remove_rows(finished)
        if self._rows and self._mask is not None:
            longest = max(s.cache_len for s in self._rows)
            if self._mask.shape[1] - longest > self.hole_slack:
                self._kv, self._mask = _right_align(self._kv, self._mask)
                self.compactions += 1

    def _verify(self, seq: _Seq, logits: torch.Tensor, drafts: list[int]) -> tuple[int, int]:
        """(drafts kept, the model's next token) for one row; without drafts, just its sampled next token."""
        sp = seq.req.sampling
        if sp.temperature <= 0:
            return verify(logits, drafts, greedy=True)
        return verify(_probs(logits, sp), drafts, greedy=False, generator=seq.generator)

    def _sample(self, logits: torch.Tensor, seqs: list[_Seq]) -> list[int]:
        logits = logits.float()
        greedy = logits.argmax(-1).tolist()
        out: list[int] = []
        for i, seq in enumerate(seqs):
            sp = seq.req.sampling
            if sp.temperature <= 0:
                out.append(int(greedy[i]))
                continue
            out.append(int(torch.multinomial(_probs(logits[i], sp), 1, generator=seq.generator).item()))
        return out

    # ---- per-token bookkeeping, streaming and finishing ------------------------------------------------

    def _accept_token(self, seq: _Seq, token: int) -> bool:
        """Record a sampled token, stream any safe text; True if the sequence finished."""
        seq.generated.append(token)
        if seq.lookup is not None:
            seq.lookup.extend([token])
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
        if text.endswith("\\ufffd"):
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
                call_back(seq.on_delta, seq.req.request_id, seq.chunks, delta)
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
        if seq.finished:
            return
        seq.finished = True
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
            cached_tokens=seq.cached_tokens,
            draft_tokens=seq.drafted,
            accepted_tokens=seq.accepted,
        )
        if seq.on_finish is not None:
            call_back(seq.on_finish, result)

    def _fail(self, seq: _Seq, kind: ErrorKind, message: str, reason: FinishReason = "error") -> None:
        self._finish(seq, reason, text="", error=(kind, message))

    # ---- the engine thread (EngineThread runs the loop) ---------------------------------------------------

    def _progress(self) -> int:
        return self.forwards

    def _fail_held(self, message: str) -> None:
        """Fail every running and being-admitted request (each exactly once) and reset the batch cache."""
        held = self._rows + self._admitting
        self._rows, self._admitting = [], []
        self._kv, self._mask, self._reserved = [], None, 0
        for seq in held:
            self._finish(seq, "error", text=seq.emitted, error=("internal", message))

    def stop(self) -> list[str]:
        """Stop the thread; unfinished requests are abandoned (their ids returned) without callbacks."""
        self.stop_thread()
        with self._lock:
            abandoned = [s.req.request_id for s in self._inbox]
            self._inbox = []
        abandoned += [item[2].req.request_id for item in self._waiting] + [s.req.request_id for s in self._rows]
        abandoned += [s.req.request_id for s in self._admitting if not s.finished]
        self._waiting, self._rows, self._admitting, self._kv, self._mask, self._reserved = [], [], [], [], None, 0
        return abandoned


def _probs(logits: torch.Tensor, sp: SamplingParams) -> torch.Tensor:
    """The sampling distribution of one row: temperature, then top-p (renormalized)."""
    probs = torch.softmax(logits.float() / sp.temperature, dim=-1)
    if sp.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True, dim=-1)
        cut = (sorted_p.cumsum(-1) - sorted_p) >= sp.top_p  # keep the smallest prefix whose mass reaches top_p
        sorted_p = sorted_p.masked_fill(cut, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def _leading_pad(mask: torch.Tensor) -> torch.Tensor:
    """Per row, how many masked positions precede its first real one."""
    return (mask.cumsum(1) == 0).sum(1)


def _right_align(
    kv: KVList, mask: torch.Tensor,
) -> tuple[KVList, torch.Tensor]:
    """Pack each row's real positions (in order) to the right end, dropping holes: width = longest row."""
    counts = mask.sum(1)
    width = int(counts.max())
    order = torch.argsort(mask, dim=1, stable=True)[:, -width:]  # masked positions first, then real ones in order
    new_mask = torch.gather(mask, 1, order)
    real = new_mask.bool()[:, None, :, None]
    out = []
    for k, v in kv:
        idx = order[:, None, :, None].expand(k.shape[0], k.shape[1], width, k.shape[3])
        out.append((torch.where(real, torch.gather(k, 2, idx), 0.0).to(k.dtype),
                    torch.where(real, torch.gather(v, 2, idx), 0.0).to(v.dtype)))
    return out, new_mask


def _stack_prefixes(
    prefixes: list[KVList | None], width: int, shape: tuple[int, int, int],
) -> KVList:
    """Batch per-row cached prefixes (``[heads, t, dim]`` per layer, or None) left-padded to ``width``."""
    layers, heads, dim = shape
    sample = next(p for p in prefixes if p is not None)[0][0]
    out = []
    for layer in range(layers):
        ks = torch.zeros((len(prefixes), heads, width, dim), dtype=sample.dtype, device=sample.device)
        vs = torch.zeros_like(ks)
        for i, p in enumerate(prefixes):
            if p is not None:
                t = p[layer][0].shape[1]
                ks[i, :, width - t:] = p[layer][0]
                vs[i, :, width - t:] = p[layer][1]
        out.append((ks, vs))
    return out


def _cache_of(kv: KVList) -> DynamicCache:
    """A DynamicCache holding these tensors as they are (no copy; the forward appends to each)."""
    cache = DynamicCache(ddp_cache_data=[(None, None)] * len(kv))
    for layer, (k, v) in zip(cache.layers, kv, strict=True):
        layer.lazy_initialization(k, v)
        layer.keys, layer.values = k, v  # type: ignore[union-attr]  # full-attention layers only (Llama-style)
    return cache


def _kv_of(cache: DynamicCache) -> KVList:
    """The per-layer key and value tensors of a cache after a forward."""
    out: KVList = []
    for layer in cache.layers:
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
            raise TypeError(f"the builtin engine needs full-attention KV layers, got {type(layer).__name__}")
        out.append((keys, values))
    return out


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
