"""INT8 dynamic quantization: every Linear is replaced, the engine computes exactly what HF generate computes with
the same quantized model (one request at a time: dynamic quantization scales activations per tensor, so a row's
result depends on the rows batched with it), and bad combinations are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.inference.engine import Engine, EngineLimits, EngineRequest, SamplingParams
from services.inference.model_loader import load_model
from tests.inference.test_engine import PROMPTS, _greedy_reference, _ids, _run


def test_int8_engine_matches_int8_generate(tiny_model_dir: Path) -> None:
    loaded = load_model(str(tiny_model_dir), device="cpu", quantization="int8")
    linears = [m for m in loaded.model.modules() if type(m) is torch.nn.Linear]
    quantized = [m for m in loaded.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert not linears and len(quantized) == 2 * 7 + 1  # q, k, v, o, gate, up, down per layer + lm_head
    reqs = [EngineRequest(f"q{i}", _ids(loaded, p), SamplingParams(max_tokens=10)) for i, p in enumerate(PROMPTS[:3])]
    results, _ = _run(Engine(loaded, EngineLimits(max_batch_size=1)), reqs)
    for req in reqs:
        assert results[req.request_id].token_ids == _greedy_reference(loaded, req.prompt_ids, 10)


def test_int8_needs_cpu_and_float32(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="int8 quantization runs on cpu with float32"):
        load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16", quantization="int8")
