"""The vLLM backend behind the engine interface (``engine: vllm``), for GPU fleets; tested with vLLM's CPU build.

:class:`VllmEngine` owns a ``vllm.LLMEngine`` on one thread of its own, like the builtin engine: requests arrive
through a thread-safe inbox, each step feeds vLLM what arrived, aborts what was cancelled or passed its deadline
(finishing the latter with ``deadline_exceeded``), runs ``LLMEngine.step`` and turns its delta outputs into
``on_delta`` / ``on_finish`` callbacks. Priorities map onto vLLM's priority scheduling (higher runs first), the
prompt is passed as token ids (the replica renders it with :attr:`VllmEngine.tokenizer`), and vLLM's prefix-cache
hits are reported as ``cached_tokens``.

vLLM is imported only here and only when used: it lives in the separate serving environment (``make serve-env``;
README "Two environments"). :func:`check_options` validates a spec's ``vllm`` options against the installed build
when ``llmops serve`` starts; vLLM itself validates the rest (e.g. platform support) when a replica starts.
A GGUF ``model_source`` is exported once to a safetensors directory under the data directory, since vLLM cannot
load GGUF.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.inference.engine_api import (
    DeltaCallback,
    EngineRequest,
    EngineResult,
    EngineStats,
    EngineThread,
    ErrorKind,
    FinishCallback,
    FinishReason,
    call_back,
)
from services.inference.model_loader import export_safetensors
from services.inference.spec import DeploymentSpec

log = logging.getLogger(__name__)

SERVING_ENVIRONMENT_HINT = (
    "engine: vllm needs vLLM, which lives in the separate serving environment: run `make serve-env`, then "
    "`.venv-serve/bin/llmops serve SPEC` (README, 'Two environments')"
)


class VllmUnavailable(RuntimeError):
    """vLLM is not installed in this environment."""


class VllmOptionError(ValueError):
    """A spec's vllm options are not supported by the installed vLLM build."""


def _vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise VllmUnavailable(SERVING_ENVIRONMENT_HINT) from exc
    return vllm


def check_options(spec: DeploymentSpec, device: str) -> None:
    """Raise :class:`VllmOptionError` (or :class:`VllmUnavailable`) if the installed vLLM cannot take the spec's
    options: an option this build's ``EngineArgs`` lacks, a quantization or speculative method it does not know,
    or (for the platform this process runs on, when it is the replicas' ``device``) a quantization it cannot run."""
    vllm = _vllm()
    opts = spec.vllm.engine_args() if spec.vllm is not None else {}
    version = getattr(vllm, "__version__", "?")
    known = {f.name for f in dataclasses.fields(vllm.EngineArgs)}
    missing = sorted(set(opts) - known)
    if missing:
        raise VllmOptionError(f"vLLM {version} has no engine option(s) {', '.join(missing)}")
    quantization = opts.get("quantization")
    if quantization is not None:
        from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

        if quantization not in QUANTIZATION_METHODS:
            raise VllmOptionError(f"vLLM {version} does not know quantization {quantization!r} "
                                  f"(known: {', '.join(sorted(QUANTIZATION_METHODS))})")
        from vllm.platforms import current_platform

        supported = list(getattr(current_platform, "supported_quantization", []) or [])
        on_this_platform = (device == "cuda") == bool(current_platform.is_cuda_alike())
        if on_this_platform and supported and quantization not in supported:
            raise VllmOptionError(f"vLLM {version} on {device} does not support quantization {quantization!r} "
                                  f"(supported here: {', '.join(supported)})")
    speculative = opts.get("speculative_config")
    if speculative is not None:
        from typing import get_args

        from vllm.config.speculative import SpeculativeMethod

        methods = _literal_values(SpeculativeMethod, get_args)
        method = speculative.get("method")
        if method is not None and method not in methods:
            raise VllmOptionError(f"vLLM {version} does not know speculative method {method!r} "
                                  f"(known: {', '.join(sorted(methods))})")
        fields = {f.name for f in dataclasses.fields(vllm.config.SpeculativeConfig)}
        unknown = sorted(set(speculative) - fields)
        if unknown:
            raise VllmOptionError(f"vLLM {version} speculative_config has no field(s) {', '.join(unknown)}")


def _literal_values(tp: Any, get_args: Any) -> set[str]:
    """Every string of a (nested) Literal / Union of Literals."""
    out: set[str] = set()
    for arg in get_args(tp):
        if isinstance(arg, str):
            out.add(arg)
        else:
            out |= _literal_values(arg, get_args)
    return out


def model_directory(spec: DeploymentSpec, data_dir: Path) -> str:
    """What vLLM loads: ``model_source`` itself, or for a GGUF checkpoint its one-time safetensors export under
    ``data_dir/models``."""
    if spec.gguf_file is None:
        from services.inference.model_loader import resolve_source

        return resolve_source(spec.model_source)
    key = hashlib.sha256(f"{spec.model_source}|{spec.gguf_file}".encode()).hexdigest()[:12]
    name = Path(spec.gguf_file).stem
    return str(export_safetensors(spec.model_source, spec.gguf_file, data_dir / "models" / f"{name}-{key}"))


@dataclass
class _Tracked:
    req: EngineRequest
    on_delta: DeltaCallback | None
    on_finish: FinishCallback | None
    arrival: float
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    chunks: int = 0
    first_token_at: float | None = None
    scheduled_at: float | None = None
    cached_tokens: int = 0


class VllmEngine(EngineThread[_Tracked]):
    """A ``vllm.LLMEngine`` behind :class:`services.inference.engine_api.InferenceEngine`."""

    name = "vLLM engine"
    thread_name = "vllm-engine"

    def __init__(self, spec: DeploymentSpec, model_dir: str, device: str) -> None:
        vllm = _vllm()
        opts = spec.vllm.engine_args() if spec.vllm is not None else {}
        if spec.max_context is not None:
            opts.setdefault("max_model_len", spec.max_context)
        if spec.dtype != "auto":
            opts.setdefault("dtype", spec.dtype)
        opts.setdefault("max_num_seqs", spec.max_batch_size)
        args = vllm.EngineArgs(model=model_dir, scheduling_policy="priority", disable_log_stats=False, **opts)
        self.device = device
        self._engine = vllm.LLMEngine.from_engine_args(args)
        self._tokenizer = self._engine.get_tokenizer()
        self._max_context = int(self._engine.model_config.max_model_len)
        self._eos = self._engine.model_config.hf_config.eos_token_id
        super().__init__()
        self._tracked: dict[str, _Tracked] = {}
        self.steps = 0

    @classmethod
    def from_spec(cls, spec: DeploymentSpec, device: str, data_dir: Path) -> VllmEngine:
        return cls(spec, model_directory(spec, data_dir), device)

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def max_context(self) -> int:
        return self._max_context

    # ---- the interface (any thread) ----------------------------------------------------------------------

    def submit(self, req: EngineRequest, on_delta: DeltaCallback | None = None,
               on_finish: FinishCallback | None = None) -> None:
        arrival = req.arrival if req.arrival is not None else time.monotonic()
        self._submit(_Tracked(req=req, on_delta=on_delta, on_finish=on_finish, arrival=arrival))

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._inbox or self._tracked)

    def stats(self) -> EngineStats:
        with self._lock:
            waiting = len(self._inbox)
        running = len(self._tracked)
        usage = self._gauge("vllm:kv_cache_usage_perc")
        capacity = self._engine.vllm_config.cache_config.num_gpu_blocks or 0
        block = self._engine.vllm_config.cache_config.block_size or 0
        total = capacity * block
        return EngineStats(
            running=running, waiting=waiting, kv_used_tokens=round(usage * total) if usage is not None else 0,
            kv_capacity_tokens=total, steps=self.steps,
            extra={"failed_steps": self._failed_steps, "vllm_running": self._gauge("vllm:num_requests_running"),
                   "vllm_waiting": self._gauge("vllm:num_requests_waiting"), "kv_cache_usage": usage},
        )

    def _gauge(self, name: str) -> float | None:
        try:
            for metric in self._engine.get_metrics():
                if metric.name == name:
                    return float(metric.value)
        except Exception:  # noqa: BLE001 - metrics are best effort; the engine keeps serving
            return None
        return None

    def stop(self) -> list[str]:
        self.stop_thread()
        with self._lock:
            abandoned = [t.req.request_id for t in self._inbox] + list(self._tracked)
            self._inbox = []
        if self._tracked:
            self._engine.abort_request(list(self._tracked))
            self._tracked.clear()
        return abandoned

    # ---- the engine thread (EngineThread runs the loop) ---------------------------------------------------

    def _progress(self) -> int:
        return self.steps

    def _fail_held(self, message: str) -> None:
        held = list(self._tracked.values())
        self._tracked.clear()
        try:
            self._engine.abort_request([t.req.request_id for t in held])
        except Exception:  # the engine may be broken beyond aborting; the requests are finished below anyway
            log.exception("aborting after a failed step failed too")
        for t in held:
            self._finish(t, "error", error=("internal", message))

    def step(self) -> bool:
        with self._lock:
            inbox, self._inbox = self._inbox, []
            cancels, self._cancels = self._cancels, []
        for t in inbox:
            self._add(t)
        for ids, done in cancels:
            gone = [rid for rid in ids if rid in self._tracked]
            if gone:
                self._engine.abort_request(gone)
                for rid in gone:
                    del self._tracked[rid]
            done.set()
        self._drop_expired(time.time())
        if not self._tracked:
            return bool(inbox)
        for out in self._engine.step():
            tracked = self._tracked.get(out.request_id)
            if tracked is not None:
                self._on_output(tracked, out)
        self.steps += 1
        return True

    def _add(self, t: _Tracked) -> None:
        req = t.req
        n = len(req.prompt_ids)
        if n == 0:
            self._finish(t, "error", error=("invalid_params", "the prompt is empty"))
            return
        if n >= self._max_context:
            self._finish(t, "error", error=("prompt_too_long", f"the prompt has {n} tokens; this deployment accepts "
                                            f"at most {self._max_context - 1} (max_model_len {self._max_context})"))
            return
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        sp = req.sampling
        params = SamplingParams(
            max_tokens=min(sp.max_tokens, self._max_context - n), temperature=sp.temperature, top_p=sp.top_p,
            seed=sp.seed, stop=list(sp.stop) or None, output_kind=RequestOutputKind.DELTA, skip_special_tokens=True,
        )
        try:
            self._engine.add_request(req.request_id, TokensPrompt(prompt_token_ids=list(req.prompt_ids)), params,
                                     priority=-req.priority)
        except ValueError as exc:  # vLLM's own validation of the request
            self._finish(t, "error", error=("invalid_params", f"vLLM rejected the request: {exc}"))
            return
        self._tracked[req.request_id] = t

    def _drop_expired(self, now_wall: float) -> None:
        expired = [t for t in self._tracked.values() if t.req.deadline is not None and now_wall >= t.req.deadline]
        if not expired:
            return
        self._engine.abort_request([t.req.request_id for t in expired])
        for t in expired:
            del self._tracked[t.req.request_id]
            when = "after" if t.tokens else "before generation started, after"
            self._finish(t, "deadline", error=("deadline_exceeded",
                                               f"the deadline passed {when} {len(t.tokens)} generated tokens"))

    def _on_output(self, t: _Tracked, out: Any) -> None:
        now = time.monotonic()
        completion = out.outputs[0]
        if completion.token_ids:
            t.tokens.extend(completion.token_ids)
            if t.first_token_at is None:
                t.first_token_at = now
        if out.num_cached_tokens:
            t.cached_tokens = int(out.num_cached_tokens)
        metrics = getattr(out, "metrics", None)
        scheduled = getattr(metrics, "scheduled_ts", 0.0) if metrics is not None else 0.0
        if scheduled and t.scheduled_at is None:
            t.scheduled_at = float(scheduled)  # the engine core's time.monotonic(): the same clock, system-wide
        if completion.text:
            t.text += completion.text
            if t.on_delta is not None:
                call_back(t.on_delta, t.req.request_id, t.chunks, completion.text)
            t.chunks += 1
        if not out.finished:
            return
        del self._tracked[t.req.request_id]
        reason = completion.finish_reason
        if reason == "length":
            self._finish(t, "length")
        elif reason == "stop":
            self._finish(t, "eos" if completion.stop_reason is None else "stop")
        else:
            self._finish(t, "error", error=("internal", f"vLLM finished the request with {reason!r}"))

    def _finish(self, t: _Tracked, reason: FinishReason, *, error: tuple[ErrorKind, str] | None = None) -> None:
        now = time.monotonic()
        scheduled = t.scheduled_at if t.scheduled_at is not None else (t.first_token_at or now)
        result = EngineResult(
            request_id=t.req.request_id, text=t.text, finish_reason=reason, prompt_tokens=len(t.req.prompt_ids),
            completion_tokens=len(t.tokens), token_ids=list(t.tokens),
            queue_ms=max(0.0, (scheduled - t.arrival) * 1000.0),
            ttft_ms=None if t.first_token_at is None else (t.first_token_at - t.arrival) * 1000.0,
            total_ms=(now - t.arrival) * 1000.0, error_kind=error[0] if error else None,
            error_message=error[1] if error else None, cached_tokens=t.cached_tokens,
        )
        if t.on_finish is not None:
            call_back(t.on_finish, result)

