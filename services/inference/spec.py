"""The deployment spec: one model version served by N replicas, with its batching limits and generation defaults.

A spec is a pydantic model loadable from YAML (``DeploymentSpec.from_yaml(path)``); ``llmops serve SPEC`` reads one.
Kafka and other platform settings come from :class:`services.settings.Settings`, not from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.topics import dispatch_topic

Dtype = Literal["auto", "float32", "float16", "bfloat16"]
Device = Literal["auto", "cpu", "cuda"]


class GenerationDefaults(BaseModel):
    """Values used for the generation parameters a request did not set explicitly."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int | None = Field(default=None, ge=1, le=32_768)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: list[str] | None = None


class DeploymentSpec(BaseModel):
    """Everything needed to run one deployment (= one model version) on Ray Serve."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    deployment_id: str = Field(min_length=1, max_length=191)
    model_alias: str = Field(min_length=1, max_length=200)
    model_source: str = Field(min_length=1, description="A local HF model directory or a hub id (loaded offline).")
    gguf_file: str | None = Field(default=None, description="File name of a GGUF checkpoint inside model_source.")
    model_name: str = Field(default="", description="Reported in completions; defaults to model_source.")
    model_version: str = Field(default="", max_length=200)
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
        """Ray actor options for one replica: GPUs requested when the model runs on cuda."""
        opts = dict(self.ray_actor_options)
        if device == "cuda":
            opts.setdefault("num_gpus", 1)
        return opts
