"""The continuous-batching engine against HF generate, plus its error paths, sampling and scheduling."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import GenerationMixin

from services.inference.engine import Engine, EngineLimits, EngineRequest, EngineResult, SamplingParams
from services.inference.model_loader import LoadedModel

PROMPTS = [
    "Hello there, how are you?",
    "Write a haiku about Kafka topics and consumer groups.",
    "1 2 3",
    "The quick brown fox jumps over the lazy dog, again and again and again.",
    "Why?",
    "Explain continuous batching.",
]


def _ids(loaded: LoadedModel, text: str) -> list[int]:
    return list(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])


def _run(engine: Engine, reqs: list[EngineRequest], stagger: int = 0) -> tuple[dict[str, EngineResult], dict[str, str]]:
    results: dict[str, EngineResult] = {}
    streamed: dict[str, str] = {}

    def on_delta(rid: str, index: int, text: str) -> None:
        streamed[rid] = streamed.get(rid, "") + text

    pending = list(reqs)
    while pending or engine.has_work():
        # submit some requests while others are mid-generation: admission at every step
        for _ in range(1 if stagger else len(pending)):
            if pending:
                engine.submit(pending.pop(0), on_delta, lambda r: results.__setitem__(r.request_id, r))
        for _ in range(max(stagger, 1)):
            engine.step()
    return results, streamed


def _greedy_reference(loaded: LoadedModel, prompt_ids: list[int], max_new: int) -> list[int]:
    ids = torch.tensor([prompt_ids])
    model = loaded.model
    assert isinstance(model, GenerationMixin)  # a causal LM: PreTrainedModel alone does not declare generate()
    with torch.inference_mode():
        out = model.generate(  # type: ignore[misc]  # mypy finds transformers' own self-type protocol unmet
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new, do_sample=False,
            eos_token_id=sorted(loaded.eos_token_ids), pad_token_id=0,
        )
    new_ids: list[int] = out[0, len(prompt_ids):].tolist()
    return new_ids


@pytest.mark.parametrize("stagger", [0, 3], ids=["all-at-once", "staggered"])
def test_continuous_batcher_matches_greedy_generate(tiny_loaded: LoadedModel, stagger: int) -> None:
    """Same tokens as HF greedy generate run on each prompt alone, whether newcomers are prefilled together
    (left-padded, different lengths) or join a running batch one by one."""
    engine = Engine(tiny_loaded, EngineLimits(max_batch_size=4, token_budget=4096))
    max_new = [24, 17, 30, 9, 40, 21]
    reqs = [
        EngineRequest(request_id=f"r{i}", prompt_ids=_ids(tiny_loaded, p), sampling=SamplingParams(max_tokens=n))
        for i, (p, n) in enumerate(zip(PROMPTS, max_new, strict=True))
    ]
    results, streamed = _run(engine, reqs, stagger=stagger)
    assert set(results) == {r.request_id for r in reqs}
    for req, n in zip(reqs, max_new, strict=True):
        res = results[req.request_id]
        ref = _greedy_reference(tiny_loaded, req.prompt_ids, n)
        assert res.token_ids == ref, req.request_id
        assert res.completion_tokens == len(ref)
        assert res.finish_reason == ("eos" if ref[-1] in tiny_loaded.eos_token_ids else "length")
        assert streamed.get(req.request_id, "") == res.text
        assert res.prompt_tokens == len(req.prompt_ids)
        assert res.ttft_ms is not None and 0 <= res.queue_ms <= res.ttft_ms <= res.total_ms
    assert engine.num_running == 0 and not engine._kv  # every sequence's cache was freed


def test_batch_size_and_priority_order(tiny_loaded: LoadedModel) -> None:
    engine = Engine(tiny_loaded, EngineLimits(max_batch_size=2))
    order: list[str] = []
    reqs = [
        EngineRequest(request_id=f"p{prio}-{i}", prompt_ids=_ids(tiny_loaded, "hi"), priority=prio,
                      sampling=SamplingParams(max_tokens=5))
        for i, prio in enumerate([0, 0, 9, 5, 9])
    ]
    for r in reqs:
        engine.submit(r, None, lambda res: order.append(res.request_id))
    max_running = 0
    while engine.has_work():
        engine.step()
        max_running = max(max_running, engine.num_running)
    assert max_running == 2
    assert order == ["p9-2", "p9-4", "p5-3", "p0-0", "p0-1"]


def test_token_budget_limits_admission(tiny_loaded: LoadedModel) -> None:
    ids = _ids(tiny_loaded, "a b c d")  # 4 tokens + 10 reserved = 14 per request
    engine = Engine(tiny_loaded, EngineLimits(max_batch_size=8, token_budget=30))
    for i in range(4):
        engine.submit(EngineRequest(request_id=str(i), prompt_ids=ids, sampling=SamplingParams(max_tokens=10)))
    engine.step()
    assert engine.num_running == 2


def test_prompt_too_long_is_an_error_and_engine_keeps_serving(tiny_loaded: LoadedModel) -> None:
    engine = Engine(tiny_loaded, EngineLimits(token_budget=100))
    results, _ = _run(engine, [
        EngineRequest(request_id="long", prompt_ids=[5] * 150),
        EngineRequest(request_id="ok", prompt_ids=_ids(tiny_loaded, "hello"), sampling=SamplingParams(max_tokens=3)),
    ])
    assert results["long"].finish_reason == "error"
    assert results["long"].error_kind == "prompt_too_long"
    assert "150 tokens" in (results["long"].error_message or "")
    assert results["ok"].error_kind is None and results["ok"].completion_tokens == 3


def test_deadline_drops_waiting_and_running_requests(tiny_loaded: LoadedModel) -> None:
    engine = Engine(tiny_loaded, EngineLimits(max_batch_size=1))
    ids = _ids(tiny_loaded, "hello")
    got: dict[str, EngineResult] = {}
    engine.submit(EngineRequest(request_id="past", prompt_ids=ids, deadline=time.time() - 1), None,
                  lambda r: got.__setitem__(r.request_id, r))
    running = EngineRequest(request_id="running", prompt_ids=ids, deadline=time.time() + 3600,
                            sampling=SamplingParams(max_tokens=400))
    engine.submit(running, None, lambda r: got.__setitem__(r.request_id, r))
    for _ in range(3):
        engine.step()
    assert got["past"].finish_reason == "deadline" and got["past"].error_kind == "deadline_exceeded"
    assert got["past"].completion_tokens == 0 and got["past"].ttft_ms is None
    assert engine.num_running == 1 and "running" not in got  # mid-generation, far from its 400 tokens
    running.deadline = time.time() - 0.001  # its deadline passes while it runs
    engine.step()
    res = got["running"]
    assert res.finish_reason == "deadline" and res.error_kind == "deadline_exceeded"
    assert 0 < res.completion_tokens < 400 and "generated tokens" in (res.error_message or "")
    assert engine.num_running == 0 and not engine.has_work() and engine.stats().kv_used_tokens == 0


def test_seeded_sampling_is_reproducible_and_stop_strings_cut(tiny_loaded: LoadedModel) -> None:
    ids = _ids(tiny_loaded, "Tell me a story")
    sp = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=42)
    engine = Engine(tiny_loaded)
    results, _ = _run(engine, [EngineRequest(request_id=f"s{i}", prompt_ids=ids, sampling=sp) for i in range(3)]
                      + [EngineRequest(request_id="other", prompt_ids=ids, sampling=SamplingParams(
                          max_tokens=20, temperature=1.0, seed=7))])
    assert results["s0"].token_ids == results["s1"].token_ids == results["s2"].token_ids
    assert results["other"].token_ids != results["s0"].token_ids
    full = results["s0"].text
    assert len(full) > 4
    stop = full[len(full) // 2: len(full) // 2 + 2]
    cut, streamed = _run(Engine(tiny_loaded), [EngineRequest(
        request_id="cut", prompt_ids=ids, sampling=SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9,
                                                                   seed=42, stop=(stop,)))])
    assert cut["cut"].finish_reason == "stop"
    assert cut["cut"].text == full[: full.find(stop)]
    assert streamed.get("cut", "") == cut["cut"].text
