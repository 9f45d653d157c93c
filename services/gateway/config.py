"""The gateway's configuration: where it listens, the model aliases it serves (with their fallbacks), the cache.

Loadable from YAML (``llmops gateway --config FILE``); command-line options override single fields.

```yaml
port: 8080
instance_id: gw-1            # names this instance's reply topic llm.replies.gw-1 (default: gw-<host>)
models:
  chat: {fallback: chat-v0, description: "general chat"}
cache: {max_entries: 10000, max_bytes: 67108864, ttl_s: 300}
```
"""

from __future__ import annotations

import socket
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.ids import validate_deployment_id
from schemas.topics import COMPLETIONS, PROMPTS, REQUESTS


class ModelEntry(BaseModel):
    """One alias the gateway serves."""

    model_config = ConfigDict(extra="forbid")

    fallback: str | None = Field(
        default=None, description="Deployment that gets one retry when the alias's deployment errors or times out."
    )
    description: str = ""

    @field_validator("fallback")
    @classmethod
    def _deployment(cls, value: str | None) -> str | None:
        return None if value is None else validate_deployment_id(value)


class CacheConfig(BaseModel):
    """The exact-match response cache (bounded by entries and by bytes of cached text)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_entries: int = Field(default=10_000, ge=1)
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="Cached text and prompts, in bytes.")
    ttl_s: float = Field(default=300.0, gt=0)


def _default_instance() -> str:
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname()) or "local"
    return f"gw-{host}"[:150]


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address to bind; 0.0.0.0 to serve other machines.")
    port: int = Field(default=8080, ge=0, le=65535, description="0: any free port (tests).")
    instance_id: str = Field(default_factory=_default_instance, description="Names this instance's reply topic.")
    models: dict[str, ModelEntry] = Field(default_factory=dict, description="alias -> entry: what /v1/models lists.")
    cache: CacheConfig = Field(default_factory=CacheConfig)
    require_auth: bool = Field(default=True, description="False: no API key needed, every request is default_tenant's.")
    default_tenant: str = Field(default="default", description="Tenant of unauthenticated requests (require_auth off).")
    default_deadline_s: float = Field(default=120.0, gt=0, description="Deadline of a request that sets none.")
    max_deadline_s: float = Field(default=600.0, gt=0)
    attempt_timeout_s: float = Field(default=60.0, gt=0, description="Wait for one attempt before a retry/fallback.")
    drain_timeout_s: float = Field(default=30.0, ge=0, description="On SIGTERM, how long in-flight requests may finish.")
    keep_alive_s: int = Field(
        default=75, ge=1, description="How long an idle client connection stays open (longer than a load balancer's idle "
        "timeout, or clients reusing a just-closed connection get resets).",
    )
    keys_reload_s: float = Field(default=2.0, gt=0, description="How often API keys (and revocations) are reloaded.")
    usage_reload_s: float = Field(default=5.0, gt=0, description="How often per-key tokens and cost are read from ClickHouse.")
    mirror_prompts: bool = Field(default=True, description="Mirror the prompt registry into ClickHouse.")
    requests_topic: str = REQUESTS.name
    completions_topic: str = COMPLETIONS.name
    prompts_topic: str = PROMPTS.name

    @field_validator("instance_id")
    @classmethod
    def _instance(cls, value: str) -> str:
        return validate_deployment_id(value)  # it names a topic

    @classmethod
    def load(cls, path: str | Path) -> GatewayConfig:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping")
        return cls.model_validate(data)
