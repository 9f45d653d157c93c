"""Engine throughput: generated tokens/s of the continuous-batching engine at concurrency 1, 8, 32 against HF
``generate`` one request at a time (the baseline) and HF ``generate`` on padded static batches, same model, same
prompts, same run.

    python bench/engine.py                       # SmolLM2-135M (GGUF) on CPU
    python bench/engine.py --model DIR           # any HF model directory
    python bench/engine.py --device cuda --random-config 1b   # random-weight 1B Llama in bf16 on a GPU

Greedy decoding everywhere; every request runs to EOS or ``--max-tokens``; tokens are counted up to and including
EOS, padding never counts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.inference.engine import Engine, EngineLimits, EngineRequest, EngineResult, SamplingParams  # noqa: E402
from services.inference.model_loader import SMOLLM2_GGUF, LoadedModel, load_model, smollm2_dir  # noqa: E402

TOPICS = [
    "the water cycle", "how a compiler works", "the history of tea", "why the sky is blue", "binary search",
    "photosynthesis", "the French revolution", "black holes", "how vaccines work", "Kafka consumer groups",
    "the Pythagorean theorem", "volcanoes", "machine learning", "the printing press", "ocean tides", "bees",
]


def prompts(loaded: LoadedModel, n: int) -> list[list[int]]:
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        extra = " Please be detailed and give examples." * (i % 3)
        messages = [{"role": "user", "content": f"Explain {topic} in simple words.{extra}"}]
        tok = loaded.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = messages[0]["content"]
        out.append(tok(text, add_special_tokens=False)["input_ids"])
    return out


def _count(row: list[int], eos: frozenset[int]) -> int:
    for i, t in enumerate(row):
        if t in eos:
            return i + 1
    return len(row)


def hf_generate(loaded: LoadedModel, batch: list[list[int]], max_tokens: int) -> int:
    """One padded (left) static batch through HF generate; real generated tokens."""
    tok_pad = loaded.tokenizer.pad_token_id
    pad = tok_pad if tok_pad is not None else 0
    width = max(len(p) for p in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, p in enumerate(batch):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    with torch.inference_mode():
        out = loaded.model.generate(
            ids.to(loaded.device), attention_mask=mask.to(loaded.device), max_new_tokens=max_tokens,
            do_sample=False, eos_token_id=sorted(loaded.eos_token_ids), pad_token_id=pad,
        )
    return sum(_count(row, loaded.eos_token_ids) for row in out[:, width:].tolist())


def run_hf(loaded: LoadedModel, ps: list[list[int]], batch_size: int, max_tokens: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    tokens = sum(hf_generate(loaded, ps[i:i + batch_size], max_tokens) for i in range(0, len(ps), batch_size))
    _sync(loaded)
    return tokens, time.perf_counter() - t0


def run_engine(loaded: LoadedModel, ps: list[list[int]], concurrency: int, max_tokens: int) -> tuple[int, float, list[EngineResult]]:
    """Closed loop: ``concurrency`` requests in flight; a new one enters as soon as one finishes."""
    engine = Engine(loaded, EngineLimits(max_batch_size=concurrency, token_budget=1 << 20,
                                         prefill_tokens_per_step=1 << 20))
    results: list[EngineResult] = []
    queue = list(enumerate(ps))
    in_flight = 0

    def done(r: EngineResult) -> None:
        nonlocal in_flight
        in_flight -= 1
        results.append(r)

    t0 = time.perf_counter()
    while queue or engine.has_work():
        while queue and in_flight < concurrency:
            i, p = queue.pop(0)
            in_flight += 1
            engine.submit(EngineRequest(str(i), p, SamplingParams(max_tokens=max_tokens)), None, done)
        engine.step()
    _sync(loaded)
    return sum(r.completion_tokens for r in results), time.perf_counter() - t0, results


def _sync(loaded: LoadedModel) -> None:
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()


def random_1b(device: str) -> LoadedModel:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    tmp = Path(tempfile.mkdtemp(prefix="bench-1b-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    del model
    return load_model(str(tmp), dtype="bfloat16", device=device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="HF model directory (default: SmolLM2-135M-Instruct GGUF)")
    ap.add_argument("--gguf-file", default=None)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--random-config", choices=["1b"], help="random-weight model of this size instead of --model")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--requests", type=int, default=0, help="requests per level (default: max(4, concurrency))")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    if args.random_config:
        loaded, name = random_1b(args.device), f"random Llama {args.random_config} bf16"
    elif args.model:
        loaded = load_model(args.model, gguf_file=args.gguf_file, device=args.device)
        name = args.model
    else:
        loaded = load_model(smollm2_dir(), gguf_file=SMOLLM2_GGUF, device=args.device)
        name = "SmolLM2-135M-Instruct Q4_1 (dequantized fp32)"
    print(f"model: {name} on {args.device} ({torch.get_num_threads()} threads), loaded in "
          f"{time.perf_counter() - t0:.1f}s; max_tokens={args.max_tokens}, greedy", flush=True)

    # warm-up (first-call allocations)
    run_engine(loaded, prompts(loaded, 2), 2, 4)
    hf_generate(loaded, prompts(loaded, 1), 4)

    rows = []
    for c in [int(x) for x in args.concurrency.split(",")]:
        n = args.requests or max(4, c)
        ps = prompts(loaded, n)
        base_tok, base_s = run_hf(loaded, ps, 1, args.max_tokens)
        static_tok, static_s = run_hf(loaded, ps, c, args.max_tokens)
        eng_tok, eng_s, results = run_engine(loaded, ps, c, args.max_tokens)
        base = base_tok / base_s
        ttft = statistics.median(r.ttft_ms or 0.0 for r in results)
        rows.append((c, n, base, static_tok / static_s, eng_tok / eng_s, ttft))
        print(f"  concurrency {c}: done ({base_tok}/{static_tok}/{eng_tok} tokens)", flush=True)

    print()
    print(f"{'concurrency':>11} {'requests':>8} | {'HF 1-by-1 tok/s':>15} | {'HF static tok/s':>15} {'ratio':>6} | "
          f"{'engine tok/s':>12} {'ratio':>6} | {'engine p50 TTFT ms':>18}")
    for c, n, base, static, eng, ttft in rows:
        print(f"{c:>11} {n:>8} | {base:>15.1f} | {static:>15.1f} {static / base:>5.2f}x | {eng:>12.1f} "
              f"{eng / base:>5.2f}x | {ttft:>18.0f}")
    print("ratio = tokens/s relative to HF generate one request at a time (same model, prompts and run).")


if __name__ == "__main__":
    main()
