"""GPU readiness benchmark (run through ``bench/gpu.sh``): the builtin engine in BF16 and FP16 against Hugging Face
``generate`` on a random-weight Llama-3.2-1B-shaped model, at batch 1, 8 and 32, with tokens/s and, at batch 1,
the share of the HBM-bandwidth bound (every decode step reads all weights once).

Needs only torch and transformers (no tokenizer files, no download, no vLLM, no Ray): the vocabulary is synthetic
and the weights random, so generation never stops early and every request produces ``--max-tokens`` tokens.

    bash bench/gpu.sh                        # on an NVIDIA machine
    bash bench/gpu.sh --device cpu --tiny    # the same code path on CPU with a tiny model (a dry run)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import transformers

from services.inference.engine import Engine, EngineLimits
from services.inference.engine_api import EngineRequest, EngineResult, SamplingParams
from services.inference.model_loader import LoadedModel

NOMINAL_HBM_GBPS = {  # vendor figures, GB/s; matched against torch.cuda.get_device_name()
    "H200": 4800, "H100 SXM": 3350, "H100 80GB HBM3": 3350, "H100 NVL": 3900, "H100 PCIe": 2000, "H100": 3350,
    "A100-SXM4-80GB": 2039, "A100 80GB PCIe": 1935, "A100-SXM4-40GB": 1555, "A100-PCIE-40GB": 1555, "A100": 1555,
    "L40S": 864, "L40": 864, "A10G": 600, "A10": 600, "L4": 300, "T4": 320, "V100": 900, "RTX 4090": 1008,
    "B200": 8000, "GH200": 4000,
}
EOS = 2


def synthetic_tokenizer(vocab: int) -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer over tokens ``t0 .. t{vocab-1}`` (no files needed)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tk = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token=f"t{EOS}", pad_token="t0")


def build(device: str, dtype: torch.dtype, tiny: bool) -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    if tiny:
        config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                             bos_token_id=1, eos_token_id=EOS, tie_word_embeddings=True)
    else:  # the shape of Llama-3.2-1B: 1.24B parameters
        config = LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                             num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096,
                             rope_theta=500000.0, bos_token_id=1, eos_token_id=EOS, tie_word_embeddings=True)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model.to(dtype).eval()
    return LoadedModel(model=model, tokenizer=synthetic_tokenizer(config.vocab_size), device=torch.device(device),
                       eos_token_ids=frozenset({EOS}), max_context=config.max_position_embeddings)


def prompts(loaded: LoadedModel, n: int, length: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(1)
    vocab = loaded.model.config.vocab_size
    return [torch.randint(3, vocab, (length,), generator=gen).tolist() for _ in range(n)]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def hf_generate(loaded: LoadedModel, ps: list[list[int]], batch: int, max_tokens: int) -> tuple[int, float]:
    """Static batches (prompts have equal length: no padding), greedy, every row to max_tokens."""
    sync(loaded.device.type)
    t0 = time.perf_counter()
    tokens = 0
    for i in range(0, len(ps), batch):
        ids = torch.tensor(ps[i:i + batch], device=loaded.device)
        with torch.inference_mode():
            out = loaded.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                        min_new_tokens=max_tokens, do_sample=False, pad_token_id=0)
        tokens += (out.shape[1] - ids.shape[1]) * ids.shape[0]
    sync(loaded.device.type)
    return tokens, time.perf_counter() - t0


def engine_run(loaded: LoadedModel, ps: list[list[int]], batch: int, max_tokens: int) -> tuple[int, float, float]:
    """Closed loop with ``batch`` requests in flight on the engine's thread: (tokens, seconds, TTFT p50 ms)."""
    engine = Engine(loaded, EngineLimits(max_batch_size=batch, token_budget=1 << 20, prefill_tokens_per_step=1 << 20))
    engine.start()
    results: list[EngineResult] = []
    queue = list(enumerate(ps))
    lock = threading.Lock()
    done = threading.Event()

    def submit_next() -> None:
        with lock:
            if not queue:
                return
            i, p = queue.pop(0)
        engine.submit(EngineRequest(str(i), p, SamplingParams(max_tokens=max_tokens)), None, on_finish)

    def on_finish(r: EngineResult) -> None:
        with lock:
            results.append(r)
            if len(results) == len(ps):
                done.set()
                return
        submit_next()

    t0 = time.perf_counter()
    for _ in range(min(batch, len(ps))):
        submit_next()
    if not done.wait(timeout=1800):
        raise TimeoutError("the engine did not finish in 30 minutes")
    sync(loaded.device.type)
    seconds = time.perf_counter() - t0
    engine.stop()
    bad = [r for r in results if r.error_kind is not None]
    if bad:
        raise RuntimeError(f"{len(bad)} engine requests failed: {bad[0].error_message}")
    return sum(r.completion_tokens for r in results), seconds, statistics.median(r.ttft_ms or 0.0 for r in results)


def measured_bandwidth_gbps(device: str) -> float | None:
    """Device-to-device copy of 1 GiB (read + write counted), best of 5."""
    if device != "cuda":
        return None
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        y.copy_(x)
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / 1000.0)
    del x, y
    return 2 * (1 << 30) / best / 1e9


def nominal_bandwidth_gbps(name: str) -> float | None:
    for key in sorted(NOMINAL_HBM_GBPS, key=len, reverse=True):
        if key in name:
            return float(NOMINAL_HBM_GBPS[key])
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model instead of the 1B shape (dry runs)")
    ap.add_argument("--dtypes", default="", help="comma-separated; default bfloat16,float16 on cuda, float32 on cpu")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    args = ap.parse_args()
    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        sys.exit(f"transformers {transformers.__version__}: the builtin engine needs transformers >= 5 "
                 "(its DynamicCache layer API)")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device visible (use --device cpu --tiny for a dry run)")
    dtypes = args.dtypes.split(",") if args.dtypes else (["bfloat16", "float16"] if args.device == "cuda" else ["float32"])
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {name}", flush=True)
    measured = measured_bandwidth_gbps(args.device)
    nominal = nominal_bandwidth_gbps(name) if args.device == "cuda" else None
    if args.device == "cuda":
        print(f"HBM bandwidth: measured copy {measured:.0f} GB/s; nominal {nominal or 'unknown'} GB/s", flush=True)

    rows = []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        t0 = time.perf_counter()
        loaded = build(args.device, dtype, args.tiny)
        params = sum(p.numel() for p in loaded.model.parameters())
        weight_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        print(f"{dtype_name}: {params / 1e9:.3f}B parameters ({weight_bytes / 2**30:.2f} GiB) built in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        engine_run(loaded, prompts(loaded, 2, 16), 2, 4)  # warm-up (kernels, allocator)
        hf_generate(loaded, prompts(loaded, 1, 16), 1, 4)
        for b in (int(x) for x in args.batches.split(",")):
            ps = prompts(loaded, max(b, 4), args.prompt_tokens)
            hf_tok, hf_s = hf_generate(loaded, ps, b, args.max_tokens)
            e_tok, e_s, ttft = engine_run(loaded, ps, b, args.max_tokens)
            cfg = loaded.model.config
            kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads)
            avg_context = args.prompt_tokens + args.max_tokens / 2
            step_bytes = weight_bytes + kv_per_token * avg_context * b * loaded.model.dtype.itemsize
            rows.append((dtype_name, b, len(ps), hf_tok / hf_s, e_tok / e_s, ttft, step_bytes))
            print(f"  batch {b}: done", flush=True)
        del loaded
        if args.device == "cuda":
            torch.cuda.empty_cache()

    print()
    print(f"{'dtype':<9} {'batch':>5} {'reqs':>4} | {'HF generate tok/s':>17} | {'engine tok/s':>12} {'ratio':>6} | "
          f"{'TTFT p50 ms':>11} | {'batch-1 share of HBM bound (measured / nominal BW)':>50}")
    for dtype_name, b, n, hf, eng, ttft, step_bytes in rows:
        share = ""
        if b == 1 and measured:
            bound_measured = measured * 1e9 / step_bytes
            share = f"engine {eng / bound_measured:.0%} / HF {hf / bound_measured:.0%} of {bound_measured:.0f} tok/s"
            if nominal:
                bound_nominal = nominal * 1e9 / step_bytes
                share += f" (nominal: {eng / bound_nominal:.0%} / {hf / bound_nominal:.0%} of {bound_nominal:.0f})"
        print(f"{dtype_name:<9} {b:>5} {n:>4} | {hf:>17.1f} | {eng:>12.1f} {eng / hf:>5.2f}x | {ttft:>11.1f} | {share}")
    print("ratio = engine tokens/s over HF generate static batches of the same size (same prompts, same run). "
          "HBM bound at batch 1 = bandwidth / bytes read per decode step (all weights + the KV cache).")


if __name__ == "__main__":
    main()
