"""Prefix caching: a shared system prompt is prefilled once and reused (reported as cached tokens), the output is
unchanged, and cached blocks stay within the KV token budget, least recently used evicted first."""

from __future__ import annotations

from services.inference.engine import Engine, EngineLimits, EngineRequest, SamplingParams
from services.inference.model_loader import LoadedModel
from services.inference.prefix_cache import PrefixCache
from tests.inference.test_engine import _greedy_reference, _run

SYSTEM = ("You are the support assistant of a streaming platform. Answer briefly, cite the documentation, never "
          "reveal internal identifiers, and ask for the tenant name when it is missing. ")


def _chat(loaded: LoadedModel, user: str) -> list[int]:
    text = loaded.tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
        tokenize=False, add_generation_prompt=True)
    return list(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_shared_system_prompt_is_reused_and_output_unchanged(tiny_loaded: LoadedModel) -> None:
    users = ["Where are my logs?", "How do I rotate keys?", "What is a consumer group?", "Hi"]
    prompts = [_chat(tiny_loaded, u) for u in users]
    engine = Engine(tiny_loaded, EngineLimits(max_batch_size=2), prefix_caching=True, prefix_block_tokens=8)
    first, _ = _run(engine, [EngineRequest("warm", prompts[0], SamplingParams(max_tokens=6))])
    assert first["warm"].cached_tokens == 0
    reqs = [EngineRequest(f"u{i}", p, SamplingParams(max_tokens=12)) for i, p in enumerate(prompts)]
    results, streamed = _run(engine, reqs, stagger=1)
    shared = len(_chat(tiny_loaded, "")) - 8  # at least the system prompt's full blocks are common
    for req in reqs:
        res = results[req.request_id]
        assert res.cached_tokens >= shared // 8 * 8 - 8 and res.cached_tokens % 8 == 0, res.cached_tokens
        assert res.cached_tokens < len(req.prompt_ids)
        assert res.token_ids == _greedy_reference(tiny_loaded, req.prompt_ids, 12), req.request_id
        assert streamed.get(req.request_id, "") == res.text
    stats = engine.stats().extra
    assert stats["prefix_hits"] == len(reqs) and stats["prefix_hit_tokens"] > 0
    assert engine.prefix_cache is not None
    assert engine.num_running == 0 and engine.stats().kv_used_tokens == engine.prefix_cache.tokens


def test_cached_blocks_stay_within_the_token_budget(tiny_loaded: LoadedModel) -> None:
    budget = 120
    engine = Engine(tiny_loaded, EngineLimits(max_batch_size=1, token_budget=budget), prefix_caching=True,
                    prefix_block_tokens=8)
    prompts = [list(range(100 + 50 * i, 150 + 50 * i)) for i in range(4)]  # four unrelated 50-token prompts
    for i, p in enumerate(prompts):
        results, _ = _run(engine, [EngineRequest(f"p{i}", p, SamplingParams(max_tokens=4))])
        assert results[f"p{i}"].error_kind is None
        assert engine.stats().kv_used_tokens <= budget
    pc = engine.prefix_cache
    assert pc is not None and pc.evicted_blocks > 0 and 0 < pc.tokens <= budget
    assert pc.match(prompts[-1]).tokens == 48  # the most recent prompt survived, whole blocks minus the last token
    assert pc.match(prompts[0]).tokens == 0  # the oldest was evicted


def test_lru_evicts_extensions_before_their_prefix() -> None:
    import torch

    pc = PrefixCache(block_tokens=2)
    kv = [(torch.zeros(1, 8, 1), torch.zeros(1, 8, 1))]
    pc.insert([1, 2, 3, 4, 5, 6, 7, 8], kv)
    assert pc.match([1, 2, 3, 4, 5, 6, 7, 8, 9]).tokens == 8
    pc.evict(2)
    assert pc.match([1, 2, 3, 4, 5, 6, 7, 8, 9]).tokens == 6  # the last block went first
    pc.evict(4)
    assert pc.match([1, 2, 3]).tokens == 2 and pc.tokens == 2
