"""The deployment spec: one model version served by N replicas, with its engine, batching limits and generation
defaults.

A spec is a pydantic model loadable from YAML (``DeploymentSpec.from_yaml(path)``); ``llmops serve SPEC`` reads one,
either a file or the name of a spec shipped in ``services/inference/specs/`` (:func:`resolve_spec_path`).
Kafka and other platform settings come from :class:`services.core.settings.Settings`, not from here.

``engine: builtin`` (the default) runs the continuous-batching engine, with its options ``quantization: int8``,
``speculative_tokens`` and ``prefix_caching``. ``engine: vllm`` runs vLLM (in the separate serving environment)
with the options of :class:`VllmOptions`, passed through to ``vllm.EngineArgs``; whether the installed vLLM
supports them is checked when ``llmops serve`` starts (:func:`services.inference.vllm_engine.check_options`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.topics import dispatch_topic
from services.core.resources import package_path

Dtype = Literal["auto", "float32", "float16", "bfloat16"]
Device = Literal["auto", "cpu", "cuda"]
EngineKind = Literal["builtin", "vllm"]


class GenerationDefaults(BaseModel):
    """Values used for the generation parameters a request did not set explicitly."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(default=None, ge=1, le=32_768)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: list[str] | None = None


class VllmOptions(BaseModel):
    """vLLM engine options, passed through to ``vllm.EngineArgs`` under the same names (unset: vLLM's default)."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["auto", "float16", "bfloat16", "float32"] | None = None
    max_num_seqs: int | None = Field(default=None, ge=1, description="Most sequences in one batch.")
    max_model_len: int | None = Field(default=None, ge=16, description="Context length (prompt + output).")
    enable_prefix_caching: bool | None = None
    speculative_config: dict[str, Any] | None = Field(
        default=None, description="e.g. {method: ngram, num_speculative_tokens: 4, prompt_lookup_max: 3} or EAGLE.",
    )
    quantization: str | None = Field(default=None, description="e.g. fp8, awq, gptq; must be known to the build.")
    tensor_parallel_size: int = Field(default=1, ge=1, le=64, description="GPUs per replica (num_gpus follows).")
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0.0, le=1.0, description="Share of GPU memory (on vLLM's CPU build: of node memory).",
    )
    kv_cache_memory_bytes: int | None = Field(default=None, ge=1 << 20, description="KV cache size, overrides the share.")
    enforce_eager: bool | None = Field(default=None, description="Skip graph compilation (faster start, slower steps).")

    def engine_args(self) -> dict[str, Any]:
        """The options that are set, as ``EngineArgs`` keyword arguments."""
        return self.model_dump(exclude_none=True)


class DeploymentSpec(BaseModel):
    """Everything needed to run one deployment (= one model version) on Ray Serve."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    deployment_id: str = Field(min_length=1, max_length=191)
    model_alias: str = Field(min_length=1, max_length=200)
    model_source: str = Field(min_length=1, description="A local HF model directory or a hub id (loaded offline).")
    gguf_file: str | None = Field(default=None, description="File name of a GGUF checkpoint inside model_source.")
    model_name: str = Field(default="", description="Reported in completions; defaults to model_source.")
    model_version: str = Field(default="", max_length=200)
    engine: EngineKind = Field(default="builtin", description="builtin (CPU default) or vllm (serving environment).")
    dtype: Dtype = "auto"
    device: Device = "auto"
    num_replicas: int = Field(default=1, ge=1, le=256)
    max_batch_size: int = Field(default=8, ge=1, le=1024, description="Most sequences decoded together in one step.")
    max_queued_requests: int = Field(
        default=32, ge=1, description="Waiting requests per replica; above it the replica pauses its partitions."
    )
    token_budget: int = Field(
        default=4096, ge=1, description="Most tokens (prompt + generated) held in the KV cache of one replica."
    )
    prefill_tokens_per_step: int = Field(
        default=512, ge=1, description="Most prompt tokens prefilled in one scheduler step (besides one prompt)."
    )
    max_context: int | None = Field(default=None, ge=2, description="Default: the model's max_position_embeddings.")
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    quantization: Literal["int8"] | None = Field(
        default=None, description="builtin: dynamic INT8 quantization of the Linear layers (CPU, float32 only).",
    )
    speculative_tokens: int = Field(
        default=0, ge=0, le=16, description="builtin: prompt-lookup draft tokens verified per step (0 = off).",
    )
    prefix_caching: bool = Field(default=False, description="builtin: reuse the KV cache of shared prompt prefixes.")
    prefix_block_tokens: int = Field(default=16, ge=1, le=1024, description="builtin: tokens per prefix-cache block.")
    vllm: VllmOptions | None = Field(default=None, description="engine: vllm only; passed to vllm.EngineArgs.")
    torch_threads: int | None = Field(default=None, ge=1, description="torch intra-op threads per replica (CPU).")
    ray_actor_options: dict[str, Any] = Field(
        default_factory=dict, description="Passed to Ray Serve; num_gpus=1 is added when device resolves to cuda."
    )
    fetch_max_wait_ms: int = Field(
        default=50, ge=0, le=10_000,
        description="Longest a replica's fetch waits on an empty partition; low keeps the added latency low.",
    )
    shutdown_grace_s: float = Field(default=20.0, ge=0.0, description="How long shutdown waits for in-flight work.")

    @field_validator("deployment_id")
    @classmethod
    def _valid_deployment_id(cls, value: str) -> str:
        dispatch_topic(value)  # raises ValueError with a clear message on a bad id
        return value

    @model_validator(mode="after")
    def _engine_options_match_the_engine(self) -> DeploymentSpec:
        if self.engine == "vllm":
            builtin = {"quantization": self.quantization, "speculative_tokens": self.speculative_tokens or None,
                       "prefix_caching": self.prefix_caching or None}
            used = [name for name, value in builtin.items() if value is not None]
            if used:
                raise ValueError(f"{', '.join(used)}: builtin-engine options; with engine: vllm set vllm.quantization, "
                                 "vllm.speculative_config or vllm.enable_prefix_caching instead")
        elif self.vllm is not None:
            raise ValueError("vllm options need engine: vllm")
        if self.quantization == "int8" and (self.dtype not in ("auto", "float32") or self.device == "cuda"):
            raise ValueError("quantization: int8 runs on cpu with float32 weights (dtype auto or float32, device cpu)")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> DeploymentSpec:
        data = yaml.safe_load(Path(path).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        return cls.model_validate(data)

    @property
    def dispatch_topic(self) -> str:
        return dispatch_topic(self.deployment_id).name

    @property
    def consumer_group(self) -> str:
        return f"inference.{self.deployment_id}"

    @property
    def reported_model_name(self) -> str:
        return self.model_name or (f"{self.model_source}/{self.gguf_file}" if self.gguf_file else self.model_source)

    def resolved_device(self) -> str:
        """'cuda' when asked for or when 'auto' and a GPU is visible, else 'cpu'."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def actor_options(self, device: str) -> dict[str, Any]:
        """Ray actor options for one replica: GPUs requested when the model runs on cuda (vLLM: one per
        tensor-parallel rank)."""
        opts = dict(self.ray_actor_options)
        if device == "cuda":
            opts.setdefault("num_gpus", self.vllm.tensor_parallel_size if self.vllm is not None else 1)
        return opts


def shipped_specs() -> list[str]:
    """Names of the deployment specs shipped with the package (``smollm2-cpu``, ...)."""
    return sorted(p.stem for p in package_path("services.inference", "specs").glob("*.yaml"))


def resolve_spec_path(ref: str | Path) -> Path:
    """A spec file path: ``ref`` itself if it is a file, else the shipped spec of that name."""
    path = Path(ref)
    if path.is_file():
        return path
    name = str(ref).removesuffix(".yaml")
    if "/" not in name and name in shipped_specs():
        return package_path("services.inference", "specs", f"{name}.yaml")
    raise FileNotFoundError(f"no spec file {ref!r} and no shipped spec of that name (shipped: {', '.join(shipped_specs())})")
