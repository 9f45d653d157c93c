"""Deployment specs: YAML loading, validation, device resolution and the generation defaults they apply."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.requests import GenerationParams
from services.inference.adapter import sampling_for
from services.inference.spec import DeploymentSpec

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "inference"


@pytest.mark.parametrize("name", ["smollm2-cpu.yaml", "llama-1b-gpu.yaml"])
def test_example_specs_load(name: str) -> None:
    spec = DeploymentSpec.from_yaml(DEPLOY / name)
    assert spec.dispatch_topic == f"llm.dispatch.{spec.deployment_id}"
    assert spec.consumer_group == f"inference.{spec.deployment_id}"
    assert spec.actor_options("cuda")["num_gpus"] == 1
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
