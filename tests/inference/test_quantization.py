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


def test_a_specs_builtin_options_reach_the_engine(tiny_model_dir: Path, tmp_path: Path) -> None:
    from services.inference.backends import build_engine
    from services.inference.spec import DeploymentSpec

    spec = DeploymentSpec(deployment_id="tiny-v1", model_alias="tiny", model_source=str(tiny_model_dir),
                          model_name="tiny", model_version="1", quantization="int8", speculative_tokens=3,
                          prefix_caching=True, prefix_block_tokens=8)
    engine = build_engine(spec, "cpu", tmp_path)
    assert isinstance(engine, Engine)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in engine.loaded.model.modules())
    assert engine.speculative_tokens == 3
    assert engine.prefix_cache is not None and engine.prefix_cache.block_tokens == 8
    plain = build_engine(spec.model_copy(update={"quantization": None, "speculative_tokens": 0, "prefix_caching": False}),
                         "cpu", tmp_path)
    assert isinstance(plain, Engine) and plain.speculative_tokens == 0 and plain.prefix_cache is None
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in plain.loaded.model.modules())
