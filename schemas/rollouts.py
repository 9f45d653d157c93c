"""Rollout events: the canary judge's decisions and the router's traffic weights."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RolloutAction = Literal["start", "step_up", "hold", "promote", "rollback", "abort"]


class GateResult(BaseModel):
    """One gate's verdict: observed value against its threshold, with the sample sizes."""

    model_config = ConfigDict(extra="forbid")

    gate: str = Field(min_length=1, max_length=100)
    passed: bool
    observed: float | None
    threshold: float
    canary_samples: int = Field(ge=0)
    stable_samples: int = Field(ge=0)
    detail: str = Field(default="", max_length=2_000)


class RolloutEvent(BaseModel):
    """The rollout state of one model alias after a decision. Keyed by alias on a compacted topic."""

    model_config = ConfigDict(extra="forbid")

    alias: str = Field(min_length=1, max_length=200)
    rollout_id: str = Field(min_length=1, max_length=200)
    stable_deployment: str = Field(min_length=1, max_length=200)
    canary_deployment: str | None = Field(default=None, max_length=200)
    action: RolloutAction
    step: int = Field(ge=0, description="Index into the rollout's steps; 0 before the first step.")
    weights: dict[str, float] = Field(description="deployment id -> share of traffic, summing to 1.")
    reason: str = Field(default="", max_length=20_000)
    gates: list[GateResult] = Field(default_factory=list)

    @field_validator("weights")
    @classmethod
    def _weights_sum_to_one(cls, weights: dict[str, float]) -> dict[str, float]:
        if not weights:
            raise ValueError("weights must name at least one deployment")
        if any(w < 0 for w in weights.values()):
            raise ValueError("weights must be non-negative")
        total = sum(weights.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1, got {total}")
        return weights
