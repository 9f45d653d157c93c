"""Prompt-lookup speculative decoding: greedy output identical to plain greedy decoding, drafts really proposed and
accepted on copy-heavy text, exact speculative sampling, and the n-gram index."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import torch

from services.inference.engine import Engine, EngineLimits, EngineRequest, EngineResult, SamplingParams, _Seq
from services.inference.model_loader import LoadedModel, load_model
from services.inference.speculation import PromptLookup, verify
from tests.inference.test_engine import _greedy_reference, _ids, _run

COPY_HEAVY = [
    "Repeat after me: the cat sat on the mat. the cat sat on the mat. the cat sat on the mat.",
    "a b c d e f g a b c d e f g a b c d e f g a b c",
    "Kafka topics, consumer groups, offsets. Kafka topics, consumer groups, offsets. Kafka topics,",
    "Why?",
]


def test_prompt_lookup_proposes_what_followed_the_latest_match() -> None:
    lookup = PromptLookup([1, 2, 3, 4, 9, 1, 2, 3, 5, 6])
    assert lookup.propose(3) == []  # suffix (5, 6) / (3, 5, 6) never occurred before
    lookup.extend([1, 2, 3])
    assert lookup.propose(2) == [5, 6]  # (1, 2, 3) last seen followed by 5, 6
    assert lookup.propose(0) == []
    lookup.extend([4])
    assert lookup.propose(4) == [9, 1, 2, 3]  # (2, 3, 4) occurred once, at the start
    assert PromptLookup([7, 7]).propose(3) == []  # no earlier occurrence of the 2-gram (7, 7)
    assert PromptLookup([7, 7, 7]).propose(3) == [7]  # (7, 7) at 0 was followed by one 7


class OracleDrafts(Engine):
    """The engine with test drafts: each row's true greedy continuation, cut short and corrupted at a seeded
    position, so rows keep 0..k drafts in every mix (the real proposer is tested below). Rows are packed again
    as soon as two holes pile up."""

    hole_slack = 2

    def __init__(self, loaded: LoadedModel, refs: dict[str, list[int]], limits: EngineLimits | None = None, *,
                 speculative_tokens: int = 0) -> None:
        super().__init__(loaded, limits, speculative_tokens=speculative_tokens)
        self.refs = refs
        self.rng = random.Random(5)

    def _drafts(self, seq: _Seq) -> list[int]:
        k = min(self.speculative_tokens, seq.req.sampling.max_tokens - len(seq.generated) - 1)
        truth = self.refs[seq.req.request_id][len(seq.generated):len(seq.generated) + max(k, 0)]
        cut = self.rng.randint(0, len(truth))
        return [*truth[:cut], *(t + 1 for t in truth[cut:cut + 1])]


def test_greedy_speculation_is_token_identical_to_greedy_decoding(tiny_loaded: LoadedModel) -> None:
    """Rows keep different numbers of drafts each step (masked holes, packing), on a model whose output
    changes with any error in the cache; the tokens must be those of plain greedy decoding."""
    max_new = [30, 25, 40, 12, 33]
    prompts = [*COPY_HEAVY, "Explain continuous batching."]
    reqs = [EngineRequest(request_id=f"c{i}", prompt_ids=_ids(tiny_loaded, p), sampling=SamplingParams(max_tokens=n))
            for i, (p, n) in enumerate(zip(prompts, max_new, strict=True))]
    refs = {r.request_id: _greedy_reference(tiny_loaded, r.prompt_ids, r.sampling.max_tokens) for r in reqs}
    for stagger in (0, 2):
        engine = OracleDrafts(tiny_loaded, refs, limits=EngineLimits(max_batch_size=3), speculative_tokens=4)
        results, streamed = _run(engine, [EngineRequest(r.request_id, r.prompt_ids, r.sampling) for r in reqs],
                                 stagger=stagger)
        for req in reqs:
            res = results[req.request_id]
            assert res.token_ids == refs[req.request_id], (stagger, req.request_id)
            assert streamed.get(req.request_id, "") == res.text
            assert 0 < res.accepted_tokens < res.draft_tokens
        assert engine.compactions > 0  # holes piled up and the rows were packed again
        assert engine.steps < sum(r.completion_tokens for r in results.values())  # fewer forwards than tokens
        assert engine.num_running == 0 and not engine._kv


def test_prompt_lookup_drafts_are_accepted_on_copy_heavy_text(tiny_model_dir: Path) -> None:
    """A model whose next token depends on the current one only (attention output zeroed) repeats what followed
    the same token before, so prompt lookup predicts it: most drafts are kept, output unchanged."""
    loaded = load_model(str(tiny_model_dir))
    with torch.no_grad():
        for layer in loaded.model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
    seed = _ids(loaded, "Summarize: the cat sat on the mat.")
    first = _greedy_reference(loaded, seed, 20)
    prompt = [*seed, *first, *seed]  # the answer to the second copy of seed is in the prompt already
    engine = Engine(loaded, speculative_tokens=4)
    results, _ = _run(engine, [EngineRequest("copy", prompt, SamplingParams(max_tokens=20))])
    res = results["copy"]
    assert res.token_ids == _greedy_reference(loaded, prompt, 20)
    assert res.draft_tokens > 0 and res.accepted_tokens / res.draft_tokens > 0.5
    assert engine.steps < res.completion_tokens / 2


def test_seeded_speculative_sampling_is_reproducible(tiny_loaded: LoadedModel) -> None:
    ids = _ids(tiny_loaded, COPY_HEAVY[1])
    sp = SamplingParams(max_tokens=24, temperature=0.8, top_p=0.95, seed=11)
    runs: list[EngineResult] = []
    for _ in range(2):
        results, _ = _run(Engine(tiny_loaded, speculative_tokens=3),
                          [EngineRequest(request_id="s", prompt_ids=ids, sampling=sp)])
        runs.append(results["s"])
    assert runs[0].token_ids == runs[1].token_ids and runs[0].completion_tokens == 24


def test_speculative_sampling_keeps_the_target_distribution() -> None:
    """With a point-mass draft, the first committed token is still distributed as p (chi-square, 3 dof)."""
    p = torch.tensor([[0.5, 0.2, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]])
    gen = torch.Generator().manual_seed(0)
    n = 20_000
    first: Counter[int] = Counter()
    for _ in range(n):
        kept, token = verify(p, [1], greedy=False, generator=gen)
        first[1 if kept == 1 else token] += 1
    chi2 = sum((first[t] - n * float(p[0, t])) ** 2 / (n * float(p[0, t])) for t in range(4))
    assert chi2 < 16.3  # p < 0.001 under the null: fails only if the sampler is biased
    assert verify(torch.tensor([[0.1, 5.0, 0.3], [0.0, 0.0, 9.0]]), [1], greedy=True) == (1, 2)
    assert verify(torch.tensor([[0.1, 5.0, 0.3], [0.0, 0.0, 9.0]]), [0], greedy=True) == (0, 1)
