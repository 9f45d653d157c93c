"""Which engine a deployment runs, built from its spec: the builtin engine (with INT8, speculation and prefix
caching as the spec says) or vLLM. The one place that turns a :class:`DeploymentSpec` into an
:class:`~services.inference.engine_api.InferenceEngine`, for Serve replicas, tests and benchmarks alike.
"""

from __future__ import annotations

from pathlib import Path

from services.inference.engine import Engine, EngineLimits
from services.inference.engine_api import InferenceEngine
from services.inference.model_loader import load_model
from services.inference.spec import DeploymentSpec


class EngineConfigError(ValueError):
    """The spec asks for something this engine cannot do on this device or with the installed software."""


def check_engine(spec: DeploymentSpec, device: str) -> None:
    """Fail early (before any replica starts) with a clear message if the spec cannot run on ``device``."""
    if spec.engine == "vllm":
        from services.inference.vllm_engine import VllmOptionError, VllmUnavailable, check_options

        try:
            check_options(spec, device)
        except (VllmOptionError, VllmUnavailable) as exc:
            raise EngineConfigError(f"deployment {spec.deployment_id}: {exc}") from exc
        return
    if spec.quantization == "int8" and device != "cpu":
        raise EngineConfigError(f"deployment {spec.deployment_id}: quantization: int8 runs on cpu, not {device} "
                                "(for GPUs use engine: vllm with vllm.quantization)")


def build_engine(spec: DeploymentSpec, device: str, data_dir: Path) -> InferenceEngine:
    """Load the model and build (not start) the spec's engine on ``device`` ('cpu' or 'cuda')."""
    check_engine(spec, device)
    if spec.engine == "vllm":
        from services.inference.vllm_engine import VllmEngine

        return VllmEngine.from_spec(spec, device, data_dir)
    loaded = load_model(
        spec.model_source, gguf_file=spec.gguf_file, dtype=spec.dtype, device=device, max_context=spec.max_context,
        quantization=spec.quantization,
    )
    return Engine(
        loaded,
        EngineLimits(max_batch_size=spec.max_batch_size, token_budget=spec.token_budget,
                     prefill_tokens_per_step=spec.prefill_tokens_per_step),
        speculative_tokens=spec.speculative_tokens, prefix_caching=spec.prefix_caching,
        prefix_block_tokens=spec.prefix_block_tokens,
    )
