"""Deployment specs: YAML loading, validation, device resolution and the generation defaults they apply."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.requests import GenerationParams
from services.inference.adapter import sampling_for
from services.inference.spec import DeploymentSpec, resolve_spec_path, shipped_specs


@pytest.mark.parametrize("name", ["smollm2-cpu", "llama-1b-gpu", "smollm2-vllm-cpu", "llama-1b-vllm-gpu"])
def test_shipped_specs_load_by_name(name: str) -> None:
    assert name in shipped_specs()
    spec = DeploymentSpec.from_yaml(resolve_spec_path(name))
    assert spec.dispatch_topic == f"llm.dispatch.{spec.deployment_id}"
    assert spec.consumer_group == f"inference.{spec.deployment_id}"
    tp = spec.vllm.tensor_parallel_size if spec.vllm is not None else 1
    assert spec.actor_options("cuda")["num_gpus"] == tp
    assert "num_gpus" not in spec.actor_options("cpu")


def test_bad_specs_are_rejected_with_a_reason() -> None:
    with pytest.raises(ValidationError, match="invalid deployment id"):
        DeploymentSpec(deployment_id="has space", model_alias="a", model_source="x")
    with pytest.raises(ValidationError):
        DeploymentSpec(deployment_id="d", model_alias="a", model_source="x", max_batch_size=0)
    with pytest.raises(ValidationError):
        DeploymentSpec.model_validate({"deployment_id": "d", "model_alias": "a", "model_source": "x", "typo": 1})


def test_generation_defaults_fill_what_the_request_left_at_schema_defaults() -> None:
    spec = DeploymentSpec.model_validate({"deployment_id": "d", "model_alias": "a", "model_source": "x",
                                          "generation": {"max_tokens": 50, "temperature": 0.0, "stop": ["\n\n"]}})
    sp = sampling_for(GenerationParams(), spec)
    assert (sp.max_tokens, sp.temperature, sp.stop) == (50, 0.0, ("\n\n",))
    sp = sampling_for(GenerationParams(max_tokens=7, temperature=1.2, stop=["END"], seed=3), spec)
    assert (sp.max_tokens, sp.temperature, sp.stop, sp.seed) == (7, 1.2, ("END",), 3)
    with pytest.raises(ValueError, match="stop strings must not be empty"):
        sampling_for(GenerationParams(stop=[""]), spec)


def test_unknown_spec_name_says_what_ships(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="shipped: llama-1b-gpu, llama-1b-vllm-gpu, smollm2-cpu, smollm2-vllm-cpu"):
        resolve_spec_path("no-such-spec")
    own = tmp_path / "mine.yaml"
    own.write_text("deployment_id: d\nmodel_alias: a\nmodel_source: x\n")
    assert resolve_spec_path(own) == own


def test_engine_options_are_validated_against_the_engine() -> None:
    base = {"deployment_id": "d", "model_alias": "a", "model_source": "x"}
    spec = DeploymentSpec.model_validate({**base, "quantization": "int8", "speculative_tokens": 4,
                                          "prefix_caching": True})
    assert (spec.engine, spec.quantization, spec.speculative_tokens, spec.prefix_caching) == ("builtin", "int8", 4, True)
    with pytest.raises(ValidationError, match="quantization: int8 runs on cpu with float32"):
        DeploymentSpec.model_validate({**base, "quantization": "int8", "dtype": "bfloat16"})
    with pytest.raises(ValidationError, match="speculative_tokens, prefix_caching: builtin-engine options"):
        DeploymentSpec.model_validate({**base, "engine": "vllm", "speculative_tokens": 2, "prefix_caching": True})
    with pytest.raises(ValidationError, match="vllm options need engine: vllm"):
        DeploymentSpec.model_validate({**base, "vllm": {"max_num_seqs": 8}})
    with pytest.raises(ValidationError, match="max_num_seq"):
        DeploymentSpec.model_validate({**base, "engine": "vllm", "vllm": {"max_num_seq": 8}})  # a typo
    vllm = DeploymentSpec.model_validate({**base, "engine": "vllm", "vllm": {
        "max_num_seqs": 64, "enable_prefix_caching": True, "tensor_parallel_size": 2,
        "speculative_config": {"method": "ngram", "num_speculative_tokens": 4}}})
    assert vllm.vllm is not None and vllm.vllm.engine_args() == {
        "max_num_seqs": 64, "enable_prefix_caching": True, "tensor_parallel_size": 2,
        "speculative_config": {"method": "ngram", "num_speculative_tokens": 4}}
    assert vllm.actor_options("cuda")["num_gpus"] == 2  # one GPU per tensor-parallel rank


def test_serving_checks_say_what_cannot_run_here() -> None:
    from services.inference.backends import EngineConfigError, check_engine

    base = {"deployment_id": "d", "model_alias": "a", "model_source": "x"}
    with pytest.raises(EngineConfigError, match="quantization: int8 runs on cpu, not cuda"):
        check_engine(DeploymentSpec.model_validate({**base, "quantization": "int8"}), "cuda")
    check_engine(DeploymentSpec.model_validate({**base, "quantization": "int8"}), "cpu")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(EngineConfigError, match="make serve-env"):  # the main environment has no vLLM
            check_engine(DeploymentSpec.model_validate({**base, "engine": "vllm"}), "cpu")
